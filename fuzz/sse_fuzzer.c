/*  sse — the Server-Sent Events parser (protocol/pl_sse.h), differential.

    Input: 2 bytes of max_event (1..4096), 1 byte of cut count k (0..7) and
    2 bytes per cut, then the stream. The stream is parsed three ways:
    whole; cut at the k points; and, when short, one byte at a time. Each
    run ends with pl_sse_finish, then parses the stream again (a new
    stream on the same parser: BOM skipped again, last id kept). The events
    (event, data with its NULs, id) and the dropped count must be the same
    in every run, and each event within the parser's promises. */
#include <string.h>

#include "fuzz.h"
#include "pl_err.h"
#include "pl_sse.h"

static int
s_on_event(void *arg, const pl_sse_event_t *ev)
{
    fuzz_run_t *run = arg;
    FUZZ_CHECK(ev->event && ev->data && ev->id);
    FUZZ_CHECK(ev->data[ev->data_len] == '\0');
    FUZZ_CHECK(ev->data_len <= run->max);
    FUZZ_CHECK(strlen(ev->event) <= run->max && strlen(ev->id) <= run->max);
    fuzz_log_rec(&run->log, ev->event, strlen(ev->event));
    fuzz_log_rec(&run->log, ev->data, ev->data_len);
    fuzz_log_rec(&run->log, ev->id, strlen(ev->id));
    return 0;
}

static void *
s_make(size_t max)
{
    return pl_sse_new(max);
}

static int
s_feed(void *parser, const char *buf, size_t len, fuzz_run_t *run)
{
    return pl_sse_feed(parser, buf, len, s_on_event, run);
}

static int
s_finish(void *parser, fuzz_run_t *run)
{
    return pl_sse_finish(parser, s_on_event, run);
}

static size_t
s_dropped(const void *parser)
{
    return pl_sse_dropped(parser);
}

static void
s_destroy(void *parser)
{
    pl_sse_t *p = parser;
    pl_sse_destroy(&p);
    FUZZ_CHECK(p == NULL);
}

static const fuzz_stream_t s_ops = {s_make, s_feed, s_finish, s_dropped, s_destroy};

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_stream_differential(&s_ops, data, size);
}
