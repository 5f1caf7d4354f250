/*  test_envelope — the msgpack envelope codec (protocol/pl_envelope.c).

    Round trips are driven by the schema itself (pl_envelope.def): every
    message type with its required fields, every field of every kind. The
    decoder's refusals are a table of handcrafted msgpack maps, built with
    msgpack's own packer; each must give -PL_E_BAD_FRAME and an empty env (the
    suite runs under LeakSanitizer, so a partial decode that leaks fails). */
#include <setjmp.h> /* cmocka needs these three first */
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pl_envelope.h"
#include "pl_err.h"
#include "pl_limits.h"

/* ---- the schema, seen from the test ---- */

typedef enum { K_U64, K_I64, K_F64, K_BOOL, K_STR, K_HIST, K_SESSV, K_I64V, K_BINV } kind_t;

static const kind_t s_kind[PL_F_COUNT_] = {
#define X(id, member, kind, doc) K_##kind,
    PL_ENV_FIELDS(X)
#undef X
};

static const struct {
    pl_msg_t type;
    const char *name;
    uint64_t required;
} s_msgs[] = {
#define X(id, name, req) {PL_MSG_##id, name, req},
    PL_ENV_MSGS(X)
#undef X
};
#define N_MSGS (sizeof s_msgs / sizeof s_msgs[0])

static void *
s_slot(pl_env_t *env, pl_field_t f)
{
    switch (f) {
#define X(id, member, kind, doc)                                                                                       \
    case PL_F_##id:                                                                                                    \
        return &env->member;
        PL_ENV_FIELDS(X)
#undef X
    default:
        return NULL;
    }
}

static const void *
s_cslot(const pl_env_t *env, pl_field_t f)
{
    return s_slot((pl_env_t *) env, f);
}

/* ---- helpers ---- */

static char *
s_xstrdup(const char *s)
{
    char *p = strdup(s);
    assert_non_null(p);
    return p;
}

static void
s_add_hist(pl_env_t *env, const char *id, const char *role, const char *text, const char *conn, double ts)
{
    pl_histent_t e = {(char *) id, (char *) role, (char *) text, (char *) conn, ts, (int64_t) (ts * 2), -7};
    assert_int_equal(pl_env_hist_add(env, &e), 0);
}

static void
s_add_sess(pl_env_t *env, const char *id, const char *model, const char *kind, const char *name, int64_t messages,
           int64_t members, double created)
{
    pl_sessinfo_t s = {(char *) id, (char *) model, (char *) kind, (char *) name, messages, members, created};
    assert_int_equal(pl_env_sessv_add(env, &s), 0);
}

/* Sets field `f` to a value of its kind; `variant` picks one of two. */
static void
s_fill(pl_env_t *env, pl_field_t f, int variant)
{
    char buf[64];
    switch (s_kind[f]) {
    case K_U64:
        pl_env_set_u64(env, f, variant ? UINT64_MAX : 1000u + (uint64_t) f);
        break;
    case K_I64:
        pl_env_set_i64(env, f, variant ? INT64_MIN : -(int64_t) (1000 + f));
        break;
    case K_F64:
        pl_env_set_f64(env, f, variant ? -1e300 : 0.125 + (double) f);
        break;
    case K_BOOL:
        pl_env_set_bool(env, f, variant == 0);
        break;
    case K_STR:
        snprintf(buf, sizeof buf, "field-%d-\xc3\xa9", (int) f);
        assert_int_equal(pl_env_set_str(env, f, variant ? "" : buf), 0);
        break;
    case K_HIST:
        s_add_hist(env, "m1", "user", "hello", "c0000000000000001", 1763925000.123);
        s_add_hist(env, "m2", "assistant", variant ? "" : "Echo hello", "", 1763925001.5);
        s_add_hist(env, "m3", "system", "be \"nice\"\n", "", 0.0);
        break;
    case K_SESSV:
        s_add_sess(env, "s1", "echo", "private", "", 3, 1, 1763925000.25);
        s_add_sess(env, "s2", "", "group", "team \xe6\x97\xa5", INT64_MAX, -1, -2.5);
        break;
    case K_I64V: {
        int64_t v[] = {0, 1, -1, INT64_MIN, INT64_MAX, 127, -33, 65536};
        assert_int_equal(pl_env_set_i64v(env, f, v, variant ? 1 : sizeof v / sizeof v[0]), 0);
        break;
    }
    case K_BINV: {
        static const char bin[] = {'\x82', '\x00', 0, '\xff', 'x'};
        assert_int_equal(pl_env_binv_add(env, f, bin, sizeof bin), 0);
        assert_int_equal(pl_env_binv_add(env, f, "", 0), 0);
        if (!variant)
            assert_int_equal(pl_env_binv_add(env, f, "abc", 3), 0);
        break;
    }
    }
}

static void
s_assert_f64_same(double a, double b)
{
    assert_memory_equal(&a, &b, sizeof a); /* bitwise: -0.0, inf and NaN too */
}

static void
s_assert_env_equal(const pl_env_t *a, const pl_env_t *b)
{
    assert_int_equal(a->type, b->type);
    assert_int_equal(a->present, b->present);
    for (int i = 0; i < PL_F_COUNT_; i++) {
        pl_field_t f = (pl_field_t) i;
        if (!pl_env_has(a, f))
            continue;
        const void *x = s_cslot(a, f), *y = s_cslot(b, f);
        switch (s_kind[f]) {
        case K_U64:
            assert_true(*(const uint64_t *) x == *(const uint64_t *) y);
            break;
        case K_I64:
            assert_true(*(const int64_t *) x == *(const int64_t *) y);
            break;
        case K_F64:
            s_assert_f64_same(*(const double *) x, *(const double *) y);
            break;
        case K_BOOL:
            assert_int_equal(*(const bool *) x, *(const bool *) y);
            break;
        case K_STR:
            assert_non_null(*(char *const *) x);
            assert_non_null(*(char *const *) y);
            assert_string_equal(*(char *const *) x, *(char *const *) y);
            break;
        case K_HIST: {
            const pl_hist_t *h = x, *g = y;
            assert_int_equal(h->n, g->n);
            for (size_t k = 0; k < h->n; k++) {
                assert_string_equal(h->v[k].id, g->v[k].id);
                assert_string_equal(h->v[k].role, g->v[k].role);
                assert_string_equal(h->v[k].text, g->v[k].text);
                assert_string_equal(h->v[k].conn, g->v[k].conn);
                s_assert_f64_same(h->v[k].ts, g->v[k].ts);
                assert_true(h->v[k].ord == g->v[k].ord);
                assert_true(h->v[k].finish == g->v[k].finish);
            }
            break;
        }
        case K_SESSV: {
            const pl_sessv_t *s = x, *t = y;
            assert_int_equal(s->n, t->n);
            for (size_t k = 0; k < s->n; k++) {
                assert_string_equal(s->v[k].id, t->v[k].id);
                assert_string_equal(s->v[k].model, t->v[k].model);
                assert_string_equal(s->v[k].kind, t->v[k].kind);
                assert_string_equal(s->v[k].name, t->v[k].name);
                assert_true(s->v[k].messages == t->v[k].messages);
                assert_true(s->v[k].members == t->v[k].members);
                s_assert_f64_same(s->v[k].created, t->v[k].created);
            }
            break;
        }
        case K_I64V: {
            const pl_i64v_t *v = x, *w = y;
            assert_int_equal(v->n, w->n);
            for (size_t k = 0; k < v->n; k++)
                assert_true(v->v[k] == w->v[k]);
            break;
        }
        case K_BINV: {
            const pl_binv_t *v = x, *w = y;
            assert_int_equal(v->n, w->n);
            for (size_t k = 0; k < v->n; k++) {
                assert_int_equal(v->v[k].n, w->v[k].n);
                if (v->v[k].n)
                    assert_memory_equal(v->v[k].p, w->v[k].p, v->v[k].n);
            }
            break;
        }
        }
    }
}

/* The state every failed decode must leave: pl_env_init(env, NONE). */
static void
s_assert_env_empty(const pl_env_t *env)
{
    pl_env_t zero;
    memset(&zero, 0, sizeof zero);
    assert_int_equal(env->present, 0);
    assert_int_equal(env->type, PL_MSG_NONE_);
    assert_memory_equal(env, &zero, sizeof zero);
}

/* Decodes from an exact-size heap copy, so ASan sees any read past `len`. */
static int
s_decode_copy(const char *buf, size_t len, pl_env_t *env)
{
    char *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    if (len)
        memcpy(copy, buf, len);
    int rc = pl_env_decode(copy, len, env);
    free(copy);
    return rc;
}

/* Encode, decode, compare; then re-encode: the bytes must be identical. */
static void
s_roundtrip(const pl_env_t *env)
{
    char *buf = NULL, *buf2 = NULL;
    size_t len = 0, len2 = 0;
    assert_int_equal(pl_env_encode(env, &buf, &len), 0);
    assert_non_null(buf);
    assert_true(len > 0);
    pl_env_t out;
    assert_int_equal(s_decode_copy(buf, len, &out), 0);
    s_assert_env_equal(env, &out);
    assert_int_equal(pl_env_encode(&out, &buf2, &len2), 0);
    assert_int_equal(len, len2);
    assert_memory_equal(buf, buf2, len);
    pl_env_reset(&out);
    free(buf);
    free(buf2);
}

static void
s_encode(const pl_env_t *env, char **buf, size_t *len)
{
    assert_int_equal(pl_env_encode(env, buf, len), 0);
    assert_non_null(*buf);
}

/* An envelope of `type` with every required field set. */
static void
s_make_required(pl_env_t *env, pl_msg_t type, uint64_t required, int variant)
{
    pl_env_init(env, type);
    for (int f = 0; f < PL_F_COUNT_; f++)
        if (required & (1ull << f))
            s_fill(env, (pl_field_t) f, variant);
}

/* ---- round trips ---- */

/* The wire form is a contract (captures and replays): pin a few encodings. */
static void
test_golden_bytes(void **state)
{
    (void) state;
    static const struct {
        const char *name;
        const unsigned char bytes[16];
        size_t len;
    } cases[] = {
        {"term, no fields", {0x81, 0x00, PL_MSG_TERM}, 3},
        {"chat conn=5 text=hi", {0x83, 0x00, PL_MSG_CHAT, 0x01, 0x05, 0x06, 0xa2, 'h', 'i'}, 9},
        {"typing flag=false", {0x83, 0x00, PL_MSG_TYPING, 0x01, 0x00, PL_F_FLAG + 1, 0xc2}, 7},
        {"error code=-1", {0x83, 0x00, PL_MSG_ERROR, 0x01, 0x01, PL_F_CODE + 1, 0xff}, 7},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pl_env_t env;
        switch (i) {
        case 0:
            pl_env_init(&env, PL_MSG_TERM);
            break;
        case 1:
            pl_env_init(&env, PL_MSG_CHAT);
            pl_env_set_u64(&env, PL_F_CONN, 5);
            assert_int_equal(pl_env_set_str(&env, PL_F_TEXT, "hi"), 0);
            break;
        case 2:
            pl_env_init(&env, PL_MSG_TYPING);
            pl_env_set_u64(&env, PL_F_CONN, 0);
            pl_env_set_bool(&env, PL_F_FLAG, false);
            break;
        default:
            pl_env_init(&env, PL_MSG_ERROR);
            pl_env_set_u64(&env, PL_F_CONN, 1);
            pl_env_set_i64(&env, PL_F_CODE, -1);
            break;
        }
        char *buf;
        size_t len;
        s_encode(&env, &buf, &len);
        if (len != cases[i].len || memcmp(buf, cases[i].bytes, len) != 0)
            fail_msg("golden bytes differ: %s", cases[i].name);
        s_roundtrip(&env);
        free(buf);
        pl_env_reset(&env);
    }
    /* field numbers are the row order of the table, +1 (0 is the type) */
    assert_int_equal(PL_F_CONN, 0);
    assert_int_equal(PL_F_TEXT, 5);
}

/* Every message type of the table, with exactly its required fields. */
static void
test_roundtrip_every_type(void **state)
{
    (void) state;
    assert_int_equal(N_MSGS, PL_MSG_COUNT_ - 1);
    for (size_t i = 0; i < N_MSGS; i++) {
        assert_int_equal(s_msgs[i].type, (pl_msg_t) (i + 1));
        for (int variant = 0; variant < 2; variant++) {
            pl_env_t env;
            s_make_required(&env, s_msgs[i].type, s_msgs[i].required, variant);
            assert_int_equal(env.present, s_msgs[i].required);
            s_roundtrip(&env);
            pl_env_reset(&env);
        }
    }
}

/* Every message type with every field of the table set (optional fields
   travel too). */
static void
test_roundtrip_all_fields(void **state)
{
    (void) state;
    for (size_t i = 0; i < N_MSGS; i++) {
        for (int variant = 0; variant < 2; variant++) {
            pl_env_t env;
            pl_env_init(&env, s_msgs[i].type);
            for (int f = 0; f < PL_F_COUNT_; f++)
                s_fill(&env, (pl_field_t) f, variant);
            assert_int_equal(env.present, (1ull << PL_F_COUNT_) - 1);
            s_roundtrip(&env);
            pl_env_reset(&env);
        }
    }
}

/* Edge values of each kind, one field at a time, on a TERM (no required). */
typedef struct {
    const char *name;
    pl_field_t field;
    uint64_t u;
    int64_t i;
    double d;
    bool b;
    const char *s;
} value_case_t;

static void
test_roundtrip_values(void **state)
{
    (void) state;
    static const value_case_t cases[] = {
        {"u64 0", PL_F_CONN, .u = 0},
        {"u64 fixint max", PL_F_CONN, .u = 127},
        {"u64 uint8", PL_F_EXCEPT, .u = 128},
        {"u64 uint8 max", PL_F_EXCEPT, .u = 255},
        {"u64 uint16", PL_F_REQ, .u = 256},
        {"u64 uint32", PL_F_REQ, .u = 65536},
        {"u64 uint32 max", PL_F_CONN, .u = UINT32_MAX},
        {"u64 uint64", PL_F_CONN, .u = (uint64_t) UINT32_MAX + 1},
        {"u64 > int64 max", PL_F_CONN, .u = (uint64_t) INT64_MAX + 1},
        {"u64 max", PL_F_CONN, .u = UINT64_MAX},
        {"i64 0", PL_F_SEQ, .i = 0},
        {"i64 -1", PL_F_SEQ, .i = -1},
        {"i64 -32 (fixint)", PL_F_CODE, .i = -32},
        {"i64 -33 (int8)", PL_F_CODE, .i = -33},
        {"i64 -129 (int16)", PL_F_COUNT, .i = -129},
        {"i64 int32 min", PL_F_NUMBER, .i = INT32_MIN},
        {"i64 int32 min - 1", PL_F_NUMBER, .i = (int64_t) INT32_MIN - 1},
        {"i64 min", PL_F_LASTSEQ, .i = INT64_MIN},
        {"i64 max", PL_F_LASTSEQ, .i = INT64_MAX},
        {"i64 positive", PL_F_MAXTOK, .i = 1000000},
        {"f64 0", PL_F_TEMP, .d = 0.0},
        {"f64 -0", PL_F_TEMP, .d = -0.0},
        {"f64 fraction", PL_F_DURATION, .d = 0.21},
        {"f64 negative", PL_F_TS, .d = -1763925000.123456},
        {"f64 tiny", PL_F_TS, .d = DBL_MIN},
        {"f64 denormal", PL_F_TS, .d = 4.9e-324},
        {"f64 huge", PL_F_TS, .d = DBL_MAX},
        {"f64 inf", PL_F_TS, .d = INFINITY},
        {"f64 -inf", PL_F_TS, .d = -INFINITY},
        {"f64 nan", PL_F_TS, .d = NAN},
        {"bool true", PL_F_FLAG, .b = true},
        {"bool false", PL_F_FLAG, .b = false},
        {"str empty", PL_F_TEXT, .s = ""},
        {"str 1", PL_F_TEXT, .s = "x"},
        {"str fixstr max (31)", PL_F_TEXT, .s = "0123456789012345678901234567890"},
        {"str str8 (32)", PL_F_TEXT, .s = "01234567890123456789012345678901"},
        {"str utf-8", PL_F_NAME, .s = "\xc3\xa9t\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80"},
        {"str json-ish raw cid", PL_F_CID, .s = "\"abc\""},
        {"str quotes, newlines, controls", PL_F_SYSTEM, .s = "a\"b\\c\n\r\t\x01\x7f"},
        {"str invalid utf-8 bytes", PL_F_TEXT, .s = "\xff\xfe\x80"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const value_case_t *c = &cases[i];
        pl_env_t env;
        pl_env_init(&env, PL_MSG_TERM);
        switch (s_kind[c->field]) {
        case K_U64:
            pl_env_set_u64(&env, c->field, c->u);
            break;
        case K_I64:
            pl_env_set_i64(&env, c->field, c->i);
            break;
        case K_F64:
            pl_env_set_f64(&env, c->field, c->d);
            break;
        case K_BOOL:
            pl_env_set_bool(&env, c->field, c->b);
            break;
        case K_STR:
            assert_int_equal(pl_env_set_str(&env, c->field, c->s), 0);
            break;
        default:
            fail_msg("bad case %s", c->name);
        }
        s_roundtrip(&env);
        pl_env_reset(&env);
    }

    /* long strings: str16 and str32 headers, 1 MiB of text */
    static const size_t long_lens[] = {255, 256, 65535, 65536, 1u << 20};
    for (size_t i = 0; i < sizeof long_lens / sizeof long_lens[0]; i++) {
        size_t n = long_lens[i];
        char *s = malloc(n + 1);
        assert_non_null(s);
        for (size_t k = 0; k < n; k++)
            s[k] = (char) ('a' + k % 26);
        s[n] = '\0';
        pl_env_t env;
        pl_env_init(&env, PL_MSG_CHAT);
        pl_env_set_u64(&env, PL_F_CONN, 1);
        assert_int_equal(pl_env_set_str(&env, PL_F_TEXT, s), 0);
        s_roundtrip(&env);
        pl_env_reset(&env);
        free(s);
    }

    /* lists: empty, several entries, entries with empty and long strings */
    pl_env_t env;
    pl_env_init(&env, PL_MSG_STATS_REPLY);
    pl_env_set_u64(&env, PL_F_REQ, 9);
    assert_int_equal(pl_env_set_i64v(&env, PL_F_STATS, NULL, 0), 0); /* empty, but present */
    s_roundtrip(&env);
    pl_env_reset(&env);

    pl_env_init(&env, PL_MSG_GENERATE);
    assert_int_equal(pl_env_set_str(&env, PL_F_SESSION, "s1"), 0);
    assert_int_equal(pl_env_set_str(&env, PL_F_RESPID, "r1"), 0);
    env.present |= 1ull << PL_F_HIST; /* an empty, present history */
    s_roundtrip(&env);
    for (int k = 0; k < 50; k++) {
        char id[16], text[40];
        snprintf(id, sizeof id, "m%d", k);
        snprintf(text, sizeof text, "message %d %s", k, k % 2 ? "\xe2\x9c\x93" : "");
        s_add_hist(&env, id, k % 2 ? "assistant" : "user", text, k % 2 ? "" : "c0123456789abcdef", 1e9 + k);
    }
    assert_int_equal(env.hist.n, 50);
    s_roundtrip(&env);
    pl_env_reset(&env);

    pl_env_init(&env, PL_MSG_HTTP_REPLY);
    pl_env_set_u64(&env, PL_F_REQ, 1);
    pl_env_set_i64(&env, PL_F_CODE, 200);
    env.present |= 1ull << PL_F_SESSV; /* empty list */
    s_roundtrip(&env);
    for (int k = 0; k < 20; k++)
        s_add_sess(&env, "s", "m", "shared", k % 2 ? "" : "name", k, -k, k * 0.5);
    s_roundtrip(&env);
    pl_env_reset(&env);
}

/* Decoding refuses an envelope missing any one of its required fields. */
static void
test_missing_required(void **state)
{
    (void) state;
    size_t checked = 0;
    for (size_t i = 0; i < N_MSGS; i++) {
        for (int f = 0; f < PL_F_COUNT_; f++) {
            if (!(s_msgs[i].required & (1ull << f)))
                continue;
            pl_env_t env;
            s_make_required(&env, s_msgs[i].type, s_msgs[i].required & ~(1ull << f), 0);
            /* and every optional field, so the refusal frees a full env */
            for (int g = 0; g < PL_F_COUNT_; g++)
                if (!(s_msgs[i].required & (1ull << g)))
                    s_fill(&env, (pl_field_t) g, 0);
            char *buf;
            size_t len;
            s_encode(&env, &buf, &len);
            pl_env_t out;
            memset(&out, 0xa5, sizeof out); /* decode takes it uninitialised */
            if (s_decode_copy(buf, len, &out) != -PL_E_BAD_FRAME)
                fail_msg("%s without field %d was accepted", s_msgs[i].name, f);
            s_assert_env_empty(&out);
            free(buf);
            pl_env_reset(&env);
            checked++;
        }
    }
    assert_true(checked >= N_MSGS); /* most types have at least one */
}

/* ---- handcrafted msgpack: refusals ---- */

static void
p_str(msgpack_packer *pk, const char *s, size_t n)
{
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static void
p_type(msgpack_packer *pk, uint64_t type)
{
    msgpack_pack_uint8(pk, 0);
    msgpack_pack_uint64(pk, type);
}

static void
p_key(msgpack_packer *pk, pl_field_t f)
{
    msgpack_pack_uint32(pk, (uint32_t) f + 1);
}

static void
p_hist_entry(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 7);
    p_str(pk, "m1", 2);
    p_str(pk, "user", 4);
    p_str(pk, "hi", 2);
    p_str(pk, "c1", 2);
    msgpack_pack_double(pk, 1.5);
    msgpack_pack_int64(pk, 4);
    msgpack_pack_int64(pk, 0);
}

static void
p_sess_entry(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 7);
    p_str(pk, "s1", 2);
    p_str(pk, "echo", 4);
    p_str(pk, "private", 7);
    p_str(pk, "", 0);
    msgpack_pack_int64(pk, 3);
    msgpack_pack_int64(pk, 1);
    msgpack_pack_double(pk, 2.5);
}

/* values, for "TERM with one field of this value" */
// clang-format off
static void v_str(msgpack_packer *pk) { p_str(pk, "x", 1); }
static void v_neg1(msgpack_packer *pk) { msgpack_pack_int64(pk, -1); }
static void v_one(msgpack_packer *pk) { msgpack_pack_uint64(pk, 1); }
static void v_big(msgpack_packer *pk) { msgpack_pack_uint64(pk, (uint64_t) INT64_MAX + 1); }
static void v_f64(msgpack_packer *pk) { msgpack_pack_double(pk, 1.0); }
static void v_f32(msgpack_packer *pk) { msgpack_pack_float(pk, 1.0f); }
static void v_true(msgpack_packer *pk) { msgpack_pack_true(pk); }
static void v_nil(msgpack_packer *pk) { msgpack_pack_nil(pk); }
static void v_bin(msgpack_packer *pk) { msgpack_pack_bin(pk, 2); msgpack_pack_bin_body(pk, "hi", 2); }
static void v_ext(msgpack_packer *pk) { msgpack_pack_ext(pk, 1, 1); msgpack_pack_ext_body(pk, "x", 1); }
static void v_map(msgpack_packer *pk) { msgpack_pack_map(pk, 0); }
static void v_array(msgpack_packer *pk) { msgpack_pack_array(pk, 0); }
static void v_str_nul(msgpack_packer *pk) { p_str(pk, "a\0b", 3); }
static void v_str_nul_only(msgpack_packer *pk) { p_str(pk, "\0", 1); }
static void v_str_nul_end(msgpack_packer *pk) { p_str(pk, "ab\0", 3); }
// clang-format on

/* a history whose 2nd entry has `arity` values, valid as far as they go */
static void
v_hist_arity(msgpack_packer *pk, int arity)
{
    msgpack_pack_array(pk, 2);
    p_hist_entry(pk);
    msgpack_pack_array(pk, (size_t) arity);
    for (int k = 0; k < arity; k++) {
        if (k < 4)
            p_str(pk, "s", 1);
        else if (k == 4)
            msgpack_pack_double(pk, 1.0);
        else if (k < 7)
            msgpack_pack_int64(pk, 1);
        else
            msgpack_pack_nil(pk);
    }
}
// clang-format off
static void v_hist_arity0(msgpack_packer *pk) { v_hist_arity(pk, 0); }
static void v_hist_arity4(msgpack_packer *pk) { v_hist_arity(pk, 4); }
static void v_hist_arity6(msgpack_packer *pk) { v_hist_arity(pk, 6); }
static void v_hist_arity8(msgpack_packer *pk) { v_hist_arity(pk, 8); }
// clang-format on

static void
v_hist_not_array(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 2);
    p_hist_entry(pk);
    p_str(pk, "m2", 2);
}

/* a history whose 2nd entry has a bad value at `pos` */
static void
v_hist_bad_at(msgpack_packer *pk, int pos, void (*bad)(msgpack_packer *))
{
    msgpack_pack_array(pk, 3);
    p_hist_entry(pk);
    msgpack_pack_array(pk, 7);
    for (int k = 0; k < 7; k++) {
        if (k == pos)
            bad(pk);
        else if (k < 4)
            p_str(pk, "ok", 2);
        else if (k == 4)
            msgpack_pack_double(pk, 1.0);
        else
            msgpack_pack_int64(pk, 1);
    }
    p_hist_entry(pk);
}
// clang-format off
static void v_hist_id_int(msgpack_packer *pk) { v_hist_bad_at(pk, 0, v_one); }
static void v_hist_role_nil(msgpack_packer *pk) { v_hist_bad_at(pk, 1, v_nil); }
static void v_hist_text_bin(msgpack_packer *pk) { v_hist_bad_at(pk, 2, v_bin); }
static void v_hist_conn_true(msgpack_packer *pk) { v_hist_bad_at(pk, 3, v_true); }
static void v_hist_ts_int(msgpack_packer *pk) { v_hist_bad_at(pk, 4, v_one); }
static void v_hist_ts_str(msgpack_packer *pk) { v_hist_bad_at(pk, 4, v_str); }
static void v_hist_ord_str(msgpack_packer *pk) { v_hist_bad_at(pk, 5, v_str); }
static void v_hist_finish_dbl(msgpack_packer *pk) { v_hist_bad_at(pk, 6, v_f64); }
static void v_hist_text_nul(msgpack_packer *pk) { v_hist_bad_at(pk, 2, v_str_nul); }
static void v_hist_conn_nul(msgpack_packer *pk) { v_hist_bad_at(pk, 3, v_str_nul_end); }
// clang-format on

static void
v_sess_arity(msgpack_packer *pk, int arity)
{
    msgpack_pack_array(pk, 2);
    p_sess_entry(pk);
    msgpack_pack_array(pk, (size_t) arity);
    for (int k = 0; k < arity; k++) {
        if (k < 4)
            p_str(pk, "s", 1);
        else if (k < 6)
            msgpack_pack_int64(pk, 1);
        else if (k == 6)
            msgpack_pack_double(pk, 1.0);
        else
            msgpack_pack_nil(pk);
    }
}
// clang-format off
static void v_sess_arity5(msgpack_packer *pk) { v_sess_arity(pk, 5); }
static void v_sess_arity6(msgpack_packer *pk) { v_sess_arity(pk, 6); }
static void v_sess_arity8(msgpack_packer *pk) { v_sess_arity(pk, 8); }
// clang-format on

static void
v_sess_bad_at(msgpack_packer *pk, int pos, void (*bad)(msgpack_packer *))
{
    msgpack_pack_array(pk, 2);
    p_sess_entry(pk);
    msgpack_pack_array(pk, 7);
    for (int k = 0; k < 7; k++) {
        if (k == pos)
            bad(pk);
        else if (k < 4)
            p_str(pk, "ok", 2);
        else if (k < 6)
            msgpack_pack_int64(pk, 1);
        else
            msgpack_pack_double(pk, 1.0);
    }
}
// clang-format off
static void v_sess_id_int(msgpack_packer *pk) { v_sess_bad_at(pk, 0, v_one); }
static void v_sess_name_nul(msgpack_packer *pk) { v_sess_bad_at(pk, 3, v_str_nul); }
static void v_sess_messages_str(msgpack_packer *pk) { v_sess_bad_at(pk, 4, v_str); }
static void v_sess_members_big(msgpack_packer *pk) { v_sess_bad_at(pk, 5, v_big); }
static void v_sess_members_f64(msgpack_packer *pk) { v_sess_bad_at(pk, 5, v_f64); }
static void v_sess_created_int(msgpack_packer *pk) { v_sess_bad_at(pk, 6, v_one); }
static void v_sess_not_array(msgpack_packer *pk) { msgpack_pack_array(pk, 1); v_str(pk); }
// clang-format on

static void
v_i64v_bad(msgpack_packer *pk, void (*bad)(msgpack_packer *))
{
    msgpack_pack_array(pk, 3);
    msgpack_pack_int64(pk, 1);
    bad(pk);
    msgpack_pack_int64(pk, -1);
}
// clang-format off
static void v_i64v_str(msgpack_packer *pk) { v_i64v_bad(pk, v_str); }
static void v_i64v_f64(msgpack_packer *pk) { v_i64v_bad(pk, v_f64); }
static void v_i64v_big(msgpack_packer *pk) { v_i64v_bad(pk, v_big); }
static void v_i64v_nil(msgpack_packer *pk) { v_i64v_bad(pk, v_nil); }
static void v_i64v_nested(msgpack_packer *pk) { v_i64v_bad(pk, v_array); }
// clang-format on

/* lists one longer than PL_ENV_LIST_MAX, of valid entries: only the
   length is wrong */
static void
v_hist_too_long(msgpack_packer *pk)
{
    msgpack_pack_array(pk, PL_ENV_LIST_MAX + 1);
    for (size_t k = 0; k < PL_ENV_LIST_MAX + 1; k++)
        p_hist_entry(pk);
}

static void
v_sess_too_long(msgpack_packer *pk)
{
    msgpack_pack_array(pk, PL_ENV_LIST_MAX + 1);
    for (size_t k = 0; k < PL_ENV_LIST_MAX + 1; k++)
        p_sess_entry(pk);
}

static void
v_i64v_too_long(msgpack_packer *pk)
{
    msgpack_pack_array(pk, PL_ENV_LIST_MAX + 1);
    for (size_t k = 0; k < PL_ENV_LIST_MAX + 1; k++)
        msgpack_pack_int64(pk, (int64_t) k);
}

/* deeper than any unpacker stack */
static void
v_deep(msgpack_packer *pk)
{
    for (int k = 0; k < 2000; k++)
        msgpack_pack_array(pk, 1);
    msgpack_pack_nil(pk);
}

/* whole maps */
// clang-format off
static void w_array(msgpack_packer *pk) { msgpack_pack_array(pk, 2); p_type(pk, PL_MSG_TERM); }
static void w_int(msgpack_packer *pk) { msgpack_pack_uint8(pk, PL_MSG_TERM); }
static void w_string(msgpack_packer *pk) { p_str(pk, "term", 4); }
static void w_nil(msgpack_packer *pk) { msgpack_pack_nil(pk); }
static void w_empty_map(msgpack_packer *pk) { msgpack_pack_map(pk, 0); }
static void w_deep(msgpack_packer *pk) { v_deep(pk); }
// clang-format on

static void
w_string_key(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 2);
    p_type(pk, PL_MSG_TERM);
    p_str(pk, "conn", 4);
    msgpack_pack_uint64(pk, 1);
}

static void
w_string_key_type(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 1);
    p_str(pk, "type", 4);
    msgpack_pack_uint64(pk, PL_MSG_TERM);
}

static void
w_negative_key(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 2);
    p_type(pk, PL_MSG_TERM);
    msgpack_pack_int64(pk, -1);
    msgpack_pack_uint64(pk, 1);
}

static void
w_float_key(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 2);
    p_type(pk, PL_MSG_TERM);
    msgpack_pack_double(pk, 1.0);
    msgpack_pack_uint64(pk, 1);
}

static void
w_nil_key(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 2);
    p_type(pk, PL_MSG_TERM);
    msgpack_pack_nil(pk);
    msgpack_pack_uint64(pk, 1);
}

static void
w_unknown_field(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 2);
    p_type(pk, PL_MSG_TERM);
    msgpack_pack_uint32(pk, PL_F_COUNT_ + 1);
    msgpack_pack_uint64(pk, 1);
}

static void
w_unknown_field_huge(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 2);
    p_type(pk, PL_MSG_TERM);
    msgpack_pack_uint64(pk, (1ull << 40) + 1);
    msgpack_pack_uint64(pk, 1);
}

static void
w_unknown_field_64(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 2);
    p_type(pk, PL_MSG_TERM);
    msgpack_pack_uint64(pk, 65); /* 1ull << 64 would be UB if not checked */
    msgpack_pack_uint64(pk, 1);
}

static void
w_type0(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 1);
    p_type(pk, 0);
}

static void
w_type_count(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 1);
    p_type(pk, PL_MSG_COUNT_);
}

static void
w_type_huge(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 1);
    p_type(pk, UINT64_MAX);
}

static void
w_type_negative(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 1);
    msgpack_pack_uint8(pk, 0);
    msgpack_pack_int64(pk, -(int64_t) PL_MSG_TERM);
}

static void
w_type_string(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 1);
    msgpack_pack_uint8(pk, 0);
    p_str(pk, "term", 4);
}

static void
w_type_float(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 1);
    msgpack_pack_uint8(pk, 0);
    msgpack_pack_double(pk, PL_MSG_TERM);
}

static void
w_type_nil(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 1);
    msgpack_pack_uint8(pk, 0);
    msgpack_pack_nil(pk);
}

static void
w_missing_type(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 2);
    p_key(pk, PL_F_CONN);
    msgpack_pack_uint64(pk, 1);
    p_key(pk, PL_F_TEXT);
    p_str(pk, "hi", 2);
}

static void
w_duplicate_type(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 2);
    p_type(pk, PL_MSG_TERM);
    p_type(pk, PL_MSG_TERM);
}

static void
w_duplicate_type_other(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 3);
    p_type(pk, PL_MSG_TERM);
    p_key(pk, PL_F_CONN);
    msgpack_pack_uint64(pk, 1);
    p_type(pk, PL_MSG_CONN_OPEN);
}

static void
w_duplicate_field(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 3);
    p_type(pk, PL_MSG_TERM);
    p_key(pk, PL_F_CONN);
    msgpack_pack_uint64(pk, 1);
    p_key(pk, PL_F_CONN);
    msgpack_pack_uint64(pk, 2);
}

static void
w_duplicate_str_field(msgpack_packer *pk) /* the first copy must be freed */
{
    msgpack_pack_map(pk, 3);
    p_type(pk, PL_MSG_TERM);
    p_key(pk, PL_F_TEXT);
    p_str(pk, "first", 5);
    p_key(pk, PL_F_TEXT);
    p_str(pk, "second", 6);
}

static void
w_duplicate_hist_field(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 3);
    p_type(pk, PL_MSG_TERM);
    p_key(pk, PL_F_HIST);
    msgpack_pack_array(pk, 1);
    p_hist_entry(pk);
    p_key(pk, PL_F_HIST);
    msgpack_pack_array(pk, 1);
    p_hist_entry(pk);
}

static void
w_chat_without_text(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 3);
    p_type(pk, PL_MSG_CHAT);
    p_key(pk, PL_F_CONN);
    msgpack_pack_uint64(pk, 1);
    p_key(pk, PL_F_SESSION);
    p_str(pk, "s1", 2);
}

static void
w_chat_text_nil(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 3);
    p_type(pk, PL_MSG_CHAT);
    p_key(pk, PL_F_CONN);
    msgpack_pack_uint64(pk, 1);
    p_key(pk, PL_F_TEXT);
    msgpack_pack_nil(pk);
}

/* every field allocated, then a bad one last: all must be freed */
static void
w_full_then_bad(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 6);
    p_type(pk, PL_MSG_GENERATE);
    p_key(pk, PL_F_SESSION);
    p_str(pk, "s1", 2);
    p_key(pk, PL_F_HIST);
    msgpack_pack_array(pk, 2);
    p_hist_entry(pk);
    p_hist_entry(pk);
    p_key(pk, PL_F_SESSV);
    msgpack_pack_array(pk, 1);
    p_sess_entry(pk);
    p_key(pk, PL_F_STATS);
    msgpack_pack_array(pk, 2);
    msgpack_pack_int64(pk, 1);
    msgpack_pack_int64(pk, 2);
    p_key(pk, PL_F_RESPID);
    msgpack_pack_uint64(pk, 7); /* not a string */
}

typedef struct {
    const char *name;
    void (*whole)(msgpack_packer *pk); /* the whole buffer, or: */
    pl_field_t field;                  /* TERM + this field ... */
    void (*value)(msgpack_packer *pk); /* ... with this value */
} bad_case_t;

static const bad_case_t s_bad[] = {
    /* top level */
    {"top level array", w_array},
    {"top level int", w_int},
    {"top level string", w_string},
    {"top level nil", w_nil},
    {"top level deeply nested", w_deep},
    {"empty map (no type)", w_empty_map},
    /* keys */
    {"string key", w_string_key},
    {"string key \"type\"", w_string_key_type},
    {"negative key", w_negative_key},
    {"float key", w_float_key},
    {"nil key", w_nil_key},
    {"unknown field number", w_unknown_field},
    {"unknown field number 65", w_unknown_field_64},
    {"unknown field number 2^40+1", w_unknown_field_huge},
    /* type */
    {"type 0", w_type0},
    {"type PL_MSG_COUNT_", w_type_count},
    {"type UINT64_MAX", w_type_huge},
    {"type negative", w_type_negative},
    {"type string", w_type_string},
    {"type float", w_type_float},
    {"type nil", w_type_nil},
    {"missing type", w_missing_type},
    {"duplicate type", w_duplicate_type},
    {"duplicate type, other value", w_duplicate_type_other},
    /* fields */
    {"duplicate field", w_duplicate_field},
    {"duplicate string field", w_duplicate_str_field},
    {"duplicate history field", w_duplicate_hist_field},
    {"chat without text", w_chat_without_text},
    {"chat with nil text", w_chat_text_nil},
    {"allocated fields then a bad one", w_full_then_bad},
    /* U64 */
    {"u64 <- string", NULL, PL_F_CONN, v_str},
    {"u64 <- negative int", NULL, PL_F_CONN, v_neg1},
    {"u64 <- f64", NULL, PL_F_EXCEPT, v_f64},
    {"u64 <- f32", NULL, PL_F_EXCEPT, v_f32},
    {"u64 <- bool", NULL, PL_F_REQ, v_true},
    {"u64 <- nil", NULL, PL_F_REQ, v_nil},
    {"u64 <- array", NULL, PL_F_CONN, v_array},
    /* I64 */
    {"i64 <- string", NULL, PL_F_SEQ, v_str},
    {"i64 <- u64 > INT64_MAX", NULL, PL_F_SEQ, v_big},
    {"i64 <- f64", NULL, PL_F_CODE, v_f64},
    {"i64 <- bool", NULL, PL_F_COUNT, v_true},
    {"i64 <- nil", NULL, PL_F_FINISH, v_nil},
    {"i64 <- map", NULL, PL_F_MAXTOK, v_map},
    /* F64 */
    {"f64 <- positive int", NULL, PL_F_TEMP, v_one},
    {"f64 <- negative int", NULL, PL_F_TEMP, v_neg1},
    {"f64 <- string", NULL, PL_F_DURATION, v_str},
    {"f64 <- nil", NULL, PL_F_TS, v_nil},
    {"f64 <- bool", NULL, PL_F_TS, v_true},
    /* BOOL */
    {"bool <- int 1", NULL, PL_F_FLAG, v_one},
    {"bool <- nil", NULL, PL_F_FLAG, v_nil},
    {"bool <- string", NULL, PL_F_FLAG, v_str},
    /* STR */
    {"str <- int", NULL, PL_F_TEXT, v_one},
    {"str <- bin", NULL, PL_F_TEXT, v_bin},
    {"str <- ext", NULL, PL_F_TEXT, v_ext},
    {"str <- nil", NULL, PL_F_SESSION, v_nil},
    {"str <- array", NULL, PL_F_CID, v_array},
    {"str with a NUL byte inside", NULL, PL_F_TEXT, v_str_nul},
    {"str that is one NUL byte", NULL, PL_F_SESSION, v_str_nul_only},
    {"str with a trailing NUL", NULL, PL_F_MODEL, v_str_nul_end},
    /* HIST */
    {"hist <- map", NULL, PL_F_HIST, v_map},
    {"hist <- string", NULL, PL_F_HIST, v_str},
    {"hist <- nil", NULL, PL_F_HIST, v_nil},
    {"hist entry arity 0", NULL, PL_F_HIST, v_hist_arity0},
    {"hist entry arity 4", NULL, PL_F_HIST, v_hist_arity4},
    {"hist entry arity 6", NULL, PL_F_HIST, v_hist_arity6},
    {"hist entry arity 8", NULL, PL_F_HIST, v_hist_arity8},
    {"hist entry not an array", NULL, PL_F_HIST, v_hist_not_array},
    {"hist entry id int", NULL, PL_F_HIST, v_hist_id_int},
    {"hist entry role nil", NULL, PL_F_HIST, v_hist_role_nil},
    {"hist entry text bin", NULL, PL_F_HIST, v_hist_text_bin},
    {"hist entry conn bool", NULL, PL_F_HIST, v_hist_conn_true},
    {"hist entry ts int", NULL, PL_F_HIST, v_hist_ts_int},
    {"hist entry ts string", NULL, PL_F_HIST, v_hist_ts_str},
    {"hist entry ord string", NULL, PL_F_HIST, v_hist_ord_str},
    {"hist entry finish float", NULL, PL_F_HIST, v_hist_finish_dbl},
    {"hist entry text with NUL", NULL, PL_F_HIST, v_hist_text_nul},
    {"hist entry conn with NUL", NULL, PL_F_HIST, v_hist_conn_nul},
    {"hist longer than PL_ENV_LIST_MAX", NULL, PL_F_HIST, v_hist_too_long},
    {"hist deeply nested", NULL, PL_F_HIST, v_deep},
    /* SESSV */
    {"sessv <- map", NULL, PL_F_SESSV, v_map},
    {"sessv <- int", NULL, PL_F_SESSV, v_one},
    {"sessv entry arity 5", NULL, PL_F_SESSV, v_sess_arity5},
    {"sessv entry arity 6", NULL, PL_F_SESSV, v_sess_arity6},
    {"sessv entry arity 8", NULL, PL_F_SESSV, v_sess_arity8},
    {"sessv entry not an array", NULL, PL_F_SESSV, v_sess_not_array},
    {"sessv entry id int", NULL, PL_F_SESSV, v_sess_id_int},
    {"sessv entry name with NUL", NULL, PL_F_SESSV, v_sess_name_nul},
    {"sessv entry messages string", NULL, PL_F_SESSV, v_sess_messages_str},
    {"sessv entry members > INT64_MAX", NULL, PL_F_SESSV, v_sess_members_big},
    {"sessv entry members f64", NULL, PL_F_SESSV, v_sess_members_f64},
    {"sessv entry created int", NULL, PL_F_SESSV, v_sess_created_int},
    {"sessv longer than PL_ENV_LIST_MAX", NULL, PL_F_SESSV, v_sess_too_long},
    /* I64V */
    {"i64v <- map", NULL, PL_F_STATS, v_map},
    {"i64v <- int", NULL, PL_F_STATS, v_one},
    {"i64v entry string", NULL, PL_F_STATS, v_i64v_str},
    {"i64v entry f64", NULL, PL_F_STATS, v_i64v_f64},
    {"i64v entry > INT64_MAX", NULL, PL_F_STATS, v_i64v_big},
    {"i64v entry nil", NULL, PL_F_STATS, v_i64v_nil},
    {"i64v entry array", NULL, PL_F_STATS, v_i64v_nested},
    {"i64v longer than PL_ENV_LIST_MAX", NULL, PL_F_STATS, v_i64v_too_long},
};

static void
s_pack_case(msgpack_packer *pk, const bad_case_t *c)
{
    if (c->whole) {
        c->whole(pk);
        return;
    }
    msgpack_pack_map(pk, 2);
    p_type(pk, PL_MSG_TERM);
    p_key(pk, c->field);
    c->value(pk);
}

static void
test_decode_malformed(void **state)
{
    (void) state;
    for (size_t i = 0; i < sizeof s_bad / sizeof s_bad[0]; i++) {
        msgpack_sbuffer sbuf;
        msgpack_packer pk;
        msgpack_sbuffer_init(&sbuf);
        msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
        s_pack_case(&pk, &s_bad[i]);
        pl_env_t env;
        memset(&env, 0x5a, sizeof env);
        int rc = s_decode_copy(sbuf.data, sbuf.size, &env);
        if (rc != -PL_E_BAD_FRAME)
            fail_msg("%s: decode returned %d, want %d", s_bad[i].name, rc, -PL_E_BAD_FRAME);
        s_assert_env_empty(&env);
        pl_env_reset(&env); /* harmless on an empty env */
        msgpack_sbuffer_destroy(&sbuf);
    }
}

/* The same TERM-with-one-field shape is accepted with the right values,
   including any integer width and a float32 for F64. */
// clang-format off
static void v_u8(msgpack_packer *pk) { msgpack_pack_uint8(pk, 7); }
static void v_u64w(msgpack_packer *pk) { msgpack_pack_uint64(pk, UINT64_MAX); }
static void v_i8(msgpack_packer *pk) { msgpack_pack_int8(pk, -7); }
static void v_i64pos(msgpack_packer *pk) { msgpack_pack_int64(pk, 5); }
static void v_i64min(msgpack_packer *pk) { msgpack_pack_int64(pk, INT64_MIN); }
static void v_i64max(msgpack_packer *pk) { msgpack_pack_uint64(pk, INT64_MAX); }
static void v_false(msgpack_packer *pk) { msgpack_pack_false(pk); }
static void v_str_empty(msgpack_packer *pk) { p_str(pk, "", 0); }
// clang-format on
static void
v_hist_ts_f32(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 1);
    msgpack_pack_array(pk, 7);
    for (int k = 0; k < 4; k++)
        p_str(pk, "", 0);
    msgpack_pack_float(pk, 0.5f);
    msgpack_pack_int64(pk, 2);
    msgpack_pack_int64(pk, 0);
}
// clang-format off
static void v_hist_empty(msgpack_packer *pk) { msgpack_pack_array(pk, 0); }
// clang-format on

static void
w_fields_before_type(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 3);
    p_key(pk, PL_F_TEXT);
    p_str(pk, "hi", 2);
    p_key(pk, PL_F_CONN);
    msgpack_pack_uint64(pk, 1);
    p_type(pk, PL_MSG_CHAT);
}

static void
w_wide_keys(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 2);
    msgpack_pack_uint64(pk, 0);
    msgpack_pack_uint16(pk, PL_MSG_TERM);
    msgpack_pack_uint64(pk, PL_F_COUNT_); /* the last field number */
    assert_int_equal(s_kind[PL_F_COUNT_ - 1], K_I64);
    msgpack_pack_int64(pk, 1);
}

static const bad_case_t s_good[] = {
    {"fields before the type", w_fields_before_type},
    {"wide keys, last field number", w_wide_keys},
    {"u64 <- uint8", NULL, PL_F_CONN, v_u8},
    {"u64 <- uint64 max", NULL, PL_F_CONN, v_u64w},
    {"i64 <- int8", NULL, PL_F_SEQ, v_i8},
    {"i64 <- positive int64", NULL, PL_F_SEQ, v_i64pos},
    {"i64 <- INT64_MIN", NULL, PL_F_SEQ, v_i64min},
    {"i64 <- INT64_MAX", NULL, PL_F_SEQ, v_i64max},
    {"f64 <- f32", NULL, PL_F_TEMP, v_f32},
    {"bool <- false", NULL, PL_F_FLAG, v_false},
    {"str <- empty", NULL, PL_F_TEXT, v_str_empty},
    {"hist ts <- f32", NULL, PL_F_HIST, v_hist_ts_f32},
    {"hist <- empty", NULL, PL_F_HIST, v_hist_empty},
};

static void
test_decode_handcrafted_valid(void **state)
{
    (void) state;
    for (size_t i = 0; i < sizeof s_good / sizeof s_good[0]; i++) {
        msgpack_sbuffer sbuf;
        msgpack_packer pk;
        msgpack_sbuffer_init(&sbuf);
        msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
        s_pack_case(&pk, &s_good[i]);
        pl_env_t env;
        int rc = s_decode_copy(sbuf.data, sbuf.size, &env);
        if (rc != 0)
            fail_msg("%s: decode returned %d", s_good[i].name, rc);
        if (!s_good[i].whole)
            assert_true(pl_env_has(&env, s_good[i].field));
        pl_env_reset(&env);
        msgpack_sbuffer_destroy(&sbuf);
    }
    /* spot-check values */
    pl_env_t env;
    msgpack_sbuffer sbuf;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sbuf);
    msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
    s_pack_case(&pk, &s_good[0]);
    assert_int_equal(s_decode_copy(sbuf.data, sbuf.size, &env), 0);
    assert_int_equal(env.type, PL_MSG_CHAT);
    assert_int_equal(env.conn, 1);
    assert_string_equal(env.text, "hi");
    assert_int_equal(env.present, (1ull << PL_F_TEXT) | (1ull << PL_F_CONN));
    pl_env_reset(&env);
    msgpack_sbuffer_destroy(&sbuf);
}

static void
test_decode_null_and_empty(void **state)
{
    (void) state;
    pl_env_t env;
    char one = (char) 0x80; /* the msgpack empty map {} */
    memset(&env, 0x11, sizeof env);
    assert_int_equal(pl_env_decode(NULL, 0, &env), -PL_E_BAD_FRAME);
    s_assert_env_empty(&env);
    memset(&env, 0x11, sizeof env);
    assert_int_equal(pl_env_decode(NULL, 10, &env), -PL_E_BAD_FRAME);
    s_assert_env_empty(&env);
    memset(&env, 0x11, sizeof env);
    assert_int_equal(pl_env_decode(&one, 0, &env), -PL_E_BAD_FRAME);
    s_assert_env_empty(&env);
    memset(&env, 0x11, sizeof env);
    assert_int_equal(pl_env_decode("", 0, &env), -PL_E_BAD_FRAME);
    s_assert_env_empty(&env);
    memset(&env, 0x11, sizeof env);
    assert_int_equal(s_decode_copy(&one, 1, &env), -PL_E_BAD_FRAME); /* {} has no type */
    s_assert_env_empty(&env);
    /* reserved, never-used msgpack byte */
    char c1 = (char) 0xc1;
    assert_int_equal(s_decode_copy(&c1, 1, &env), -PL_E_BAD_FRAME);
    s_assert_env_empty(&env);
}

/* A full envelope; the decoder refuses every strict prefix of it. */
static void
test_decode_truncated_everywhere(void **state)
{
    (void) state;
    pl_env_t env;
    pl_env_init(&env, PL_MSG_GENERATE);
    for (int f = 0; f < PL_F_COUNT_; f++)
        s_fill(&env, (pl_field_t) f, 0);
    char *buf;
    size_t len;
    s_encode(&env, &buf, &len);
    assert_true(len > 100);
    for (size_t cut = 0; cut < len; cut++) {
        pl_env_t out;
        memset(&out, 0x77, sizeof out);
        int rc = s_decode_copy(buf, cut, &out);
        if (rc != -PL_E_BAD_FRAME)
            fail_msg("prefix of %zu/%zu bytes: rc %d", cut, len, rc);
        s_assert_env_empty(&out);
    }
    pl_env_t out;
    assert_int_equal(s_decode_copy(buf, len, &out), 0);
    s_assert_env_equal(&env, &out);
    pl_env_reset(&out);
    free(buf);
    pl_env_reset(&env);
}

static void
test_decode_trailing_bytes(void **state)
{
    (void) state;
    pl_env_t env;
    pl_env_init(&env, PL_MSG_CHAT);
    pl_env_set_u64(&env, PL_F_CONN, 3);
    assert_int_equal(pl_env_set_str(&env, PL_F_TEXT, "hello"), 0);
    char *buf;
    size_t len;
    s_encode(&env, &buf, &len);
    static const struct {
        const char *name;
        const char *tail;
        size_t n;
    } tails[] = {
        {"one nil", "\xc0", 1},    {"one zero byte", "\0", 1},        {"a second envelope", NULL, 0},
        {"garbage", "garbage", 7}, {"partial second map", "\x81", 1},
    };
    for (size_t i = 0; i < sizeof tails / sizeof tails[0]; i++) {
        const char *tail = tails[i].tail ? tails[i].tail : buf;
        size_t n = tails[i].tail ? tails[i].n : len;
        char *both = malloc(len + n);
        assert_non_null(both);
        memcpy(both, buf, len);
        memcpy(both + len, tail, n);
        pl_env_t out;
        memset(&out, 0x33, sizeof out);
        if (pl_env_decode(both, len + n, &out) != -PL_E_BAD_FRAME)
            fail_msg("trailing %s was accepted", tails[i].name);
        s_assert_env_empty(&out);
        free(both);
    }
    free(buf);
    pl_env_reset(&env);
}

/* Containers declaring more elements than there are bytes left are refused
   before msgpack-c sees them: it allocates what a header declares, so these
   few bytes asked for up to 256 GiB (found by fuzz/envelope; under ASan the
   allocation itself aborts). */
static void
test_decode_declared_counts(void **state)
{
    (void) state;
    const char stats = (char) PL_MSG_STATS_REPLY, field = (char) (PL_F_STATS + 1);
    const char hist = (char) (PL_F_HIST + 1), term = (char) PL_MSG_TERM;
    const struct {
        const char *name;
        char in[16];
        size_t n;
    } cases[] = {
        {"map32 of 2^32-1", {'\xdf', '\xff', '\xff', '\xff', '\xff', 0, 1}, 7},
        {"map16 of 65535", {'\xde', '\xff', '\xff', 0, 1}, 5},
        {"array32 of 2^32-1", {'\x82', 0, stats, field, '\xdd', '\xff', '\xff', '\xff', '\xff', 1, 2}, 11},
        {"array16 of 65535", {'\x82', 0, stats, field, '\xdc', '\xff', '\xff', 1}, 8},
        {"fixarray of 15, 2 there", {'\x82', 0, stats, field, '\x9f', 1, 2}, 7},
        {"nested array32", {'\x82', 0, term, hist, '\x91', '\xdd', '\x7f', '\xff', '\xff', '\xff', 0}, 11},
        {"map of 2 entries, 1 there", {'\x82', 0, term}, 3},
        {"str32 past the end", {'\x82', 0, term, hist, '\xdb', '\xff', '\xff', '\xff', '\xff', 'x'}, 10},
        {"bin32 past the end", {'\x82', 0, term, hist, '\xc6', '\xff', '\xff', '\xff', '\xff', 'x'}, 10},
        {"ext32 past the end", {'\x82', 0, term, hist, '\xc9', '\xff', '\xff', '\xff', '\xff', 1, 'x'}, 11},
        {"reserved 0xc1", {'\x82', 0, term, hist, '\xc1'}, 5},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pl_env_t out;
        memset(&out, 0x55, sizeof out);
        if (s_decode_copy(cases[i].in, cases[i].n, &out) != -PL_E_BAD_FRAME)
            fail_msg("%s was accepted", cases[i].name);
        s_assert_env_empty(&out);
    }
}

/* Over PL_ENV_MAX bytes is refused before parsing; exactly PL_ENV_LIST_MAX
   entries is fine. */
static void
test_decode_limits(void **state)
{
    (void) state;
    size_t n = PL_ENV_MAX;
    char *big = malloc(n + 1);
    assert_non_null(big);
    memset(big, 'x', n);
    big[n] = '\0';
    pl_env_t env;
    pl_env_init(&env, PL_MSG_CHAT);
    pl_env_set_u64(&env, PL_F_CONN, 1);
    assert_int_equal(pl_env_set_str(&env, PL_F_TEXT, big), 0);
    free(big);
    char *buf;
    size_t len;
    s_encode(&env, &buf, &len);
    pl_env_reset(&env);
    assert_true(len > PL_ENV_MAX);
    pl_env_t out;
    assert_int_equal(pl_env_decode(buf, len, &out), -PL_E_BAD_FRAME);
    s_assert_env_empty(&out);
    free(buf);

    int64_t *v = calloc(PL_ENV_LIST_MAX, sizeof *v);
    assert_non_null(v);
    for (size_t i = 0; i < PL_ENV_LIST_MAX; i++)
        v[i] = (int64_t) i - 50000;
    pl_env_init(&env, PL_MSG_STATS_REPLY);
    pl_env_set_u64(&env, PL_F_REQ, 1);
    assert_int_equal(pl_env_set_i64v(&env, PL_F_STATS, v, PL_ENV_LIST_MAX), 0);
    free(v);
    s_roundtrip(&env);
    pl_env_reset(&env);
}

/* ---- copy, setters, reset, names ---- */

static void
test_copy_is_deep(void **state)
{
    (void) state;
    pl_env_t src, want, dst;
    pl_env_init(&src, PL_MSG_GENERATE);
    for (int f = 0; f < PL_F_COUNT_; f++)
        s_fill(&src, (pl_field_t) f, 0);
    assert_int_equal(pl_env_copy(&want, &src), 0);
    memset(&dst, 0xee, sizeof dst); /* copy takes dst uninitialised */
    assert_int_equal(pl_env_copy(&dst, &src), 0);
    s_assert_env_equal(&src, &dst);

    /* no pointer is shared */
    assert_ptr_not_equal(dst.text, src.text);
    assert_ptr_not_equal(dst.hist.v, src.hist.v);
    assert_ptr_not_equal(dst.hist.v[0].text, src.hist.v[0].text);
    assert_ptr_not_equal(dst.sessv.v, src.sessv.v);
    assert_ptr_not_equal(dst.sessv.v[1].name, src.sessv.v[1].name);
    assert_ptr_not_equal(dst.stats.v, src.stats.v);

    /* change everything in the source */
    src.type = PL_MSG_TERM;
    pl_env_set_u64(&src, PL_F_CONN, 999);
    pl_env_set_i64(&src, PL_F_SEQ, 999);
    pl_env_set_f64(&src, PL_F_TEMP, 9.99);
    pl_env_set_bool(&src, PL_F_FLAG, !src.flag);
    assert_int_equal(pl_env_set_str(&src, PL_F_TEXT, "changed"), 0);
    src.session[0] = 'X';
    src.hist.v[0].text[0] = 'X';
    free(src.hist.v[1].role);
    src.hist.v[1].role = s_xstrdup("changed");
    src.hist.v[2].ts = -1;
    s_add_hist(&src, "m9", "user", "more", "", 9);
    src.sessv.v[0].id[0] = 'X';
    src.sessv.v[1].members = 42;
    src.stats.v[0] = 12345;
    assert_int_equal(pl_env_set_i64v(&src, PL_F_STATS, NULL, 0), 0);
    src.present &= ~(1ull << PL_F_MODEL);

    /* the copy is what the source was */
    s_assert_env_equal(&want, &dst);
    assert_int_equal(dst.type, PL_MSG_GENERATE);
    assert_int_equal(dst.hist.n, 3);
    assert_true(pl_env_has(&dst, PL_F_MODEL));

    /* and changing the copy leaves the first copy alone */
    dst.text[0] = 'Y';
    assert_int_equal(pl_env_set_str(&dst, PL_F_SESSION, "other"), 0);
    assert_string_not_equal(want.text, dst.text);
    assert_string_not_equal(want.session, dst.session);

    pl_env_reset(&src);
    pl_env_reset(&want);
    pl_env_reset(&dst);
}

/* A copy need not be complete: required fields may still be missing. */
static void
test_copy_partial_and_empty(void **state)
{
    (void) state;
    for (size_t i = 0; i < N_MSGS; i++) {
        pl_env_t src, dst;
        pl_env_init(&src, s_msgs[i].type); /* no fields at all */
        memset(&dst, 0xcc, sizeof dst);
        assert_int_equal(pl_env_copy(&dst, &src), 0);
        assert_int_equal(dst.type, s_msgs[i].type);
        assert_int_equal(dst.present, 0);
        pl_env_reset(&dst);

        assert_int_equal(pl_env_set_str(&src, PL_F_TEXT, "only text"), 0);
        assert_int_equal(pl_env_copy(&dst, &src), 0);
        s_assert_env_equal(&src, &dst);
        pl_env_reset(&dst);
        pl_env_reset(&src);
    }
}

static void
test_set_str_replace(void **state)
{
    (void) state;
    pl_env_t env;
    pl_env_init(&env, PL_MSG_CHAT);
    assert_false(pl_env_has(&env, PL_F_TEXT));
    assert_int_equal(pl_env_set_str(&env, PL_F_TEXT, "first"), 0);
    assert_true(pl_env_has(&env, PL_F_TEXT));
    assert_int_equal(pl_env_set_str(&env, PL_F_TEXT, "second, longer than the first"), 0);
    assert_string_equal(env.text, "second, longer than the first");
    assert_int_equal(pl_env_set_str(&env, PL_F_TEXT, NULL), 0); /* NULL -> "" */
    assert_non_null(env.text);
    assert_string_equal(env.text, "");
    assert_int_equal(pl_env_set_strn(&env, PL_F_TEXT, "abcdef", 3), 0);
    assert_string_equal(env.text, "abc");
    assert_int_equal(pl_env_set_strn(&env, PL_F_TEXT, NULL, 5), 0);
    assert_string_equal(env.text, "");
    /* replacing with its own value (aliasing) */
    assert_int_equal(pl_env_set_str(&env, PL_F_TEXT, "self"), 0);
    assert_int_equal(pl_env_set_str(&env, PL_F_TEXT, env.text), 0);
    assert_string_equal(env.text, "self");
    for (int k = 0; k < 100; k++)
        assert_int_equal(pl_env_set_str(&env, k % 2 ? PL_F_CID : PL_F_SESSION, "again and again"), 0);
    assert_int_equal(env.present, (1ull << PL_F_TEXT) | (1ull << PL_F_SESSION) | (1ull << PL_F_CID));
    /* stats replaced, too */
    int64_t a[] = {1, 2, 3}, b[] = {4};
    assert_int_equal(pl_env_set_i64v(&env, PL_F_STATS, a, 3), 0);
    assert_int_equal(pl_env_set_i64v(&env, PL_F_STATS, b, 1), 0);
    assert_int_equal(env.stats.n, 1);
    assert_true(env.stats.v[0] == 4);
    pl_env_reset(&env); /* LeakSanitizer checks the replaced strings were freed */
    assert_int_equal(env.type, PL_MSG_CHAT);
    assert_int_equal(env.present, 0);
    assert_null(env.text);
}

static void
test_reset(void **state)
{
    (void) state;
    pl_env_t env;
    pl_env_init(&env, PL_MSG_STATS_REPLY);
    assert_int_equal(env.type, PL_MSG_STATS_REPLY);
    assert_int_equal(env.present, 0);
    for (int f = 0; f < PL_F_COUNT_; f++)
        s_fill(&env, (pl_field_t) f, 0);
    pl_env_reset(&env);
    assert_int_equal(env.type, PL_MSG_STATS_REPLY); /* kept */
    assert_int_equal(env.present, 0);
    assert_null(env.hist.v);
    assert_int_equal(env.hist.n, 0);
    assert_null(env.sessv.v);
    assert_null(env.stats.v);
    pl_env_reset(&env); /* twice is fine */
}

static void
test_names(void **state)
{
    (void) state;
    for (size_t i = 0; i < N_MSGS; i++)
        assert_string_equal(pl_msg_name(s_msgs[i].type), s_msgs[i].name);
    assert_string_equal(pl_msg_name(PL_MSG_CHAT), "chat");
    assert_string_equal(pl_msg_name(PL_MSG_STATS_REPLY), "stats_reply");
    assert_string_equal(pl_msg_name(PL_MSG_NONE_), "none");
    assert_string_equal(pl_msg_name(PL_MSG_COUNT_), "invalid");
    assert_string_equal(pl_msg_name((pl_msg_t) 1000), "invalid");
    assert_string_equal(pl_msg_name((pl_msg_t) -1), "invalid");

    static const struct {
        int64_t finish;
        const char *name;
    } finishes[] = {
        {PL_FINISH_STOP, "stop"},   {PL_FINISH_LENGTH, "length"}, {PL_FINISH_CANCELLED, "cancelled"},
        {PL_FINISH_ERROR, "error"}, {PL_FINISH_COUNT_, "error"},  {-1, "error"},
        {INT64_MIN, "error"},       {INT64_MAX, "error"},
    };
    for (size_t i = 0; i < sizeof finishes / sizeof finishes[0]; i++)
        assert_string_equal(pl_finish_name(finishes[i].finish), finishes[i].name);

    static const struct {
        pl_stat_t stat;
        const char *path;
    } stats[] = {
#define X(id, path) {PL_STAT_##id, path},
        PL_STATS(X)
#undef X
    };
    assert_int_equal(sizeof stats / sizeof stats[0], PL_STAT_COUNT_);
    for (size_t i = 0; i < sizeof stats / sizeof stats[0]; i++) {
        assert_string_equal(pl_stat_path(stats[i].stat), stats[i].path);
        assert_non_null(strchr(stats[i].path, '.')); /* "group.counter" */
    }
    assert_string_equal(pl_stat_path(PL_STAT_SESSIONS_ACTIVE), "sessions.active");
    assert_string_equal(pl_stat_path(PL_STAT_MODEL_CHUNKS), "model.chunks");
    assert_string_equal(pl_stat_path(PL_STAT_COUNT_), "invalid");
    assert_string_equal(pl_stat_path((pl_stat_t) -1), "invalid");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_bytes),
        cmocka_unit_test(test_roundtrip_every_type),
        cmocka_unit_test(test_roundtrip_all_fields),
        cmocka_unit_test(test_roundtrip_values),
        cmocka_unit_test(test_missing_required),
        cmocka_unit_test(test_decode_malformed),
        cmocka_unit_test(test_decode_handcrafted_valid),
        cmocka_unit_test(test_decode_null_and_empty),
        cmocka_unit_test(test_decode_truncated_everywhere),
        cmocka_unit_test(test_decode_trailing_bytes),
        cmocka_unit_test(test_decode_declared_counts),
        cmocka_unit_test(test_decode_limits),
        cmocka_unit_test(test_copy_is_deep),
        cmocka_unit_test(test_copy_partial_and_empty),
        cmocka_unit_test(test_set_str_replace),
        cmocka_unit_test(test_reset),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
