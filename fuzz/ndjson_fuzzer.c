/*  ndjson — the NDJSON framer (protocol/pl_ndjson.h), differential.

    Input: 2 bytes of max_line (1..4096), 1 byte of cut count k (0..7) and
    2 bytes per cut, then the stream. The stream is framed three ways:
    whole; cut at the k points; and, when short, one byte at a time. Each
    run ends with pl_ndjson_finish, then frames the stream again on the same
    parser. The lines delivered (NULs included) and the dropped count must
    be the same in every run, and each line within the framer's promises:
    1..max_line bytes, NUL-terminated, no LF, not only JSON whitespace. */
#include <string.h>

#include "fuzz.h"
#include "pl_err.h"
#include "pl_ndjson.h"

static int
s_on_line(void *arg, const char *line, size_t len)
{
    fuzz_run_t *run = arg;
    FUZZ_CHECK(line && line[len] == '\0');
    FUZZ_CHECK(len > 0 && len <= run->max);
    FUZZ_CHECK(memchr(line, '\n', len) == NULL);
    bool blank = true;
    for (size_t i = 0; i < len && blank; i++)
        blank = line[i] == ' ' || line[i] == '\t' || line[i] == '\r';
    FUZZ_CHECK(!blank);
    fuzz_log_rec(&run->log, line, len);
    return 0;
}

static void *
s_make(size_t max)
{
    return pl_ndjson_new(max);
}

static int
s_feed(void *parser, const char *buf, size_t len, fuzz_run_t *run)
{
    return pl_ndjson_feed(parser, buf, len, s_on_line, run);
}

static int
s_finish(void *parser, fuzz_run_t *run)
{
    return pl_ndjson_finish(parser, s_on_line, run);
}

static size_t
s_dropped(const void *parser)
{
    return pl_ndjson_dropped(parser);
}

static void
s_destroy(void *parser)
{
    pl_ndjson_t *p = parser;
    pl_ndjson_destroy(&p);
    FUZZ_CHECK(p == NULL);
}

static const fuzz_stream_t s_ops = {s_make, s_feed, s_finish, s_dropped, s_destroy};

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_stream_differential(&s_ops, data, size);
}
