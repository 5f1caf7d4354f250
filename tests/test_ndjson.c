/*  test_ndjson — NDJSON framing (protocol/pl_ndjson.c).

    One table of streams (real Ollama /api/generate and /api/chat streams,
    CRLF, blank and whitespace lines, a last line without LF, limits, NULs
    and garbage), each with the lines it must give; each row is its own
    test, fed whole, cut in two at every byte position, and one byte at a
    time: every run must give the same lines and dropped count. Then seeded
    random streams (splits must agree), callback stop, bounded memory on an
    endless line, and the lifecycle. */
#include <setjmp.h> /* cmocka needs these three first */
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pl_err.h"
#include "pl_ndjson.h"

/* hand-laid tables and payloads */
// clang-format off
#define IN(s) s, sizeof(s) - 1
#define L(s) {s, sizeof(s) - 1}
#define MAX_LINES 12
#define BIG 4096

typedef struct {
    const char *s;
    size_t len;
} exp_t;

typedef struct {
    const char *name;
    const char *in;
    size_t len;
    size_t max;
    size_t dropped;
    exp_t lines[MAX_LINES]; /* ends at the first s == NULL */
} case_t;

#define OG(resp) "{\"model\":\"llama3.2\",\"created_at\":\"2024-11-02T10:00:00.123456Z\",\"response\":\"" resp \
                 "\",\"done\":false}"
#define OG_DONE "{\"model\":\"llama3.2\",\"created_at\":\"2024-11-02T10:00:00.523456Z\",\"response\":\"\","    \
                "\"done\":true,\"done_reason\":\"stop\",\"context\":[128006,9125,128007],\"total_duration\":"  \
                "512345678,\"load_duration\":1234567,\"prompt_eval_count\":26,\"prompt_eval_duration\":"       \
                "130000000,\"eval_count\":3,\"eval_duration\":250000000}"
#define OC(text) "{\"model\":\"qwen2.5:0.5b\",\"created_at\":\"2024-11-02T10:00:01Z\",\"message\":{\"role\":" \
                 "\"assistant\",\"content\":\"" text "\"},\"done\":false}"
#define OC_DONE "{\"model\":\"qwen2.5:0.5b\",\"created_at\":\"2024-11-02T10:00:02Z\",\"message\":{\"role\":"    \
                "\"assistant\",\"content\":\"\"},\"done_reason\":\"stop\",\"done\":true,\"total_duration\":"    \
                "4883583458,\"eval_count\":2}"
#define OERR "{\"error\":\"model \\\"llama9\\\" not found, try pulling it first\"}"
#define S16 "0123456789abcdef"

static case_t s_cases[] = {
    {"ollama_generate", IN(OG("The") "\n" OG(" sky") "\n" OG(" is \\u00e9 blue\\n") "\n" OG_DONE "\n"), BIG, 0,
     {L(OG("The")), L(OG(" sky")), L(OG(" is \\u00e9 blue\\n")), L(OG_DONE)}},
    {"ollama_chat", IN(OC("Hi") "\n" OC("!") "\n" OC_DONE "\n"), BIG, 0, {L(OC("Hi")), L(OC("!")), L(OC_DONE)}},
    {"ollama_error", IN(OERR "\n"), BIG, 0, {L(OERR)}},
    {"crlf", IN(OC("a") "\r\n" OC_DONE "\r\n"), BIG, 0, {L(OC("a")), L(OC_DONE)}},
    {"blank_and_whitespace_lines", IN("\n\n{\"a\":1}\n \n\t\r\n\r\n  \t \n{\"b\":2}\n\n"), BIG, 0,
     {L("{\"a\":1}"), L("{\"b\":2}")}},
    {"whitespace_kept_inside", IN("  {\"a\": 1}\t\n"), BIG, 0, {L("  {\"a\": 1}\t")}},
    {"last_line_without_lf", IN(OG("x") "\n" OG_DONE), BIG, 0, {L(OG("x")), L(OG_DONE)}},
    {"last_line_cr_without_lf", IN("{\"a\":1}\n{\"b\":2}\r"), BIG, 0, {L("{\"a\":1}"), L("{\"b\":2}")}},
    {"last_line_blank", IN("{\"a\":1}\n  \r"), BIG, 0, {L("{\"a\":1}")}},
    {"only_one_cr_stripped", IN("x\r\r\ny\n"), BIG, 0, {L("x\r"), L("y")}},
    {"cr_inside_kept", IN("a\rb\n\rc\n"), BIG, 0, {L("a\rb"), L("\rc")}},
    {"empty_stream", IN(""), BIG, 0, {{NULL}}},
    {"nul_bytes", IN("{\"a\":\"\0\"}\n\0\n"), BIG, 0, {L("{\"a\":\"\0\"}"), L("\0")}},
    {"binary_garbage", IN("\xff\xfe\x80\n\xc3\x28\r\n\x01\x02\x03"), BIG, 0,
     {L("\xff\xfe\x80"), L("\xc3\x28"), L("\x01\x02\x03")}},
    {"line_exactly_max", IN(S16 "\n" S16 "\r\n" S16), 16, 0, {L(S16), L(S16), L(S16)}},
    {"oversize_line", IN("{\"k\":\"" S16 "\"}\n{\"ok\":1}\n"), 16, 1, {L("{\"ok\":1}")}},
    {"oversize_by_one", IN(S16 "g\nok\n"), 16, 1, {L("ok")}},
    {"oversize_with_crlf", IN(S16 "g\r\nok\r\n"), 16, 1, {L("ok")}},
    {"oversize_cr_is_content", IN(S16 "\r\r\nok\n"), 16, 1, {L("ok")}},
    {"oversize_last_line", IN("ok\n" S16 "XYZ"), 16, 1, {L("ok")}},
    {"oversize_last_line_by_one", IN("ok\n" S16 "X"), 16, 1, {L("ok")}},
    {"oversize_several", IN(S16 S16 "\na\n" S16 S16 S16 "\r\nb\n" S16 "!!\n"), 16, 3, {L("a"), L("b")}},
};
// clang-format on
#define N_CASES (sizeof s_cases / sizeof s_cases[0])

/* ---- recording ---- */

typedef struct {
    char *s[64];
    size_t len[64];
    size_t n, overflow;
    int stop_after; /* 0: never; k: return stop_rc at the k-th line */
    int stop_rc;
} rec_t;

static int
s_on_line(void *arg, const char *line, size_t len)
{
    rec_t *r = arg;
    assert_non_null(line);
    assert_int_equal(line[len], '\0');
    assert_true(len > 0);
    if (r->n < sizeof r->s / sizeof r->s[0]) {
        r->s[r->n] = malloc(len + 1);
        assert_non_null(r->s[r->n]);
        memcpy(r->s[r->n], line, len + 1);
        r->len[r->n++] = len;
    } else {
        r->overflow++;
    }
    return r->stop_after && (int) (r->n + r->overflow) == r->stop_after ? r->stop_rc : 0;
}

static void
s_rec_free(rec_t *r)
{
    for (size_t i = 0; i < r->n; i++)
        free(r->s[i]);
    memset(r, 0, sizeof *r);
}

static bool
s_rec_same(const rec_t *a, const rec_t *b)
{
    if (a->n != b->n || a->overflow != b->overflow)
        return false;
    for (size_t i = 0; i < a->n; i++)
        if (a->len[i] != b->len[i] || memcmp(a->s[i], b->s[i], a->len[i]) != 0)
            return false;
    return true;
}

/* Feeds in[0, cut) then in[cut, len), each in pieces of `chunk` bytes, then
   finishes; returns the dropped count. */
static size_t
s_run(const char *in, size_t len, size_t max, size_t cut, size_t chunk, rec_t *r)
{
    pl_ndjson_t *p = pl_ndjson_new(max);
    assert_non_null(p);
    const size_t bounds[3] = {0, cut, len};
    for (int part = 0; part < 2; part++) {
        size_t at = bounds[part];
        do {
            size_t n = bounds[part + 1] - at < chunk ? bounds[part + 1] - at : chunk;
            assert_int_equal(pl_ndjson_feed(p, in + at, n, s_on_line, r), 0);
            at += n;
        } while (at < bounds[part + 1]);
    }
    assert_int_equal(pl_ndjson_finish(p, s_on_line, r), 0);
    size_t dropped = pl_ndjson_dropped(p);
    pl_ndjson_destroy(&p);
    assert_null(p);
    return dropped;
}

/* Whole, every two-piece cut, one byte at a time: all must agree. */
static void
s_check_splits(const char *name, const char *in, size_t len, size_t max, rec_t *whole, size_t *dropped)
{
    *dropped = s_run(in, len, max, 0, SIZE_MAX, whole);
    for (size_t cut = 0; cut <= len + 1; cut++) {
        rec_t r = {0};
        size_t d = cut <= len ? s_run(in, len, max, cut, SIZE_MAX, &r) : s_run(in, len, max, 0, 1, &r);
        if (!s_rec_same(whole, &r) || d != *dropped)
            fail_msg("%s: %s %zu gives other lines (%zu, dropped %zu) than one feed (%zu, dropped %zu)", name,
                     cut <= len ? "cut at" : "bytes one by one, len", cut <= len ? cut : len, r.n, d, whole->n,
                     *dropped);
        s_rec_free(&r);
    }
}

static void
test_case(void **state)
{
    const case_t *c = *state;
    rec_t whole = {0};
    size_t dropped;
    s_check_splits(c->name, c->in, c->len, c->max, &whole, &dropped);
    size_t n = 0;
    while (n < MAX_LINES && c->lines[n].s)
        n++;
    assert_int_equal(whole.n, n);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(whole.len[i], c->lines[i].len);
        assert_memory_equal(whole.s[i], c->lines[i].s, c->lines[i].len);
    }
    assert_int_equal(dropped, c->dropped);
    s_rec_free(&whole);
}

/* ---- beyond the table ---- */

static void
test_random_streams(void **state)
{
    (void) state;
    static const char *const atoms[] = {"{\"a\":1}", "\n", "\r", "\r\n", " ", "\t", "x", "\0", "0123456789"};
    uint32_t seed = 0xa11ce5u;
    char in[200];
    char name[32];
    for (int round = 0; round < 150; round++) {
        size_t len = 0;
        while (len < sizeof in - 16) {
            seed = seed * 1664525u + 1013904223u;
            const char *a = atoms[(seed >> 16) % (sizeof atoms / sizeof atoms[0])];
            size_t n = a[0] ? strlen(a) : 1;
            memcpy(in + len, a, n);
            len += n;
            if ((seed >> 8) % 19 == 0)
                break;
        }
        snprintf(name, sizeof name, "random round %d", round);
        rec_t whole = {0};
        size_t dropped;
        s_check_splits(name, in, len, 4 + (size_t) round % 24, &whole, &dropped);
        s_rec_free(&whole);
    }
}

static void
test_callback_stops(void **state)
{
    (void) state;
    static const char in[] = "{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n{\"n\":4}";
    pl_ndjson_t *p = pl_ndjson_new(BIG);
    assert_non_null(p);
    rec_t r = {.stop_after = 2, .stop_rc = 3};
    assert_int_equal(pl_ndjson_feed(p, in, sizeof in - 1, s_on_line, &r), 3);
    assert_int_equal(r.n, 2);
    assert_string_equal(r.s[1], "{\"n\":2}");
    s_rec_free(&r);
    /* the parser stays usable; finish returns the callback's stop too */
    r = (rec_t){.stop_after = 2, .stop_rc = -PL_E_MODEL_ERROR};
    assert_int_equal(pl_ndjson_feed(p, IN("{\"n\":5}\n{\"n\":6}"), s_on_line, &r), 0);
    assert_int_equal(pl_ndjson_finish(p, s_on_line, &r), -PL_E_MODEL_ERROR);
    assert_int_equal(r.n, 2);
    assert_string_equal(r.s[1], "{\"n\":6}");
    assert_int_equal(pl_ndjson_feed(p, IN("{\"n\":7}\n"), NULL, NULL), 0); /* no callback: lines go nowhere */
    assert_int_equal(pl_ndjson_finish(p, s_on_line, &r), 0);
    assert_int_equal(r.n, 2);
    s_rec_free(&r);
    pl_ndjson_destroy(&p);
}

/* 10 MB of one endless line with max 4096: one drop, then back in step. */
static void
test_bounded_memory(void **state)
{
    (void) state;
    enum { CHUNK = 65536, TOTAL = 10 * 1024 * 1024 };
    char *buf = malloc(CHUNK);
    assert_non_null(buf);
    memset(buf, 'x', CHUNK);
    pl_ndjson_t *p = pl_ndjson_new(4096);
    assert_non_null(p);
    rec_t r = {0};
    for (size_t sent = 0; sent < TOTAL; sent += CHUNK)
        assert_int_equal(pl_ndjson_feed(p, buf, CHUNK, s_on_line, &r), 0);
    assert_int_equal(pl_ndjson_dropped(p), 1);
    assert_int_equal(r.n, 0);
    assert_int_equal(pl_ndjson_feed(p, IN("\r\n{\"done\":true}\n"), s_on_line, &r), 0);
    assert_int_equal(pl_ndjson_finish(p, s_on_line, &r), 0);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.s[0], "{\"done\":true}");
    assert_int_equal(pl_ndjson_dropped(p), 1);
    s_rec_free(&r);
    pl_ndjson_destroy(&p);
    free(buf);
}

static void
test_lifecycle(void **state)
{
    (void) state;
    pl_ndjson_t *p = NULL;
    pl_ndjson_destroy(&p);
    pl_ndjson_destroy(NULL);
    assert_null(pl_ndjson_new(0));
    assert_null(pl_ndjson_new(SIZE_MAX));
    p = pl_ndjson_new(1);
    assert_non_null(p);
    rec_t r = {0};
    assert_int_equal(pl_ndjson_feed(p, NULL, 0, NULL, NULL), 0);
    assert_int_equal(pl_ndjson_feed(p, IN("1\n22\n3"), s_on_line, &r), 0);
    assert_int_equal(pl_ndjson_finish(p, s_on_line, &r), 0);
    assert_int_equal(pl_ndjson_finish(p, s_on_line, &r), 0); /* twice: nothing more */
    assert_int_equal(r.n, 2);
    assert_int_equal(pl_ndjson_dropped(p), 1);
    s_rec_free(&r);
    pl_ndjson_destroy(&p);
    assert_null(p);
    pl_ndjson_destroy(&p);
}

int
main(void)
{
    struct CMUnitTest tests[N_CASES + 4];
    for (size_t i = 0; i < N_CASES; i++)
        tests[i] = (struct CMUnitTest){.name = s_cases[i].name, .test_func = test_case, .initial_state = &s_cases[i]};
    tests[N_CASES + 0] = (struct CMUnitTest) cmocka_unit_test(test_random_streams);
    tests[N_CASES + 1] = (struct CMUnitTest) cmocka_unit_test(test_callback_stops);
    tests[N_CASES + 2] = (struct CMUnitTest) cmocka_unit_test(test_bounded_memory);
    tests[N_CASES + 3] = (struct CMUnitTest) cmocka_unit_test(test_lifecycle);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
