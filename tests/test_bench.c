/*  test_bench — parley-bench's frame scanner and latency histogram
    (tools/bench/scan.c, hist.c): the two pieces of the bench whose
    mistakes would not show as a failed run, only as wrong numbers. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bench.h"

static const struct {
    const char *in;
    bool ok;
    pb_ftype_t type;
    int64_t seq, chunk_number, total_chunks, id;
    bool is_final;
    const char *sid, *code;
} s_frames[] = {
    {"{\"type\":\"chunk\",\"text\":\"Echo \",\"chunk_number\":3,\"is_final\":false,\"response_id\":\"r1\","
     "\"session_id\":\"s4b\",\"seq\":7}",
     true, PB_F_CHUNK, 7, 3, -1, -1, false, "s4b", NULL},
    /* quotes, braces, backslashes and key-like text inside the chunk's text */
    {"{\"type\":\"chunk\",\"text\":\"a \\\"seq\\\":99, {\\\"x\\\"} \\\\\",\"chunk_number\":1,\"is_final\":true,"
     "\"session_id\":\"s1\",\"seq\":4}",
     true, PB_F_CHUNK, 4, 1, -1, -1, true, "s1", NULL},
    /* nested objects' keys (message.id, usage.*) are not the frame's */
    {"{\"type\":\"session_update\",\"update_type\":\"message_added\",\"message_count\":1,\"message\":{\"id\":\"m8\","
     "\"role\":\"user\",\"content\":\"t12 w2\",\"seq\":5,\"timestamp\":1.5},\"session_id\":\"s2\",\"seq\":1}",
     true, PB_F_MESSAGE_ADDED, 1, -1, -1, -1, false, "s2", NULL},
    {"{\"type\":\"session_update\",\"update_type\":\"member_joined\",\"connection_id\":\"c1\",\"members\":2,"
     "\"session_id\":\"s2\",\"seq\":0}",
     true, PB_F_UPDATE, 0, -1, -1, -1, false, "s2", NULL},
    {"{\"type\":\"response_complete\",\"total_chunks\":26,\"processing_time\":0.0186,\"usage\":{\"prompt_tokens\":9,"
     "\"completion_tokens\":26},\"seq\":20,\"session_id\":\"s3\"}",
     true, PB_F_RESPONSE_COMPLETE, 20, -1, 26, -1, false, "s3", NULL},
    {"{\"type\":\"delivery_confirmation\",\"message_id\":\"m1\",\"id\":17,\"status\":\"stored\",\"session_id\":\"s3\"}",
     true, PB_F_DELIVERY, -1, -1, -1, 17, false, "s3", NULL},
    {"{\"type\":\"error\",\"code\":\"BUSY\",\"message\":\"queue full\",\"id\":3}", true, PB_F_ERROR, -1, -1, -1, 3,
     false, NULL, "BUSY"},
    /* an id that is a string is not a turn number */
    {"{\"type\":\"error\",\"code\":\"BAD_FRAME\",\"message\":\"x\",\"id\":\"abc\"}", true, PB_F_ERROR, -1, -1, -1, -1,
     false, NULL, "BAD_FRAME"},
    {" { \"type\" : \"pong\" } ", true, PB_F_PONG, -1, -1, -1, -1, false, NULL, NULL},
    {"{\"type\":\"connected\",\"server_info\":{\"name\":\"parley\",\"type\":\"x\"}}", true, PB_F_CONNECTED, -1, -1, -1,
     -1, false, NULL, NULL},
    {"{\"type\":\"something_new\",\"seq\":1.5}", true, PB_F_OTHER, -1, -1, -1, -1, false, NULL, NULL},
    /* not frames */
    {"", false, PB_F_OTHER, -1, -1, -1, -1, false, NULL, NULL},
    {"[1,2]", false, PB_F_OTHER, -1, -1, -1, -1, false, NULL, NULL},
    {"{\"seq\":3}", false, PB_F_OTHER, 3, -1, -1, -1, false, NULL, NULL},
    {"{\"type\":\"chunk\",\"text\":\"cut", false, PB_F_OTHER, -1, -1, -1, -1, false, NULL, NULL},
    {"{\"type\":\"chunk\",\"x\":[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]}", false, PB_F_OTHER, -1, -1, -1, -1, false,
     NULL, NULL},
    {"{\"type\":\"chunk\" \"seq\":1}", false, PB_F_OTHER, -1, -1, -1, -1, false, NULL, NULL},
};

static bool
s_same(const char *p, size_t n, const char *want)
{
    if (!want)
        return p == NULL;
    return p && n == strlen(want) && memcmp(p, want, n) == 0;
}

static void
test_scan(void **state)
{
    (void) state;
    for (size_t i = 0; i < sizeof s_frames / sizeof *s_frames; i++) {
        const char *in = s_frames[i].in;
        /* a copy exactly as long as the frame: nothing past it may be read (ASan) */
        size_t len = strlen(in);
        char *buf = malloc(len ? len : 1);
        memcpy(buf, in, len);
        pb_frame_t f;
        pb_scan(buf, len, &f);
        if (f.ok != s_frames[i].ok || (f.ok && f.type != s_frames[i].type))
            fail_msg("row %zu: ok %d type %d", i, f.ok, f.type);
        if (f.ok && (f.seq != s_frames[i].seq || f.chunk_number != s_frames[i].chunk_number ||
                     f.total_chunks != s_frames[i].total_chunks || f.id != s_frames[i].id ||
                     f.is_final != s_frames[i].is_final || !s_same(f.sid, f.sid_len, s_frames[i].sid) ||
                     !s_same(f.code, f.code_len, s_frames[i].code)))
            fail_msg("row %zu: seq %lld chunk %lld total %lld id %lld final %d", i, (long long) f.seq,
                     (long long) f.chunk_number, (long long) f.total_chunks, (long long) f.id, f.is_final);
        free(buf);
    }
}

static void
test_turn_tag(void **state)
{
    (void) state;
    const char *a = "{\"type\":\"session_update\",\"message\":{\"content\":\"t4711 w2 w3\"},\"seq\":3}";
    assert_int_equal(pb_scan_turn_tag(a, strlen(a)), 4711);
    const char *b = "{\"type\":\"session_update\",\"message\":{\"content\":\"hello\"}}";
    assert_int_equal(pb_scan_turn_tag(b, strlen(b)), 0);
    /* cut in the digits: only what is there */
    assert_int_equal(pb_scan_turn_tag(a, strstr(a, "711") - a + 1), 47);
}

static void
test_hist_exact_then_within_one_percent(void **state)
{
    (void) state;
    static pb_hist_t h;
    for (int64_t v = 0; v < PB_HIST_LINEAR; v++) {
        memset(&h, 0, sizeof h);
        pb_hist_add(&h, v);
        assert_int_equal(pb_hist_quantile(&h, 0.5), v);
    }
    /* above: the value reported for a single sample is within 1 % of it
       (and never above the max, which is exact) */
    for (int64_t v = PB_HIST_LINEAR; v < 60000000; v = v * 21 / 20 + 7) {
        memset(&h, 0, sizeof h);
        pb_hist_add(&h, v);
        pb_hist_add(&h, v + 1000000000); /* keeps the max from clamping the answer */
        int64_t got = pb_hist_quantile(&h, 0.5);
        if (fabs((double) (got - v)) > 0.01 * (double) v)
            fail_msg("%lld reported as %lld", (long long) v, (long long) got);
    }
    memset(&h, 0, sizeof h);
    pb_hist_add(&h, -5); /* a stream chunk slightly early counts as 0 */
    assert_int_equal(pb_hist_quantile(&h, 1.0), 0);
    memset(&h, 0, sizeof h);
    assert_int_equal(pb_hist_quantile(&h, 0.99), 0);
    pb_hist_add(&h, 120000000); /* past the top: the last bucket, max exact */
    assert_int_equal(h.max, 120000000);
    assert_int_equal(pb_hist_quantile(&h, 0.5), 120000000);
}

static void
test_hist_quantiles_and_merge(void **state)
{
    (void) state;
    static pb_hist_t a, b, all;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    memset(&all, 0, sizeof all);
    /* 1..1000 µs in a, 1001..2000 µs in b */
    for (int64_t v = 1; v <= 1000; v++) {
        pb_hist_add(&a, v);
        pb_hist_add(&all, v);
        pb_hist_add(&b, v + 1000);
        pb_hist_add(&all, v + 1000);
    }
    assert_int_equal(pb_hist_quantile(&a, 0.5), 500);
    assert_int_equal(pb_hist_quantile(&a, 0.99), 990);
    assert_int_equal(pb_hist_quantile(&a, 0.999), 999);
    assert_int_equal(pb_hist_quantile(&a, 1.0), 1000);
    pb_hist_merge(&a, &b);
    assert_int_equal(a.count, 2000);
    assert_int_equal(a.max, 2000);
    assert_memory_equal(a.n, all.n, sizeof a.n);
    assert_int_equal(pb_hist_quantile(&a, 0.5), 1000);
    int64_t p99 = pb_hist_quantile(&a, 0.99);
    assert_true(p99 >= 1980 * 99 / 100 && p99 <= 1980 * 101 / 100);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scan),
        cmocka_unit_test(test_turn_tag),
        cmocka_unit_test(test_hist_exact_then_within_one_percent),
        cmocka_unit_test(test_hist_quantiles_and_merge),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
