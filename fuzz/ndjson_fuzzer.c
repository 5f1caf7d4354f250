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

/* Streams up to this long are also fed one byte at a time. */
#define S_BYTEWISE_MAX 1024

typedef struct {
    fuzz_log_t log;
    size_t max;
} s_run_t;

static int
s_on_line(void *arg, const char *line, size_t len)
{
    s_run_t *run = arg;
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

/* Frames the stream twice on one parser, cut at cuts (NULL: every byte). */
static void
s_run(s_run_t *run, const uint8_t *p, size_t len, const fuzz_cuts_t *cuts)
{
    pl_ndjson_t *nd = pl_ndjson_new(run->max);
    FUZZ_CHECK(nd);
    for (int pass = 0; pass < 2; pass++) {
        size_t at = 0, k = cuts ? cuts->k : len;
        for (size_t i = 0; i <= k; i++) {
            size_t end = i == k ? len : cuts ? cuts->at[i] : i;
            FUZZ_CHECK(pl_ndjson_feed(nd, (const char *) p + at, end - at, s_on_line, run) == 0);
            at = end;
        }
        FUZZ_CHECK(pl_ndjson_finish(nd, s_on_line, run) == 0);
        size_t dropped = pl_ndjson_dropped(nd);
        fuzz_log(&run->log, &dropped, sizeof dropped);
    }
    pl_ndjson_destroy(&nd);
    FUZZ_CHECK(nd == NULL);
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
