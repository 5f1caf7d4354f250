/*  test_sse — the Server-Sent Events parser (protocol/pl_sse.c).

    One table of streams, each with the events it must give (real OpenAI
    chat.completions and Gemini alt=sse streams, the WHATWG examples, every
    line end, BOM, field and limit rule, NULs and garbage). Each row is its
    own test: the stream is fed whole and must give exactly its events, then
    cut in two at every byte position, then fed one byte at a time, and
    every run must give the same events and the same dropped count. Then
    seeded random streams (no expected events: splits must agree), callback
    stop, bounded memory on endless input, and the lifecycle. */
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
#include "pl_sse.h"

/* hand-laid tables and payloads */
// clang-format off
#define IN(s) s, sizeof(s) - 1
#define EV(e, d, i) {e, d, sizeof(d) - 1, i}
#define MAX_EV 20
#define BIG 4096

typedef struct {
    const char *event, *data;
    size_t len;
    const char *id;
} exp_t;

typedef struct {
    const char *name;
    const char *in;
    size_t len;
    size_t max;
    size_t dropped;
    exp_t ev[MAX_EV]; /* ends at the first event == NULL */
} case_t;

/* ---- realistic payloads ---- */

#define OAI_HEAD "{\"id\":\"chatcmpl-A1b2C3\",\"object\":\"chat.completion.chunk\",\"created\":1725000000,"   \
                 "\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_0ba0d124f1\",\"choices\":" \
                 "[{\"index\":0,\"delta\":"
#define OAI1 OAI_HEAD "{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":null}]}"
#define OAI2 OAI_HEAD "{\"content\":\"Hel\"},\"logprobs\":null,\"finish_reason\":null}]}"
#define OAI3 OAI_HEAD "{\"content\":\"lo \\u00e9\\n\"},\"logprobs\":null,\"finish_reason\":null}]}"
#define OAI4 OAI_HEAD "{},\"logprobs\":null,\"finish_reason\":\"stop\"}]}"
#define OAI5 "{\"id\":\"chatcmpl-A1b2C3\",\"object\":\"chat.completion.chunk\",\"choices\":[],"             \
             "\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3,\"total_tokens\":12}}"
#define GEM_HEAD "{\"candidates\": [{\"content\": {\"parts\": [{\"text\": "
#define GEM1 GEM_HEAD "\"Hello\"}],\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": " \
                      "4,\"totalTokenCount\": 4},\"modelVersion\": \"gemini-2.0-flash\"}"
#define GEM2 GEM_HEAD "\" there, \\\"friend\\\"\"}],\"role\": \"model\"},\"finishReason\": \"STOP\","         \
                      "\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 4,\"candidatesTokenCount\": 5,"    \
                      "\"totalTokenCount\": 9},\"modelVersion\": \"gemini-2.0-flash\"}"
#define LONG17 "0123456789ABCDEFG" /* with "data: " a 23-byte line */

static case_t s_cases[] = {
    {"openai_chat_stream",
     IN("data: " OAI1 "\n\ndata: " OAI2 "\n\ndata: " OAI3 "\n\ndata: " OAI4 "\n\ndata: " OAI5 "\n\ndata: [DONE]\n\n"),
     BIG, 0, {EV("", OAI1, ""), EV("", OAI2, ""), EV("", OAI3, ""), EV("", OAI4, ""), EV("", OAI5, ""),
              EV("", "[DONE]", "")}},
    {"openrouter_comments", IN(": OPENROUTER PROCESSING\n\n: OPENROUTER PROCESSING\n\ndata: " OAI2 "\n\n"
                                ":\ndata: [DONE]\n\n"),
     BIG, 0, {EV("", OAI2, ""), EV("", "[DONE]", "")}},
    {"gemini_alt_sse_crlf", IN("data: " GEM1 "\r\n\r\ndata: " GEM2 "\r\n\r\n"), BIG, 0,
     {EV("", GEM1, ""), EV("", GEM2, "")}},
    {"event_and_id_fields",
     IN("event: message_start\nid: 1\ndata: {\"type\":\"message_start\"}\n\n"
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"Hi\"}}\n\n"
        "data: a\nid: 5\n\n"),
     BIG, 0, {EV("message_start", "{\"type\":\"message_start\"}", "1"),
              EV("content_block_delta", "{\"type\":\"content_block_delta\",\"delta\":{\"text\":\"Hi\"}}", "1"),
              EV("", "a", "5")}},
    {"event_type_resets", IN("event: add\ndata: 1\n\ndata: 2\n\nevent: ping\n\ndata: 3\n\n"), BIG, 0,
     {EV("add", "1", ""), EV("", "2", ""), EV("", "3", "")}},
    {"id_persists_and_clears", IN("id: 7\ndata: a\n\ndata: b\n\nid\ndata: c\n\nid: 8\n\ndata: d\n\n"), BIG, 0,
     {EV("", "a", "7"), EV("", "b", "7"), EV("", "c", ""), EV("", "d", "8")}},
    {"multi_line_data", IN("data: YHOO\ndata: +2\ndata: 10\n\n"), BIG, 0, {EV("", "YHOO\n+2\n10", "")}},
    {"whatwg_test_stream",
     IN(": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n"), BIG, 0,
     {EV("", "first event", "1"), EV("", "second event", ""), EV("", " third event", "")}},
    {"whatwg_empty_data", IN("data\n\ndata\ndata\n\ndata:"), BIG, 0, {EV("", "", ""), EV("", "\n", "")}},
    {"whatwg_space_optional", IN("data:test\n\ndata: test\n\n"), BIG, 0, {EV("", "test", ""), EV("", "test", "")}},
    {"value_spaces", IN("data:  x\n\ndata: \n\ndata:x \n\ndata: a:b: c\n\n"), BIG, 0,
     {EV("", " x", ""), EV("", "", ""), EV("", "x ", ""), EV("", "a:b: c", "")}},
    {"field_without_colon", IN("event\ndata\n\nevent: e\nevent\ndata: x\n\n"), BIG, 0,
     {EV("", "", ""), EV("", "x", "")}},
    {"ignored_fields", IN("retry: 3000\ndata: r\n\nfoo: bar\nDATA: no\ndata : no\n data: no\ndata: f\n\n"), BIG, 0,
     {EV("", "r", ""), EV("", "f", "")}},
    {"comments_only", IN(": keep-alive\n\n:\n\n: a: b\n:data: no\n\n"), BIG, 0, {{NULL}}},
    {"crlf_endings", IN("data: a\r\ndata: b\r\n\r\nevent: x\r\ndata: c\r\n\r\n"), BIG, 0,
     {EV("", "a\nb", ""), EV("x", "c", "")}},
    {"cr_endings", IN("data: a\rdata: b\r\rid: 3\rdata: c\r\r"), BIG, 0, {EV("", "a\nb", ""), EV("", "c", "3")}},
    {"lf_cr_is_two_line_ends", IN("data: a\n\rdata: b\r\n\n"), BIG, 0, {EV("", "a", ""), EV("", "b", "")}},
    {"mixed_endings", IN("\r\n\r\n\n\rdata: a\r\n\rdata: b\n\r\ndata: c\r\r\n"), BIG, 0,
     {EV("", "a", ""), EV("", "b", ""), EV("", "c", "")}},
    {"bom_skipped", IN("\xEF\xBB\xBF"
                       "data: bom\n\n"),
     BIG, 0, {EV("", "bom", "")}},
    {"bom_then_crlf", IN("\xEF\xBB\xBF"
                         "\r\ndata: x\r\n\r\n"),
     BIG, 0, {EV("", "x", "")}},
    {"second_bom_kept", IN("\xEF\xBB\xBF\xEF\xBB\xBF"
                           "data: x\n\ndata: y\n\n"),
     BIG, 0, {EV("", "y", "")}},
    {"partial_bom_is_bytes", IN("\xEF\xBB"
                                "data: x\n\ndata: y\n\n"),
     BIG, 0, {EV("", "y", "")}},
    {"partial_bom_then_lf", IN("\xEF\ndata: x\n\n"), BIG, 0, {EV("", "x", "")}},
    {"bom_not_at_start", IN("data: a\n\n\xEF\xBB\xBF"
                            "data: b\n\n"),
     BIG, 0, {EV("", "a", "")}},
    {"unterminated_event_lf", IN("data: a\n\ndata: b\n"), BIG, 0, {EV("", "a", "")}},
    {"unterminated_event_no_eol", IN("data: a\n\nevent: e\ndata: b"), BIG, 0, {EV("", "a", "")}},
    {"unterminated_event_cr", IN("data: a\r\n\r\ndata: b\r"), BIG, 0, {EV("", "a", "")}},
    {"final_cr_is_blank_line", IN("data: a\r\n\r"), BIG, 0, {EV("", "a", "")}},
    {"nul_in_data", IN("data: a\0b\n\ndata: \0\n\n"), BIG, 0, {EV("", "a\0b", ""), EV("", "\0", "")}},
    {"nul_in_id_ignored", IN("id: 1\ndata: a\n\nid: 2\0x\ndata: b\n\n"), BIG, 0, {EV("", "a", "1"), EV("", "b", "1")}},
    {"nul_in_field_name", IN("\0data: z\n\nda\0ta: z\n\ndata: y\n\n"), BIG, 0, {EV("", "y", "")}},
    {"binary_garbage", IN("\xff\xfe\x00:\x01\n\xc3\x28"
                          "data\n\n\x80\x80\x80\n\ndata:\xff\xfe\x80\r\n\r\n"),
     BIG, 0, {EV("", "\xff\xfe\x80", "")}},
    {"oversize_line", IN("data: " LONG17 "\n\ndata: ok\n\n"), 16, 1, {EV("", "ok", "")}},
    {"oversize_event", IN("data: 01234567\ndata: 01234567\ndata: x\n\ndata: ok\n\n"), 16, 1, {EV("", "ok", "")}},
    {"event_exactly_max", IN("data: 0123456\ndata: 01234567\n\n"), 16, 0, {EV("", "0123456\n01234567", "")}},
    {"line_exactly_max", IN("data: 0123456789\n\n"), 16, 0, {EV("", "0123456789", "")}},
    {"empty_lines_exactly_max", IN("data\ndata\ndata\ndata\ndata\ndata\ndata\ndata\ndata\ndata\ndata\ndata\n"
                                   "data\ndata\ndata\ndata\ndata\n\n"),
     16, 0, {EV("", "\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n", "")}},
    {"empty_lines_over_max", IN("data\ndata\ndata\ndata\ndata\ndata\ndata\ndata\ndata\ndata\ndata\ndata\n"
                                "data\ndata\ndata\ndata\ndata\ndata\n\ndata: ok\n\n"),
     16, 1, {EV("", "ok", "")}},
    {"oversize_comment", IN(": 0123456789abcdefgh\ndata: lost\n\ndata: ok\n\n"), 16, 1, {EV("", "ok", "")}},
    {"oversize_event_field", IN("event: 0123456789abcdef\ndata: x\n\ndata: ok\n\n"), 16, 1, {EV("", "ok", "")}},
    {"oversize_id_not_set", IN("id: 1\ndata: a\n\nid: 0123456789abcdef\n\ndata: b\n\n"), 16, 1,
     {EV("", "a", "1"), EV("", "b", "1")}},
    {"oversize_keeps_earlier_id", IN("id: 1\ndata: a\n\nid: 2\ndata: " LONG17 "\n\ndata: b\n\n"), 16, 1,
     {EV("", "a", "1"), EV("", "b", "2")}},
    {"oversize_lines_one_event", IN("data: " LONG17 "\ndata: " LONG17 "\ndata: y\n\ndata: z\n\n"), 16, 1,
     {EV("", "z", "")}},
    {"oversize_twice", IN("data: " LONG17 "\n\ndata: a\n\ndata: " LONG17 "\n\ndata: b\n\n"), 16, 2,
     {EV("", "a", ""), EV("", "b", "")}},
    {"oversize_resync_cr", IN("data: " LONG17 "\r\rdata: ok\r\r"), 16, 1, {EV("", "ok", "")}},
    {"oversize_resync_crlf", IN("data: " LONG17 "\r\ndata: lost\r\n\r\ndata: ok\r\n\r\n"), 16, 1, {EV("", "ok", "")}},
    {"oversize_unterminated", IN("data: ok\n\ndata: " LONG17), 16, 1, {EV("", "ok", "")}},
    {"oversize_data_not_dispatched", IN("event: big\ndata: 0123456789\ndata: 0123456789\n\ndata: ok\n\n"), 16, 1,
     {EV("", "ok", "")}},
};
// clang-format on
#define N_CASES (sizeof s_cases / sizeof s_cases[0])

/* ---- recording ---- */

typedef struct {
    char *event, *data, *id;
    size_t len;
} rec_ev_t;

typedef struct {
    rec_ev_t ev[64];
    size_t n;
    size_t overflow; /* events past the 64 kept */
    int stop_after;  /* 0: never stop; k: return stop_rc at the k-th event */
    int stop_rc;
} rec_t;

static char *
s_dup(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    assert_non_null(p);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

static int
s_on_event(void *arg, const pl_sse_event_t *ev)
{
    rec_t *r = arg;
    assert_non_null(ev->event);
    assert_non_null(ev->data);
    assert_non_null(ev->id);
    assert_int_equal(ev->data[ev->data_len], '\0');
    if (r->n < sizeof r->ev / sizeof r->ev[0]) {
        rec_ev_t *e = &r->ev[r->n];
        e->event = s_dup(ev->event, strlen(ev->event));
        e->data = s_dup(ev->data, ev->data_len);
        e->len = ev->data_len;
        e->id = s_dup(ev->id, strlen(ev->id));
        r->n++;
    } else {
        r->overflow++;
    }
    return r->stop_after && (int) (r->n + r->overflow) == r->stop_after ? r->stop_rc : 0;
}

static void
s_rec_free(rec_t *r)
{
    for (size_t i = 0; i < r->n; i++) {
        free(r->ev[i].event);
        free(r->ev[i].data);
        free(r->ev[i].id);
    }
    memset(r, 0, sizeof *r);
}

static bool
s_rec_same(const rec_t *a, const rec_t *b)
{
    if (a->n != b->n || a->overflow != b->overflow)
        return false;
    for (size_t i = 0; i < a->n; i++) {
        const rec_ev_t *x = &a->ev[i], *y = &b->ev[i];
        if (strcmp(x->event, y->event) != 0 || strcmp(x->id, y->id) != 0 || x->len != y->len ||
            memcmp(x->data, y->data, x->len) != 0)
            return false;
    }
    return true;
}

/* Feeds in[0, cut) then in[cut, len), each in pieces of `chunk` bytes, then
   finishes; returns the dropped count. */
static size_t
s_run(const char *in, size_t len, size_t max, size_t cut, size_t chunk, rec_t *r)
{
    pl_sse_t *p = pl_sse_new(max);
    assert_non_null(p);
    const size_t bounds[3] = {0, cut, len};
    for (int part = 0; part < 2; part++) {
        size_t at = bounds[part];
        do {
            size_t n = bounds[part + 1] - at < chunk ? bounds[part + 1] - at : chunk;
            assert_int_equal(pl_sse_feed(p, in + at, n, s_on_event, r), 0);
            at += n;
        } while (at < bounds[part + 1]);
    }
    assert_int_equal(pl_sse_finish(p, s_on_event, r), 0);
    size_t dropped = pl_sse_dropped(p);
    pl_sse_destroy(&p);
    assert_null(p);
    return dropped;
}

/* Whole, every two-piece cut, one byte at a time: all must agree with
   `whole` (returned for the caller to check). */
static void
s_check_splits(const char *name, const char *in, size_t len, size_t max, rec_t *whole, size_t *dropped)
{
    *dropped = s_run(in, len, max, 0, SIZE_MAX, whole);
    for (size_t cut = 0; cut <= len + 1; cut++) {
        rec_t r = {0};
        size_t d = cut <= len ? s_run(in, len, max, cut, SIZE_MAX, &r) : s_run(in, len, max, 0, 1, &r);
        if (!s_rec_same(whole, &r) || d != *dropped)
            fail_msg("%s: %s %zu gives other events (%zu, dropped %zu) than one feed (%zu, dropped %zu)", name,
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
    while (n < MAX_EV && c->ev[n].event)
        n++;
    assert_int_equal(whole.n, n);
    assert_int_equal(whole.overflow, 0);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(whole.ev[i].event, c->ev[i].event);
        assert_int_equal(whole.ev[i].len, c->ev[i].len);
        assert_memory_equal(whole.ev[i].data, c->ev[i].data, c->ev[i].len);
        assert_string_equal(whole.ev[i].id, c->ev[i].id);
    }
    assert_int_equal(dropped, c->dropped);
    s_rec_free(&whole);
}

/* ---- beyond the table ---- */

/* Random streams over the bytes that matter: any cut must agree. */
static void
test_random_streams(void **state)
{
    (void) state;
    static const char *const atoms[] = {
        "data",     "data:", ": ",   "event:", "id:",  "id: 9",
        "retry: 1", ":",     " ",    "x",      "yz",   "0123456789",   /* lines */
        "\r",       "\n",    "\r\n", "\0",     "\xEF", "\xEF\xBB\xBF", /* bytes */
    };
    uint32_t seed = 0x5eed1234u;
    char in[240];
    char name[32];
    for (int round = 0; round < 150; round++) {
        size_t len = 0;
        while (len < sizeof in - 16) {
            seed = seed * 1664525u + 1013904223u;
            const char *a = atoms[(seed >> 16) % (sizeof atoms / sizeof atoms[0])];
            size_t n = a[0] ? strlen(a) : 1;
            memcpy(in + len, a, n);
            len += n;
            if ((seed >> 8) % 23 == 0)
                break;
        }
        snprintf(name, sizeof name, "random round %d", round);
        rec_t whole = {0};
        size_t dropped;
        s_check_splits(name, in, len, 12 + (size_t) round % 20, &whole, &dropped);
        s_rec_free(&whole);
    }
}

static void
test_callback_stops(void **state)
{
    (void) state;
    static const char in[] = "data: 1\n\ndata: 2\n\ndata: 3\n\n";
    pl_sse_t *p = pl_sse_new(BIG);
    assert_non_null(p);
    rec_t r = {.stop_after = 2, .stop_rc = 7};
    assert_int_equal(pl_sse_feed(p, in, sizeof in - 1, s_on_event, &r), 7);
    assert_int_equal(r.n, 2);
    assert_string_equal(r.ev[1].data, "2");
    r.stop_after = 0; /* the parser stays usable */
    assert_int_equal(pl_sse_feed(p, in, sizeof in - 1, s_on_event, &r), 0);
    assert_int_equal(r.n, 5);
    r.stop_after = 6;
    r.stop_rc = -PL_E_MODEL_ERROR;
    assert_int_equal(pl_sse_feed(p, in, sizeof in - 1, s_on_event, &r), -PL_E_MODEL_ERROR);
    assert_int_equal(r.n, 6);
    assert_int_equal(pl_sse_feed(p, "data: z\n\n", 9, NULL, NULL), 0); /* no callback: events go nowhere */
    assert_int_equal(pl_sse_finish(p, s_on_event, &r), 0);
    assert_int_equal(r.n, 6);
    s_rec_free(&r);
    pl_sse_destroy(&p);
}

/* 10 MB of one endless line, then of endless data lines, with max 4096:
   one drop each, and the parser still works after a blank line. */
static void
test_bounded_memory(void **state)
{
    (void) state;
    enum { CHUNK = 65536, TOTAL = 10 * 1024 * 1024 };
    char *buf = malloc(CHUNK);
    assert_non_null(buf);
    pl_sse_t *p = pl_sse_new(4096);
    assert_non_null(p);
    rec_t r = {0};
    memcpy(buf, "data: ", 6);
    memset(buf + 6, 'x', CHUNK - 6);
    for (size_t sent = 0; sent < TOTAL; sent += CHUNK)
        assert_int_equal(pl_sse_feed(p, sent ? buf + 6 : buf, sent ? CHUNK - 6 : CHUNK, s_on_event, &r), 0);
    assert_int_equal(pl_sse_dropped(p), 1);
    assert_int_equal(pl_sse_feed(p, "\n\ndata: ok\n\n", 12, s_on_event, &r), 0);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.ev[0].data, "ok");

    for (size_t i = 0; i + 10 <= CHUNK; i += 10)
        memcpy(buf + i, "data: abc\n", 10);
    for (size_t sent = 0; sent < TOTAL; sent += CHUNK)
        assert_int_equal(pl_sse_feed(p, buf, CHUNK / 10 * 10, s_on_event, &r), 0);
    assert_int_equal(pl_sse_dropped(p), 2);
    assert_int_equal(pl_sse_feed(p, "\ndata: ok2\n\n", 12, s_on_event, &r), 0);
    assert_int_equal(r.n, 2);
    assert_string_equal(r.ev[1].data, "ok2");
    s_rec_free(&r);
    pl_sse_destroy(&p);
    free(buf);
}

static void
test_lifecycle(void **state)
{
    (void) state;
    pl_sse_t *p = NULL;
    pl_sse_destroy(&p);
    pl_sse_destroy(NULL);
    assert_null(pl_sse_new(0));
    assert_null(pl_sse_new(SIZE_MAX));
    p = pl_sse_new(1);
    assert_non_null(p);
    assert_int_equal(pl_sse_feed(p, NULL, 0, NULL, NULL), 0);
    assert_int_equal(pl_sse_dropped(p), 0);
    pl_sse_destroy(&p);
    assert_null(p);
    pl_sse_destroy(&p);
    /* finish readies the parser for a new stream: a BOM again, the id kept */
    p = pl_sse_new(64);
    assert_non_null(p);
    rec_t r = {0};
    assert_int_equal(pl_sse_feed(p, IN("id: 4\ndata: a\n\ndata: cut"), s_on_event, &r), 0);
    assert_int_equal(pl_sse_finish(p, s_on_event, &r), 0);
    static const char bom_b[] = "\xEF\xBB\xBF"
                                "data: b\n\n";
    assert_int_equal(pl_sse_feed(p, bom_b, sizeof bom_b - 1, s_on_event, &r), 0);
    assert_int_equal(r.n, 2);
    assert_string_equal(r.ev[1].data, "b");
    assert_string_equal(r.ev[1].id, "4");
    s_rec_free(&r);
    pl_sse_destroy(&p);
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
