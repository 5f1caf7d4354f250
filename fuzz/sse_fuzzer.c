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

/* Streams up to this long are also fed one byte at a time. */
#define S_BYTEWISE_MAX 1024

typedef struct {
    fuzz_log_t log;
    size_t max;
} s_run_t;

static int
s_on_event(void *arg, const pl_sse_event_t *ev)
{
    s_run_t *run = arg;
    FUZZ_CHECK(ev->event && ev->data && ev->id);
    FUZZ_CHECK(ev->data[ev->data_len] == '\0');
    FUZZ_CHECK(ev->data_len <= run->max);
    FUZZ_CHECK(strlen(ev->event) <= run->max && strlen(ev->id) <= run->max);
    fuzz_log_rec(&run->log, ev->event, strlen(ev->event));
    fuzz_log_rec(&run->log, ev->data, ev->data_len);
    fuzz_log_rec(&run->log, ev->id, strlen(ev->id));
    return 0;
}

/* Parses the stream twice on one parser, cut at cuts[0..k) each time
   (NULL: every byte). */
static void
s_run(s_run_t *run, const uint8_t *p, size_t len, const fuzz_cuts_t *cuts)
{
    pl_sse_t *sse = pl_sse_new(run->max);
    FUZZ_CHECK(sse);
    for (int pass = 0; pass < 2; pass++) {
        size_t at = 0, k = cuts ? cuts->k : len;
        for (size_t i = 0; i <= k; i++) {
            size_t end = i == k ? len : cuts ? cuts->at[i] : i;
            FUZZ_CHECK(pl_sse_feed(sse, (const char *) p + at, end - at, s_on_event, run) == 0);
            at = end;
        }
        FUZZ_CHECK(pl_sse_finish(sse, s_on_event, run) == 0);
        size_t dropped = pl_sse_dropped(sse);
        fuzz_log(&run->log, &dropped, sizeof dropped);
    }
    pl_sse_destroy(&sse);
    FUZZ_CHECK(sse == NULL);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_in_t in = {data, size};
    size_t max = 1 + fuzz_u16(&in) % 4096;
    fuzz_cuts_t cuts;
    fuzz_cuts_read(&in, &cuts);
    fuzz_cuts_fit(&cuts, in.n);

    s_run_t whole = {.max = max}, cut = {.max = max}, bytes = {.max = max};
    fuzz_cuts_t none = {0};
    s_run(&whole, in.p, in.n, &none);
    s_run(&cut, in.p, in.n, &cuts);
    FUZZ_CHECK(fuzz_log_equal(&whole.log, &cut.log));
    if (in.n <= S_BYTEWISE_MAX) {
        s_run(&bytes, in.p, in.n, NULL);
        FUZZ_CHECK(fuzz_log_equal(&whole.log, &bytes.log));
    }
    free(whole.log.p);
    free(cut.log.p);
    free(bytes.log.p);
    return 0;
}
