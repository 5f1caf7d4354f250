/*  bench_scan — parley-bench's frame scanner (tools/bench/scan.c), which
    reads every frame a server sends the bench, from any server.

    Input: one server text frame. The scanner must never read past `len`
    (the input is copied to a buffer of exactly its size, so ASan sees any
    overread), never crash on nesting or cut-off strings, return string
    fields that lie inside the frame, and say the same twice. */
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "fuzz.h"

static bool
s_inside(const char *buf, size_t len, const char *p, size_t n)
{
    return (!p && n == 0) || (p && p >= buf && n <= len && p + n <= buf + len);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    if (size)
        memcpy(buf, data, size);
    pb_frame_t a, b;
    pb_scan(buf, size, &a);
    pb_scan(buf, size, &b);
    FUZZ_CHECK(a.type == b.type && a.ok == b.ok && a.seq == b.seq && a.chunk_number == b.chunk_number &&
               a.total_chunks == b.total_chunks && a.id == b.id && a.is_final == b.is_final);
    FUZZ_CHECK(s_inside(buf, size, a.sid, a.sid_len) && s_inside(buf, size, a.code, a.code_len));
    FUZZ_CHECK(a.sid == b.sid && a.sid_len == b.sid_len && a.code == b.code && a.code_len == b.code_len);
    FUZZ_CHECK(a.type >= PB_F_OTHER && a.type <= PB_F_ERROR);
    FUZZ_CHECK(pb_scan_turn_tag(buf, size) == pb_scan_turn_tag(buf, size));
    free(buf);
    return 0;
}
