/*  test_dialect_session — the /ws session protocol (protocol/pl_dialect_session.c)
    against docs/protocol.md §1.

    pl_session_parse: a table of valid frames (the envelope each must give)
    and a table of bad ones (the exact error code each must give, with the
    client's `id` echoed when the frame had one). pl_session_render: a table
    of envelopes and the exact JSON object each must render to, compared
    key by key with cJSON. Frames are parsed from exact-size heap copies so
    ASan sees any read past `len`. */
#include <setjmp.h> /* cmocka needs these three first */
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pl_dialect.h"
#include "pl_err.h"
#include "pl_limits.h"
#include "pl_version.h"

/* A small message limit so the tables can spell the boundary out. */
static const pl_dialect_limits_t s_lim = {16};

#define J(s) s, sizeof(s) - 1
#define A8 "aaaaaaaa"
#define A16 A8 A8
#define A64 A16 A16 A16 A16
#define A128 A64 A64
#define ERR_FIELDS (F_(CODE) | F_(TEXT))

static int
s_parse(const char *buf, size_t len, const char *as_type, const pl_dialect_limits_t *lim, pl_env_t *env)
{
    char *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    if (len)
        memcpy(copy, buf, len);
    memset(env, 0xa5, sizeof *env); /* the parser takes env uninitialised */
    int rc = as_type ? pl_session_parse_as(copy, len, as_type, lim, env) : pl_session_parse(copy, len, lim, env);
    free(copy);
    return rc;
}

/* Doubles that must be the same to the last bit or so (cmocka's
   assert_float_equal compares floats). */
static void
s_assert_double(double have, double want, const char *row)
{
    if (!(fabs(have - want) <= 1e-12 * (fabs(want) > 1 ? fabs(want) : 1)))
        fail_msg("%s: %.17g, want %.17g", row, have, want);
}

static void
s_assert_str_field(const pl_env_t *env, pl_field_t f, const char *have, const char *want, const char *row)
{
    if (!pl_env_has(env, f))
        return;
    if (!want)
        fail_msg("%s: field %d set but no expectation", row, (int) f);
    assert_non_null(have);
    if (strcmp(have, want) != 0)
        fail_msg("%s: field %d is \"%s\", want \"%s\"", row, (int) f, have, want);
}

/* Checks an ERROR envelope as the parser leaves it, and its rendering. */
static void
s_assert_error(const pl_env_t *env, int rc, int code, const char *cid, const char *row)
{
    if (rc != -code)
        fail_msg("%s: rc %d (%s), want %d (%s)", row, rc, pl_err_name(rc), -code, pl_err_name(code));
    assert_int_equal(env->type, PL_MSG_ERROR);
    assert_true(env->code == code);
    assert_non_null(env->text);
    assert_true(strlen(env->text) > 0);
    assert_int_equal(env->present, ERR_FIELDS | (cid ? F_(CID) : 0));
    if (cid) {
        if (strcmp(env->cid, cid) != 0)
            fail_msg("%s: cid %s, want %s", row, env->cid, cid);
    }

    /* the error frame the client gets */
    size_t len = 0;
    char *out = pl_session_render(env, &len);
    assert_non_null(out);
    assert_int_equal(len, strlen(out));
    cJSON *o = cJSON_Parse(out);
    assert_non_null(o);
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "type")), "error");
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "code")), pl_err_name(code));
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "message")), env->text);
    cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "id");
    if (cid) {
        cJSON *want = cJSON_Parse(cid);
        assert_non_null(want);
        assert_non_null(id);
        assert_true(cJSON_Compare(id, want, true));
        cJSON_Delete(want);
    } else {
        assert_null(id);
    }
    assert_int_equal(cJSON_GetArraySize(o), cid ? 4 : 3);
    cJSON_Delete(o);
    free(out);
}

/* ---- parse: valid frames ---- */

typedef struct {
    const char *name;
    const char *json;
    size_t len;
    pl_msg_t type;
    uint64_t fields; /* exactly the fields set */
    const char *cid, *text, *session, *model, *kind, *sname, *system, *msgid;
    double temp;
    int64_t maxtok, lastseq;
    bool flag;
} ok_case_t;

static const ok_case_t s_ok[] = {
    /* create_session */
    {"create minimal", J("{\"type\":\"create_session\"}"), PL_MSG_CREATE, 0},
    {"create full",
     J("{\"type\":\"create_session\",\"model_id\":\"echo\",\"kind\":\"shared\",\"name\":\"Team\","
       "\"system_prompt\":\"Be brief.\",\"id\":\"abc\"}"),
     PL_MSG_CREATE, F_(MODEL) | F_(KIND) | F_(NAME) | F_(SYSTEM) | F_(CID), .cid = "\"abc\"", .model = "echo",
     .kind = "shared", .sname = "Team", .system = "Be brief."},
    {"create kind private", J("{\"type\":\"create_session\",\"kind\":\"private\"}"), PL_MSG_CREATE, F_(KIND),
     .kind = "private"},
    {"create kind group", J("{\"type\":\"create_session\",\"kind\":\"group\"}"), PL_MSG_CREATE, F_(KIND),
     .kind = "group"},
    {"create model_id and name of 128",
     J("{\"type\":\"create_session\",\"model_id\":\"" A128 "\",\"name\":\"" A128 "\"}"), PL_MSG_CREATE,
     F_(MODEL) | F_(NAME), .model = A128, .sname = A128},
    {"create empty name and prompt", J("{\"type\":\"create_session\",\"name\":\"\",\"system_prompt\":\"\"}"),
     PL_MSG_CREATE, F_(NAME) | F_(SYSTEM), .sname = "", .system = ""},
    {"create system_prompt at the limit", J("{\"type\":\"create_session\",\"system_prompt\":\"" A16 "\"}"),
     PL_MSG_CREATE, F_(SYSTEM), .system = A16},
    {"create all null",
     J("{\"type\":\"create_session\",\"model_id\":null,\"kind\":null,\"name\":null,"
       "\"system_prompt\":null,\"id\":null}"),
     PL_MSG_CREATE, 0},
    /* join_session */
    {"join", J("{\"type\":\"join_session\",\"session_id\":\"s4b\"}"), PL_MSG_JOIN, F_(SESSION), .session = "s4b"},
    {"join last_seq 0", J("{\"type\":\"join_session\",\"session_id\":\"s4b\",\"last_seq\":0}"), PL_MSG_JOIN,
     F_(SESSION) | F_(LASTSEQ), .session = "s4b", .lastseq = 0},
    {"join last_seq 41", J("{\"type\":\"join_session\",\"session_id\":\"s4b\",\"last_seq\":41,\"id\":2}"), PL_MSG_JOIN,
     F_(SESSION) | F_(LASTSEQ) | F_(CID), .cid = "2", .session = "s4b", .lastseq = 41},
    {"join last_seq 2^53-1", J("{\"type\":\"join_session\",\"session_id\":\"s\",\"last_seq\":9007199254740991}"),
     PL_MSG_JOIN, F_(SESSION) | F_(LASTSEQ), .session = "s", .lastseq = 9007199254740991},
    {"join last_seq 4.0", J("{\"type\":\"join_session\",\"session_id\":\"s\",\"last_seq\":4.0}"), PL_MSG_JOIN,
     F_(SESSION) | F_(LASTSEQ), .session = "s", .lastseq = 4},
    {"join last_seq null", J("{\"type\":\"join_session\",\"session_id\":\"s\",\"last_seq\":null}"), PL_MSG_JOIN,
     F_(SESSION), .session = "s"},
    {"join id of 64 chars", J("{\"type\":\"join_session\",\"session_id\":\"" A64 "\"}"), PL_MSG_JOIN, F_(SESSION),
     .session = A64},
    {"join id of every allowed char", J("{\"type\":\"join_session\",\"session_id\":\"azAZ09_.:-\"}"), PL_MSG_JOIN,
     F_(SESSION), .session = "azAZ09_.:-"},
    {"join uuid", J("{\"type\":\"join_session\",\"session_id\":\"123e4567-e89b-12d3-a456-426614174000\"}"), PL_MSG_JOIN,
     F_(SESSION), .session = "123e4567-e89b-12d3-a456-426614174000"},
    /* leave_session */
    {"leave", J("{\"type\":\"leave_session\"}"), PL_MSG_LEAVE, 0},
    {"leave session", J("{\"type\":\"leave_session\",\"session_id\":\"s1\"}"), PL_MSG_LEAVE, F_(SESSION),
     .session = "s1"},
    /* chat */
    {"chat minimal", J("{\"type\":\"chat\",\"message\":\"hi\"}"), PL_MSG_CHAT, F_(TEXT), .text = "hi"},
    {"chat full",
     J("{\"type\":\"chat\",\"message\":\"hello\",\"session_id\":\"s4b\",\"id\":7,\"model_id\":\"echo\","
       "\"temperature\":0.7,\"max_tokens\":100,\"system_prompt\":\"Be brief.\"}"),
     PL_MSG_CHAT, F_(TEXT) | F_(SESSION) | F_(CID) | F_(MODEL) | F_(TEMP) | F_(MAXTOK) | F_(SYSTEM), .cid = "7",
     .text = "hello", .session = "s4b", .model = "echo", .system = "Be brief.", .temp = 0.7, .maxtok = 100},
    {"chat temperature 0", J("{\"type\":\"chat\",\"message\":\"hi\",\"temperature\":0}"), PL_MSG_CHAT,
     F_(TEXT) | F_(TEMP), .text = "hi", .temp = 0},
    {"chat temperature 2", J("{\"type\":\"chat\",\"message\":\"hi\",\"temperature\":2}"), PL_MSG_CHAT,
     F_(TEXT) | F_(TEMP), .text = "hi", .temp = 2},
    {"chat temperature 1e-3", J("{\"type\":\"chat\",\"message\":\"hi\",\"temperature\":1e-3}"), PL_MSG_CHAT,
     F_(TEXT) | F_(TEMP), .text = "hi", .temp = 0.001},
    {"chat max_tokens 1", J("{\"type\":\"chat\",\"message\":\"hi\",\"max_tokens\":1}"), PL_MSG_CHAT,
     F_(TEXT) | F_(MAXTOK), .text = "hi", .maxtok = 1},
    {"chat max_tokens 1000000", J("{\"type\":\"chat\",\"message\":\"hi\",\"max_tokens\":1000000}"), PL_MSG_CHAT,
     F_(TEXT) | F_(MAXTOK), .text = "hi", .maxtok = 1000000},
    {"chat message at the limit", J("{\"type\":\"chat\",\"message\":\"" A16 "\"}"), PL_MSG_CHAT, F_(TEXT), .text = A16},
    {"chat message kept verbatim", J("{\"type\":\"chat\",\"message\":\"  hi  \"}"), PL_MSG_CHAT, F_(TEXT),
     .text = "  hi  "},
    {"chat message with escapes", J("{\"type\":\"chat\",\"message\":\"a\\\"b\\\\c\\nd\\u00e9\"}"), PL_MSG_CHAT,
     F_(TEXT), .text = "a\"b\\c\nd\xc3\xa9"},
    {"chat message of one char", J("{\"type\":\"chat\",\"message\":\".\"}"), PL_MSG_CHAT, F_(TEXT), .text = "."},
    {"chat nulls are absent",
     J("{\"type\":\"chat\",\"message\":\"hi\",\"session_id\":null,\"model_id\":null,"
       "\"temperature\":null,\"max_tokens\":null,\"system_prompt\":null}"),
     PL_MSG_CHAT, F_(TEXT), .text = "hi"},
    {"chat unknown fields ignored", J("{\"type\":\"chat\",\"message\":\"hi\",\"extra\":[1,{\"a\":null}],\"x\":1}"),
     PL_MSG_CHAT, F_(TEXT), .text = "hi"},
    {"chat type last", J("{\"message\":\"hi\",\"id\":\"q\",\"type\":\"chat\"}"), PL_MSG_CHAT, F_(TEXT) | F_(CID),
     .cid = "\"q\"", .text = "hi"},
    {"chat whitespace around", J(" \r\n\t{ \"type\" : \"chat\" , \"message\" : \"hi\" }\n\t\r "), PL_MSG_CHAT, F_(TEXT),
     .text = "hi"},
    /* typing */
    {"typing_start", J("{\"type\":\"typing_start\"}"), PL_MSG_TYPING, F_(FLAG), .flag = true},
    {"typing_start session", J("{\"type\":\"typing_start\",\"session_id\":\"s1\"}"), PL_MSG_TYPING,
     F_(FLAG) | F_(SESSION), .session = "s1", .flag = true},
    {"typing_stop", J("{\"type\":\"typing_stop\"}"), PL_MSG_TYPING, F_(FLAG), .flag = false},
    {"typing_stop session", J("{\"type\":\"typing_stop\",\"session_id\":\"s1\"}"), PL_MSG_TYPING,
     F_(FLAG) | F_(SESSION), .session = "s1", .flag = false},
    /* cancel, read */
    {"cancel", J("{\"type\":\"cancel\"}"), PL_MSG_CANCEL, 0},
    {"cancel session", J("{\"type\":\"cancel\",\"session_id\":\"s1\"}"), PL_MSG_CANCEL, F_(SESSION), .session = "s1"},
    {"read", J("{\"type\":\"read\",\"message_id\":\"m9a\"}"), PL_MSG_READ, F_(MSGID), .msgid = "m9a"},
    {"read session", J("{\"type\":\"read\",\"message_id\":\"m9a\",\"session_id\":\"s1\"}"), PL_MSG_READ,
     F_(MSGID) | F_(SESSION), .msgid = "m9a", .session = "s1"},
    /* ping, and the id kept as raw JSON */
    {"ping", J("{\"type\":\"ping\"}"), PL_MSG_PING, 0},
    {"ping id 7", J("{\"type\":\"ping\",\"id\":7}"), PL_MSG_PING, F_(CID), .cid = "7"},
    {"ping id -1", J("{\"type\":\"ping\",\"id\":-1}"), PL_MSG_PING, F_(CID), .cid = "-1"},
    {"ping id 0", J("{\"type\":\"ping\",\"id\":0}"), PL_MSG_PING, F_(CID), .cid = "0"},
    {"ping id 1.5", J("{\"type\":\"ping\",\"id\":1.5}"), PL_MSG_PING, F_(CID), .cid = "1.5"},
    {"ping id abc", J("{\"type\":\"ping\",\"id\":\"abc\"}"), PL_MSG_PING, F_(CID), .cid = "\"abc\""},
    {"ping id empty string", J("{\"type\":\"ping\",\"id\":\"\"}"), PL_MSG_PING, F_(CID), .cid = "\"\""},
    {"ping id with quotes", J("{\"type\":\"ping\",\"id\":\"a\\\"b\"}"), PL_MSG_PING, F_(CID), .cid = "\"a\\\"b\""},
    {"ping id true", J("{\"type\":\"ping\",\"id\":true}"), PL_MSG_PING, F_(CID), .cid = "true"},
    {"ping id false", J("{\"type\":\"ping\",\"id\":false}"), PL_MSG_PING, F_(CID), .cid = "false"},
    {"ping id null", J("{\"type\":\"ping\",\"id\":null}"), PL_MSG_PING, 0},
    {"ping id of 128 chars", J("{\"type\":\"ping\",\"id\":\"" A128 "\"}"), PL_MSG_PING, F_(CID), .cid = "\"" A128 "\""},
    {"ping ignores other fields", J("{\"type\":\"ping\",\"session_id\":5,\"message\":[]}"), PL_MSG_PING, 0},
};

static void
test_parse_valid(void **state)
{
    (void) state;
    for (size_t i = 0; i < sizeof s_ok / sizeof s_ok[0]; i++) {
        const ok_case_t *c = &s_ok[i];
        pl_env_t env;
        int rc = s_parse(c->json, c->len, NULL, &s_lim, &env);
        if (rc != 0)
            fail_msg("%s: rc %d (%s: %s)", c->name, rc, pl_err_name(rc), env.text ? env.text : "");
        if (env.type != c->type)
            fail_msg("%s: type %s, want %s", c->name, pl_msg_name(env.type), pl_msg_name(c->type));
        if (env.present != c->fields)
            fail_msg("%s: fields %#llx, want %#llx", c->name, (unsigned long long) env.present,
                     (unsigned long long) c->fields);
        assert_false(pl_env_has(&env, PL_F_CONN)); /* left for the caller */
        s_assert_str_field(&env, PL_F_CID, env.cid, c->cid, c->name);
        s_assert_str_field(&env, PL_F_TEXT, env.text, c->text, c->name);
        s_assert_str_field(&env, PL_F_SESSION, env.session, c->session, c->name);
        s_assert_str_field(&env, PL_F_MODEL, env.model, c->model, c->name);
        s_assert_str_field(&env, PL_F_KIND, env.kind, c->kind, c->name);
        s_assert_str_field(&env, PL_F_NAME, env.name, c->sname, c->name);
        s_assert_str_field(&env, PL_F_SYSTEM, env.system, c->system, c->name);
        s_assert_str_field(&env, PL_F_MSGID, env.msgid, c->msgid, c->name);
        if (pl_env_has(&env, PL_F_TEMP))
            s_assert_double(env.temperature, c->temp, c->name);
        if (pl_env_has(&env, PL_F_MAXTOK))
            assert_true(env.max_tokens == c->maxtok);
        if (pl_env_has(&env, PL_F_LASTSEQ))
            assert_true(env.last_seq == c->lastseq);
        if (pl_env_has(&env, PL_F_FLAG))
            assert_int_equal(env.flag, c->flag);
        pl_env_reset(&env);
    }
}

/* ---- parse: errors ---- */

typedef struct {
    const char *name;
    const char *json;
    size_t len;
    int code;
    const char *cid; /* the echoed id, or NULL */
} err_case_t;

static const err_case_t s_err[] = {
    /* BAD_JSON */
    {"empty frame", J(""), PL_E_BAD_JSON},
    {"whitespace only", J(" \n\t "), PL_E_BAD_JSON},
    {"lone brace", J("{"), PL_E_BAD_JSON},
    {"truncated object", J("{\"type\":\"ping\""), PL_E_BAD_JSON},
    {"truncated string", J("{\"type\":\"pi"), PL_E_BAD_JSON},
    {"truncated after a backslash", J("{\"type\":\"ping\",\"id\":\"\\"), PL_E_BAD_JSON},
    {"truncated \\u escape", J("{\"type\":\"ping\",\"id\":\"\\u00"), PL_E_BAD_JSON},
    {"truncated number", J("{\"type\":\"ping\",\"id\":-"), PL_E_BAD_JSON},
    {"truncated literal", J("{\"type\":\"ping\",\"id\":tru"), PL_E_BAD_JSON},
    {"missing value", J("{\"type\":}"), PL_E_BAD_JSON},
    {"trailing comma", J("{\"type\":\"ping\",}"), PL_E_BAD_JSON},
    {"single quotes", J("{'type':'ping'}"), PL_E_BAD_JSON},
    {"bare word", J("nope"), PL_E_BAD_JSON},
    {"lone surrogate escape", J("{\"type\":\"chat\",\"message\":\"\\ud800\"}"), PL_E_BAD_JSON},
    {"trailing garbage", J("{\"type\":\"ping\"} x"), PL_E_BAD_JSON},
    {"trailing second object", J("{\"type\":\"ping\"}{\"type\":\"ping\"}"), PL_E_BAD_JSON},
    {"trailing bracket", J("{\"type\":\"ping\"}]"), PL_E_BAD_JSON},
    {"trailing garbage, with id", J("{\"type\":\"ping\",\"id\":7} 5"), PL_E_BAD_JSON},
    {"NUL after the object", J("{\"type\":\"ping\"}\0"), PL_E_BAD_JSON},
    {"NUL before the object", J("\0{\"type\":\"ping\"}"), PL_E_BAD_JSON},
    {"NUL between tokens", J("{\"type\":\0\"ping\"}"), PL_E_BAD_JSON},
    {"NUL inside a string", J("{\"type\":\"chat\",\"message\":\"a\0b\"}"), PL_E_BAD_JSON},
    {"NUL as the whole message", J("{\"type\":\"chat\",\"message\":\"\0\"}"), PL_E_BAD_JSON},
    {"NUL inside an id", J("{\"type\":\"join_session\",\"session_id\":\"s1\0../x\"}"), PL_E_BAD_JSON},
    {"only NULs", J("\0\0\0"), PL_E_BAD_JSON},
    /* BAD_FRAME: not an object */
    {"array", J("[]"), PL_E_BAD_FRAME},
    {"array of a frame", J("[{\"type\":\"ping\"}]"), PL_E_BAD_FRAME},
    {"number", J("5"), PL_E_BAD_FRAME},
    {"string", J("\"ping\""), PL_E_BAD_FRAME},
    {"null", J("null"), PL_E_BAD_FRAME},
    {"true", J("true"), PL_E_BAD_FRAME},
    /* BAD_FRAME: type */
    {"empty object", J("{}"), PL_E_BAD_FRAME},
    {"no type, with id", J("{\"id\":7}"), PL_E_BAD_FRAME, "7"},
    {"no type, with message", J("{\"message\":\"hi\",\"id\":\"x\"}"), PL_E_BAD_FRAME, "\"x\""},
    {"type number", J("{\"type\":5,\"id\":1}"), PL_E_BAD_FRAME, "1"},
    {"type null", J("{\"type\":null,\"id\":\"x\"}"), PL_E_BAD_FRAME, "\"x\""},
    {"type object", J("{\"type\":{}}"), PL_E_BAD_FRAME},
    {"type array", J("{\"type\":[\"ping\"]}"), PL_E_BAD_FRAME},
    {"type true", J("{\"type\":true}"), PL_E_BAD_FRAME},
    /* UNKNOWN_TYPE */
    {"unknown type", J("{\"type\":\"nope\",\"id\":1}"), PL_E_UNKNOWN_TYPE, "1"},
    {"empty type", J("{\"type\":\"\"}"), PL_E_UNKNOWN_TYPE},
    {"type in capitals", J("{\"type\":\"CHAT\"}"), PL_E_UNKNOWN_TYPE},
    {"type with a space", J("{\"type\":\"chat \"}"), PL_E_UNKNOWN_TYPE},
    {"server-to-client type", J("{\"type\":\"session_created\"}"), PL_E_UNKNOWN_TYPE},
    {"pong", J("{\"type\":\"pong\"}"), PL_E_UNKNOWN_TYPE},
    {"long unknown type", J("{\"type\":\"" A128 A128 "\",\"id\":true}"), PL_E_UNKNOWN_TYPE, "true"},
    /* MISSING_FIELD */
    {"join without session_id", J("{\"type\":\"join_session\",\"id\":\"j1\"}"), PL_E_MISSING_FIELD, "\"j1\""},
    {"join with null session_id", J("{\"type\":\"join_session\",\"session_id\":null}"), PL_E_MISSING_FIELD},
    {"chat without message", J("{\"type\":\"chat\",\"id\":7}"), PL_E_MISSING_FIELD, "7"},
    {"chat with null message", J("{\"type\":\"chat\",\"message\":null,\"id\":7}"), PL_E_MISSING_FIELD, "7"},
    {"chat without message, other fields set", J("{\"type\":\"chat\",\"session_id\":\"s1\",\"temperature\":1}"),
     PL_E_MISSING_FIELD},
    {"read without message_id", J("{\"type\":\"read\",\"session_id\":\"s1\"}"), PL_E_MISSING_FIELD},
    {"read with null message_id", J("{\"type\":\"read\",\"message_id\":null,\"id\":0}"), PL_E_MISSING_FIELD, "0"},
    /* BAD_FRAME: a \u0000 escape would silently cut the string short */
    {"\\u0000 in a message", J("{\"type\":\"chat\",\"message\":\"a\\u0000b\"}"), PL_E_BAD_FRAME},
    {"\\u0000 in a session id", J("{\"type\":\"join_session\",\"session_id\":\"abc\\u0000def\"}"), PL_E_BAD_FRAME},
    /* BAD_FRAME: wrong types */
    {"message 5", J("{\"type\":\"chat\",\"message\":5,\"id\":\"abc\"}"), PL_E_BAD_FRAME, "\"abc\""},
    {"message array", J("{\"type\":\"chat\",\"message\":[\"hi\"]}"), PL_E_BAD_FRAME},
    {"message true", J("{\"type\":\"chat\",\"message\":true}"), PL_E_BAD_FRAME},
    {"message object", J("{\"type\":\"chat\",\"message\":{\"text\":\"hi\"}}"), PL_E_BAD_FRAME},
    {"session_id 5", J("{\"type\":\"join_session\",\"session_id\":5,\"id\":3}"), PL_E_BAD_FRAME, "3"},
    {"chat session_id object", J("{\"type\":\"chat\",\"message\":\"hi\",\"session_id\":{}}"), PL_E_BAD_FRAME},
    {"temperature \"hot\"", J("{\"type\":\"chat\",\"message\":\"hi\",\"temperature\":\"hot\"}"), PL_E_BAD_FRAME},
    {"temperature true", J("{\"type\":\"chat\",\"message\":\"hi\",\"temperature\":true}"), PL_E_BAD_FRAME},
    {"max_tokens \"x\"", J("{\"type\":\"chat\",\"message\":\"hi\",\"max_tokens\":\"x\"}"), PL_E_BAD_FRAME},
    {"max_tokens \"10\"", J("{\"type\":\"chat\",\"message\":\"hi\",\"max_tokens\":\"10\"}"), PL_E_BAD_FRAME},
    {"kind 3", J("{\"type\":\"create_session\",\"kind\":3,\"id\":9}"), PL_E_BAD_FRAME, "9"},
    {"model_id 5", J("{\"type\":\"create_session\",\"model_id\":5}"), PL_E_BAD_FRAME},
    {"name false", J("{\"type\":\"create_session\",\"name\":false}"), PL_E_BAD_FRAME},
    {"system_prompt 1", J("{\"type\":\"chat\",\"message\":\"hi\",\"system_prompt\":1}"), PL_E_BAD_FRAME},
    {"message_id 9", J("{\"type\":\"read\",\"message_id\":9}"), PL_E_BAD_FRAME},
    {"last_seq \"1\"", J("{\"type\":\"join_session\",\"session_id\":\"s\",\"last_seq\":\"1\"}"), PL_E_BAD_FRAME},
    {"typing session_id array", J("{\"type\":\"typing_start\",\"session_id\":[]}"), PL_E_BAD_FRAME},
    /* BAD_FRAME: out of range */
    {"temperature -0.1", J("{\"type\":\"chat\",\"message\":\"hi\",\"temperature\":-0.1,\"id\":7}"), PL_E_BAD_FRAME,
     "7"},
    {"temperature 2.5", J("{\"type\":\"chat\",\"message\":\"hi\",\"temperature\":2.5}"), PL_E_BAD_FRAME},
    {"temperature 2.000001", J("{\"type\":\"chat\",\"message\":\"hi\",\"temperature\":2.000001}"), PL_E_BAD_FRAME},
    {"temperature 1e400 (inf)", J("{\"type\":\"chat\",\"message\":\"hi\",\"temperature\":1e400}"), PL_E_BAD_FRAME},
    {"max_tokens 0", J("{\"type\":\"chat\",\"message\":\"hi\",\"max_tokens\":0}"), PL_E_BAD_FRAME},
    {"max_tokens 1.5", J("{\"type\":\"chat\",\"message\":\"hi\",\"max_tokens\":1.5}"), PL_E_BAD_FRAME},
    {"max_tokens -1", J("{\"type\":\"chat\",\"message\":\"hi\",\"max_tokens\":-1}"), PL_E_BAD_FRAME},
    {"max_tokens 1000001", J("{\"type\":\"chat\",\"message\":\"hi\",\"max_tokens\":1000001}"), PL_E_BAD_FRAME},
    {"max_tokens 1e300", J("{\"type\":\"chat\",\"message\":\"hi\",\"max_tokens\":1e300}"), PL_E_BAD_FRAME},
    {"last_seq -1", J("{\"type\":\"join_session\",\"session_id\":\"s\",\"last_seq\":-1}"), PL_E_BAD_FRAME},
    {"last_seq 0.5", J("{\"type\":\"join_session\",\"session_id\":\"s\",\"last_seq\":0.5}"), PL_E_BAD_FRAME},
    {"last_seq 2^53", J("{\"type\":\"join_session\",\"session_id\":\"s\",\"last_seq\":9007199254740992}"),
     PL_E_BAD_FRAME},
    {"last_seq 1e400", J("{\"type\":\"join_session\",\"session_id\":\"s\",\"last_seq\":1e400}"), PL_E_BAD_FRAME},
    /* BAD_FRAME: invalid ids */
    {"session_id empty", J("{\"type\":\"join_session\",\"session_id\":\"\",\"id\":\"e\"}"), PL_E_BAD_FRAME, "\"e\""},
    {"session_id with a space", J("{\"type\":\"join_session\",\"session_id\":\"a b\"}"), PL_E_BAD_FRAME},
    {"session_id of 65 chars", J("{\"type\":\"join_session\",\"session_id\":\"" A64 "a\"}"), PL_E_BAD_FRAME},
    {"session_id with a slash", J("{\"type\":\"chat\",\"message\":\"hi\",\"session_id\":\"../x\"}"), PL_E_BAD_FRAME},
    {"session_id with a newline", J("{\"type\":\"leave_session\",\"session_id\":\"a\\nb\"}"), PL_E_BAD_FRAME},
    {"session_id non-ascii", J("{\"type\":\"cancel\",\"session_id\":\"\\u00e9\"}"), PL_E_BAD_FRAME},
    {"typing session_id empty", J("{\"type\":\"typing_stop\",\"session_id\":\"\"}"), PL_E_BAD_FRAME},
    {"message_id empty", J("{\"type\":\"read\",\"message_id\":\"\"}"), PL_E_BAD_FRAME},
    {"message_id with a quote", J("{\"type\":\"read\",\"message_id\":\"m\\\"1\"}"), PL_E_BAD_FRAME},
    /* BAD_FRAME: kind */
    {"kind public", J("{\"type\":\"create_session\",\"kind\":\"public\",\"id\":4}"), PL_E_BAD_FRAME, "4"},
    {"kind Private", J("{\"type\":\"create_session\",\"kind\":\"Private\"}"), PL_E_BAD_FRAME},
    {"kind empty", J("{\"type\":\"create_session\",\"kind\":\"\"}"), PL_E_BAD_FRAME},
    /* EMPTY_MESSAGE */
    {"empty message", J("{\"type\":\"chat\",\"message\":\"\",\"id\":7}"), PL_E_EMPTY_MESSAGE, "7"},
    {"space message", J("{\"type\":\"chat\",\"message\":\" \"}"), PL_E_EMPTY_MESSAGE},
    {"whitespace message", J("{\"type\":\"chat\",\"message\":\" \\t\\n\\r \",\"id\":\"w\"}"), PL_E_EMPTY_MESSAGE,
     "\"w\""},
    /* TOO_LARGE */
    {"message over the limit", J("{\"type\":\"chat\",\"message\":\"" A16 "a\",\"id\":7}"), PL_E_TOO_LARGE, "7"},
    {"blank message over the limit", J("{\"type\":\"chat\",\"message\":\"                 \"}"), PL_E_TOO_LARGE},
    {"multi-byte message over the limit (bytes)",
     J("{\"type\":\"chat\",\"message\":\"\\u00e9\\u00e9\\u00e9\\u00e9"
       "\\u00e9\\u00e9\\u00e9\\u00e9a\"}"),
     PL_E_TOO_LARGE},
    {"chat system_prompt over the limit", J("{\"type\":\"chat\",\"message\":\"hi\",\"system_prompt\":\"" A16 "a\"}"),
     PL_E_TOO_LARGE},
    {"create system_prompt over the limit", J("{\"type\":\"create_session\",\"system_prompt\":\"" A128 "\",\"id\":1}"),
     PL_E_TOO_LARGE, "1"},
    /* BAD_FRAME: names */
    {"model_id of 129 chars", J("{\"type\":\"create_session\",\"model_id\":\"" A128 "a\"}"), PL_E_BAD_FRAME},
    {"chat model_id of 129 chars", J("{\"type\":\"chat\",\"message\":\"hi\",\"model_id\":\"" A128 "a\",\"id\":2}"),
     PL_E_BAD_FRAME, "2"},
    {"name of 129 chars", J("{\"type\":\"create_session\",\"name\":\"" A128 "a\"}"), PL_E_BAD_FRAME},
    /* BAD_FRAME: id */
    {"id object", J("{\"type\":\"ping\",\"id\":{}}"), PL_E_BAD_FRAME},
    {"id object with a value", J("{\"type\":\"ping\",\"id\":{\"a\":1}}"), PL_E_BAD_FRAME},
    {"id array", J("{\"type\":\"ping\",\"id\":[7]}"), PL_E_BAD_FRAME},
    {"id of 129 chars", J("{\"type\":\"ping\",\"id\":\"" A128 "a\"}"), PL_E_BAD_FRAME},
    {"id object on a bad chat", J("{\"type\":\"chat\",\"id\":{}}"), PL_E_BAD_FRAME},
};

static void
test_parse_errors(void **state)
{
    (void) state;
    for (size_t i = 0; i < sizeof s_err / sizeof s_err[0]; i++) {
        const err_case_t *c = &s_err[i];
        pl_env_t env;
        int rc = s_parse(c->json, c->len, NULL, &s_lim, &env);
        s_assert_error(&env, rc, c->code, c->cid, c->name);
        pl_env_reset(&env);
    }
}

/* Frames built at run time: sizes around the default limits, deep nesting. */
static char *
s_frame(const char *head, char fill, size_t n, const char *tail, size_t *len)
{
    size_t h = strlen(head), t = strlen(tail);
    char *p = malloc(h + n + t + 1);
    assert_non_null(p);
    memcpy(p, head, h);
    memset(p + h, fill, n);
    memcpy(p + h + n, tail, t + 1);
    *len = h + n + t;
    return p;
}

static void
test_parse_generated(void **state)
{
    (void) state;
    const pl_dialect_limits_t deflim = {PL_DEFAULT_MAX_MESSAGE};
    static const struct {
        const char *name;
        const char *head;
        char fill;
        size_t n;
        const char *tail;
        int code; /* 0: valid */
        pl_msg_t type;
    } cases[] = {
        {"message at the default limit", "{\"type\":\"chat\",\"message\":\"", 'x', PL_DEFAULT_MAX_MESSAGE, "\"}", 0,
         PL_MSG_CHAT},
        {"message over the default limit", "{\"type\":\"chat\",\"message\":\"", 'x', PL_DEFAULT_MAX_MESSAGE + 1, "\"}",
         PL_E_TOO_LARGE},
        {"system_prompt over the default limit", "{\"type\":\"create_session\",\"system_prompt\":\"", 'x',
         PL_DEFAULT_MAX_MESSAGE + 1, "\"}", PL_E_TOO_LARGE},
        {"1 MiB message", "{\"type\":\"chat\",\"message\":\"", 'y', 1u << 20, "\"}", PL_E_TOO_LARGE},
        {"1 MiB of leading whitespace", "", ' ', 1u << 20, "{\"type\":\"ping\"}", 0, PL_MSG_PING},
        {"5000 [", "", '[', 5000, "", PL_E_BAD_JSON},
        {"5000 {", "", '{', 5000, "", PL_E_BAD_JSON},
        {"5000 [ in a field", "{\"type\":\"ping\",\"x\":", '[', 5000, "", PL_E_BAD_JSON},
        {"deep id", "{\"type\":\"ping\",\"id\":", '[', 5000, "", PL_E_BAD_JSON},
        {"100000 [", "", '[', 100000, "", PL_E_BAD_JSON},
        {"long type", "{\"type\":\"", 't', 100000, "\"}", PL_E_UNKNOWN_TYPE},
        {"long key", "{\"type\":\"ping\",\"", 'k', 100000, "\":1}", 0, PL_MSG_PING},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len;
        char *f = s_frame(cases[i].head, cases[i].fill, cases[i].n, cases[i].tail, &len);
        pl_env_t env;
        int rc = s_parse(f, len, NULL, &deflim, &env);
        if (cases[i].code) {
            s_assert_error(&env, rc, cases[i].code, NULL, cases[i].name);
        } else {
            if (rc != 0)
                fail_msg("%s: rc %d", cases[i].name, rc);
            assert_int_equal(env.type, cases[i].type);
        }
        pl_env_reset(&env);
        free(f);
    }

    /* balanced nesting past cJSON's limit: valid JSON, refused as BAD_JSON */
    size_t depth = 5000, len = 0;
    char *f = malloc(2 * depth + 64);
    assert_non_null(f);
    len += (size_t) sprintf(f, "{\"type\":\"ping\",\"x\":");
    for (size_t k = 0; k < depth; k++)
        f[len++] = '[';
    for (size_t k = 0; k < depth; k++)
        f[len++] = ']';
    f[len++] = '}';
    pl_env_t env;
    int rc = s_parse(f, len, NULL, &s_lim, &env);
    s_assert_error(&env, rc, PL_E_BAD_JSON, NULL, "balanced deep nesting");
    pl_env_reset(&env);
    free(f);
}

/* Every strict prefix of a full frame is BAD_JSON, and arbitrary bytes never
   crash: the result is either an envelope or a well-formed ERROR. */
static void
test_parse_any_bytes(void **state)
{
    (void) state;
    static const char full[] =
        "{\"type\":\"chat\",\"message\":\"h\\u00e9 \\\"x\\\"\",\"session_id\":\"s1\",\"id\":"
        "\"a\\\\b\",\"temperature\":1.25e0,\"max_tokens\":-0,\"model_id\":null,\"x\":[true,false]}";
    size_t n = sizeof full - 1;
    pl_env_t env;
    for (size_t cut = 0; cut < n; cut++) {
        int rc = s_parse(full, cut, NULL, &s_lim, &env);
        char row[32];
        snprintf(row, sizeof row, "prefix %zu", cut);
        s_assert_error(&env, rc, PL_E_BAD_JSON, NULL, row);
        pl_env_reset(&env);
    }
    /* "-0" is not >= 1: the full frame is a BAD_FRAME with the id echoed */
    int rc = s_parse(full, n, NULL, &s_lim, &env);
    s_assert_error(&env, rc, PL_E_BAD_FRAME, "\"a\\\\b\"", "full");
    pl_env_reset(&env);

    /* a deterministic scramble of JSON-ish bytes */
    static const char alphabet[] = "{}[]\":,\\ tfnu0123456789.-eE\x00\x01\x7f\xc3\xa9typechatmessageid";
    uint32_t seed = 12345;
    for (int round = 0; round < 3000; round++) {
        char buf[64];
        size_t len = (size_t) (round % 64);
        for (size_t k = 0; k < len; k++) {
            seed = seed * 1103515245u + 12345u;
            buf[k] = alphabet[(seed >> 16) % (sizeof alphabet - 1)];
        }
        if (round % 3 == 0 && len > 10)
            memcpy(buf, "{\"type\":\"", 9);
        rc = s_parse(buf, len, NULL, &s_lim, &env);
        if (rc == 0) {
            assert_true(env.type > PL_MSG_NONE_ && env.type < PL_MSG_COUNT_);
            assert_true(env.type != PL_MSG_ERROR);
        } else {
            assert_true(rc < 0);
            assert_int_equal(env.type, PL_MSG_ERROR);
            assert_true(env.code == -rc);
            assert_non_null(env.text);
        }
        pl_env_reset(&env);
    }
}

/* pl_session_parse_as applies the rule of the given type, whatever the
   object's own "type". */
static void
test_parse_as(void **state)
{
    (void) state;
    static const struct {
        const char *name;
        const char *json;
        size_t len;
        const char *as;
        int code; /* 0: valid */
        pl_msg_t type;
        uint64_t fields;
    } cases[] = {
        {"chat object as create", J("{\"type\":\"chat\",\"model_id\":\"m\"}"), "create_session", 0, PL_MSG_CREATE,
         F_(MODEL)},
        {"bogus type as create", J("{\"type\":\"bogus\",\"name\":\"n\"}"), "create_session", 0, PL_MSG_CREATE,
         F_(NAME)},
        {"no type as create", J("{}"), "create_session", 0, PL_MSG_CREATE, 0},
        {"type 5 as create", J("{\"type\":5}"), "create_session", 0, PL_MSG_CREATE, 0},
        {"full create body", J("{\"model_id\":\"echo\",\"kind\":\"group\",\"name\":\"x\",\"system_prompt\":\"s\"}"),
         "create_session", 0, PL_MSG_CREATE, F_(MODEL) | F_(KIND) | F_(NAME) | F_(SYSTEM)},
        {"message as chat", J("{\"message\":\"hi\"}"), "chat", 0, PL_MSG_CHAT, F_(TEXT)},
        {"ping object as typing_start", J("{\"type\":\"ping\"}"), "typing_start", 0, PL_MSG_TYPING, F_(FLAG)},
        {"bad kind as create", J("{\"kind\":\"public\"}"), "create_session", PL_E_BAD_FRAME},
        {"create object as join", J("{\"type\":\"create_session\"}"), "join_session", PL_E_MISSING_FIELD},
        {"ping object as chat", J("{\"type\":\"ping\"}"), "chat", PL_E_MISSING_FIELD},
        {"as an unknown type", J("{\"type\":\"ping\"}"), "nope", PL_E_UNKNOWN_TYPE},
        {"array as create", J("[]"), "create_session", PL_E_BAD_FRAME},
        {"bad JSON as create", J("{"), "create_session", PL_E_BAD_JSON},
        {"long prompt as create", J("{\"system_prompt\":\"" A16 "a\"}"), "create_session", PL_E_TOO_LARGE},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pl_env_t env;
        int rc = s_parse(cases[i].json, cases[i].len, cases[i].as, &s_lim, &env);
        if (cases[i].code) {
            s_assert_error(&env, rc, cases[i].code, NULL, cases[i].name);
        } else {
            if (rc != 0)
                fail_msg("%s: rc %d", cases[i].name, rc);
            assert_int_equal(env.type, cases[i].type);
            assert_int_equal(env.present, cases[i].fields);
        }
        pl_env_reset(&env);
    }
}

/* ---- render ---- */

static void
b_connected(pl_env_t *e)
{
    pl_env_set_u64(e, PL_F_CONN, 0x1f0a);
    pl_env_set_str(e, PL_F_MODEL, "echo");
}
static void
b_connected_max(pl_env_t *e)
{
    pl_env_set_u64(e, PL_F_CONN, UINT64_MAX);
    pl_env_set_str(e, PL_F_MODEL, "");
}
static void
b_cid_7(pl_env_t *e)
{
    pl_env_set_u64(e, PL_F_CONN, 1);
    pl_env_set_str(e, PL_F_CID, "7");
}
static void
b_cid_abc(pl_env_t *e)
{
    pl_env_set_str(e, PL_F_CID, "\"abc\"");
}
static void
b_conn_only(pl_env_t *e)
{
    pl_env_set_u64(e, PL_F_CONN, 1);
}
static void
b_error(pl_env_t *e)
{
    pl_env_set_u64(e, PL_F_CONN, 1);
    pl_env_set_i64(e, PL_F_CODE, PL_E_MISSING_FIELD);
    pl_env_set_str(e, PL_F_TEXT, "chat needs a \"message\" string");
    pl_env_set_str(e, PL_F_CID, "7");
}
static void
b_error_session(pl_env_t *e)
{
    pl_env_set_i64(e, PL_F_CODE, PL_E_NOT_FOUND);
    pl_env_set_str(e, PL_F_TEXT, "no such session");
    pl_env_set_str(e, PL_F_SESSION, "s4b");
    pl_env_set_str(e, PL_F_CID, "\"q1\"");
}
static void
b_error_no_text(pl_env_t *e)
{
    pl_env_set_i64(e, PL_F_CODE, PL_E_BUSY);
}
static void
b_error_nomem(pl_env_t *e)
{
    pl_env_set_i64(e, PL_F_CODE, -PL_E_NOMEM); /* negative, and an alias of INTERNAL */
    pl_env_set_str(e, PL_F_TEXT, "x");
}
static void
b_error_unknown_code(pl_env_t *e)
{
    pl_env_set_i64(e, PL_F_CODE, 9999);
    pl_env_set_str(e, PL_F_TEXT, "x");
}
static void
b_session(pl_env_t *e)
{
    pl_env_set_u64(e, PL_F_CONN, 1);
    pl_env_set_str(e, PL_F_SESSION, "s4b");
    pl_env_set_str(e, PL_F_MODEL, "echo");
    pl_env_set_str(e, PL_F_KIND, "private");
    pl_env_set_str(e, PL_F_NAME, "");
    pl_env_set_i64(e, PL_F_SEQ, 41);
    pl_env_set_i64(e, PL_F_COUNT, 5);
    pl_env_set_i64(e, PL_F_MEMBERS, 2);
}
static void
b_session_new(pl_env_t *e)
{
    pl_env_set_u64(e, PL_F_CONN, 1);
    pl_env_set_str(e, PL_F_SESSION, "s4b");
    pl_env_set_str(e, PL_F_MODEL, "echo");
    pl_env_set_str(e, PL_F_KIND, "group");
    pl_env_set_str(e, PL_F_NAME, "Team");
    pl_env_set_i64(e, PL_F_SEQ, 0);
    pl_env_set_i64(e, PL_F_MEMBERS, 1);
}
static void
b_delivery(pl_env_t *e)
{
    pl_env_set_u64(e, PL_F_CONN, 1);
    pl_env_set_str(e, PL_F_MSGID, "m9a");
    pl_env_set_str(e, PL_F_SESSION, "s4b");
    pl_env_set_str(e, PL_F_CID, "7");
}
static void
b_delivery_no_cid(pl_env_t *e)
{
    pl_env_set_u64(e, PL_F_CONN, 1);
    pl_env_set_str(e, PL_F_MSGID, "m9a");
    pl_env_set_str(e, PL_F_SESSION, "s4b");
}
static void
b_event(pl_env_t *e)
{
    pl_env_set_str(e, PL_F_SESSION, "s4b");
    pl_env_set_i64(e, PL_F_SEQ, 42);
}
static void
b_message_added(pl_env_t *e)
{
    b_event(e);
    pl_env_set_i64(e, PL_F_COUNT, 7);
    pl_histent_t m = {"m9a", "user", "hi", "c0000000000001f0a", 1763925000.125};
    pl_env_hist_add(e, &m);
    pl_histent_t m2 = {"m9b", "assistant", "not shown", "", 1};
    pl_env_hist_add(e, &m2);
}
static void
b_message_added_empty(pl_env_t *e)
{
    b_event(e);
    pl_env_set_i64(e, PL_F_COUNT, 0);
    e->present |= 1ull << PL_F_HIST;
}
static void
b_status(pl_env_t *e)
{
    b_event(e);
    pl_env_set_i64(e, PL_F_COUNT, 7);
}
static void
b_response_start(pl_env_t *e)
{
    b_event(e);
    pl_env_set_str(e, PL_F_RESPID, "r77");
    pl_env_set_str(e, PL_F_MODEL, "echo");
}
static void
b_chunk(pl_env_t *e)
{
    b_event(e);
    pl_env_set_str(e, PL_F_RESPID, "r77");
    pl_env_set_str(e, PL_F_TEXT, "Echo ");
    pl_env_set_i64(e, PL_F_NUMBER, 1);
    pl_env_set_bool(e, PL_F_FLAG, false);
}
/* Chunks render without cJSON (pl_dialect_session.c): the escapes and the
   numbers must come out as the cJSON path writes them. */
static void
b_chunk_escapes(pl_env_t *e)
{
    b_chunk(e);
    pl_env_set_str(e, PL_F_TEXT, "q\" b\\ \b\f\n\r\t \x01\x1f\x7f / caf\xc3\xa9 \xe2\x82\xac");
    pl_env_set_i64(e, PL_F_NUMBER, 2147483648LL);
}
static void
b_chunk_big_seq(pl_env_t *e) /* past 10^15 cJSON writes %g: the cJSON path */
{
    b_chunk(e);
    pl_env_set_i64(e, PL_F_SEQ, 1000000000000000LL);
}
static void
b_chunk_empty(pl_env_t *e)
{
    b_chunk(e);
    pl_env_set_str(e, PL_F_TEXT, "");
}
static void
b_chunk_final(pl_env_t *e)
{
    b_chunk(e);
    pl_env_set_i64(e, PL_F_NUMBER, 8);
    pl_env_set_bool(e, PL_F_FLAG, true);
}
static void
b_done(pl_env_t *e)
{
    b_event(e);
    pl_env_set_str(e, PL_F_RESPID, "r77");
    pl_env_set_str(e, PL_F_MODEL, "echo");
    pl_env_set_i64(e, PL_F_NUMBER, 8);
    pl_env_set_f64(e, PL_F_DURATION, 0.2100000004);
    pl_env_set_i64(e, PL_F_COUNT, 8);
    pl_env_set_i64(e, PL_F_FINISH, PL_FINISH_STOP);
    pl_env_set_i64(e, PL_F_PTOK, 12);
    pl_env_set_i64(e, PL_F_CTOK, 8);
}
static void
b_done_error(pl_env_t *e)
{
    b_done(e);
    pl_env_set_i64(e, PL_F_FINISH, PL_FINISH_ERROR);
    pl_env_set_str(e, PL_F_TEXT, "backend timed out");
}
static void
b_typing(pl_env_t *e)
{
    b_event(e);
    pl_env_set_u64(e, PL_F_CONN, 0xabc);
    pl_env_set_bool(e, PL_F_FLAG, true);
}
static void
b_typing_stop(pl_env_t *e)
{
    b_typing(e);
    pl_env_set_bool(e, PL_F_FLAG, false);
}
static void
b_member_joined(pl_env_t *e)
{
    b_event(e);
    pl_env_set_u64(e, PL_F_CONN, 0xc1f0a);
    pl_env_set_bool(e, PL_F_FLAG, true);
    pl_env_set_i64(e, PL_F_MEMBERS, 2);
}
static void
b_member_left(pl_env_t *e)
{
    b_member_joined(e);
    pl_env_set_bool(e, PL_F_FLAG, false);
    pl_env_set_i64(e, PL_F_MEMBERS, 1);
}

typedef struct {
    const char *name;
    pl_msg_t type;
    void (*build)(pl_env_t *env);
    const char *expect; /* the exact object, any key order */
} render_case_t;

#define EV ",\"session_id\":\"s4b\",\"seq\":42"

static const render_case_t s_render[] = {
    {"connected", PL_MSG_CONNECTED, b_connected,
     "{\"type\":\"connected\",\"connection_id\":\"c0000000000001f0a\",\"message\":\"Connected!\",\"server_info\":"
     "{\"name\":\"parley\",\"version\":\"" PL_VERSION "\",\"model\":\"echo\",\"auth\":\"off\"}}"},
    {"connected, max conn", PL_MSG_CONNECTED, b_connected_max,
     "{\"type\":\"connected\",\"connection_id\":\"cffffffffffffffff\",\"message\":\"Connected!\",\"server_info\":"
     "{\"name\":\"parley\",\"version\":\"" PL_VERSION "\",\"model\":\"\",\"auth\":\"off\"}}"},
    {"pong", PL_MSG_PONG, b_conn_only, "{\"type\":\"pong\"}"},
    {"pong, numeric id", PL_MSG_PONG, b_cid_7, "{\"type\":\"pong\",\"id\":7}"},
    {"pong, string id", PL_MSG_PONG, b_cid_abc, "{\"type\":\"pong\",\"id\":\"abc\"}"},
    {"error", PL_MSG_ERROR, b_error,
     "{\"type\":\"error\",\"code\":\"MISSING_FIELD\",\"message\":\"chat needs a \\\"message\\\" string\",\"id\":7}"},
    {"error, session", PL_MSG_ERROR, b_error_session,
     "{\"type\":\"error\",\"code\":\"NOT_FOUND\",\"message\":\"no such session\",\"session_id\":\"s4b\","
     "\"id\":\"q1\"}"},
    {"error, no text", PL_MSG_ERROR, b_error_no_text, "{\"type\":\"error\",\"code\":\"BUSY\",\"message\":\"busy\"}"},
    {"error, -NOMEM", PL_MSG_ERROR, b_error_nomem, "{\"type\":\"error\",\"code\":\"INTERNAL\",\"message\":\"x\"}"},
    {"error, unknown code", PL_MSG_ERROR, b_error_unknown_code,
     "{\"type\":\"error\",\"code\":\"INTERNAL\",\"message\":\"x\"}"},
    {"session_created", PL_MSG_SESSION_CREATED, b_session_new,
     "{\"type\":\"session_created\",\"session_id\":\"s4b\",\"seq\":0,\"model\":\"echo\",\"kind\":\"group\","
     "\"name\":\"Team\",\"members\":1}"},
    {"session_joined", PL_MSG_SESSION_JOINED, b_session,
     "{\"type\":\"session_joined\",\"session_id\":\"s4b\",\"message_count\":5,\"seq\":41,\"model\":\"echo\","
     "\"kind\":\"private\",\"name\":\"\",\"members\":2}"},
    {"session_left", PL_MSG_SESSION_LEFT, b_session, "{\"type\":\"session_left\",\"session_id\":\"s4b\"}"},
    {"delivery", PL_MSG_DELIVERY, b_delivery,
     "{\"type\":\"delivery_confirmation\",\"message_id\":\"m9a\",\"id\":7,\"status\":\"stored\","
     "\"session_id\":\"s4b\"}"},
    {"delivery, no id", PL_MSG_DELIVERY, b_delivery_no_cid,
     "{\"type\":\"delivery_confirmation\",\"message_id\":\"m9a\",\"id\":null,\"status\":\"stored\","
     "\"session_id\":\"s4b\"}"},
    {"message_added", PL_MSG_EV_MESSAGE_ADDED, b_message_added,
     "{\"type\":\"session_update\",\"update_type\":\"message_added\",\"message_count\":7,\"message\":{\"id\":\"m9a\","
     "\"role\":\"user\",\"content\":\"hi\",\"connection_id\":\"c0000000000001f0a\",\"timestamp\":1763925000.125}" EV
     "}"},
    {"message_added, no entry", PL_MSG_EV_MESSAGE_ADDED, b_message_added_empty,
     "{\"type\":\"session_update\",\"update_type\":\"message_added\",\"message_count\":0" EV "}"},
    {"status", PL_MSG_EV_STATUS, b_status,
     "{\"type\":\"status\",\"message\":\"Generating response...\",\"context_messages\":7" EV "}"},
    {"response_start", PL_MSG_EV_RESPONSE_START, b_response_start,
     "{\"type\":\"response_start\",\"total_length\":null,\"response_id\":\"r77\",\"model\":\"echo\"" EV "}"},
    {"chunk", PL_MSG_EV_CHUNK, b_chunk,
     "{\"type\":\"chunk\",\"text\":\"Echo \",\"chunk_number\":1,\"is_final\":false,\"response_id\":\"r77\"" EV "}"},
    {"chunk, escapes", PL_MSG_EV_CHUNK, b_chunk_escapes,
     "{\"type\":\"chunk\",\"text\":\"q\\\" b\\\\ \\b\\f\\n\\r\\t \\u0001\\u001f\x7f / caf\xc3\xa9 \xe2\x82\xac\","
     "\"chunk_number\":2147483648,\"is_final\":false,\"response_id\":\"r77\"" EV "}"},
    {"chunk, seq past 10^15", PL_MSG_EV_CHUNK, b_chunk_big_seq,
     "{\"type\":\"chunk\",\"text\":\"Echo \",\"chunk_number\":1,\"is_final\":false,\"response_id\":\"r77\","
     "\"session_id\":\"s4b\",\"seq\":1e+15}"},
    {"chunk, empty text", PL_MSG_EV_CHUNK, b_chunk_empty,
     "{\"type\":\"chunk\",\"text\":\"\",\"chunk_number\":1,\"is_final\":false,\"response_id\":\"r77\"" EV "}"},
    {"chunk, final", PL_MSG_EV_CHUNK, b_chunk_final,
     "{\"type\":\"chunk\",\"text\":\"Echo \",\"chunk_number\":8,\"is_final\":true,\"response_id\":\"r77\"" EV "}"},
    {"response_complete", PL_MSG_EV_RESPONSE_DONE, b_done,
     "{\"type\":\"response_complete\",\"total_chunks\":8,\"processing_time\":0.21,\"message_count\":8,"
     "\"response_id\":\"r77\",\"finish_reason\":\"stop\",\"model\":\"echo\",\"usage\":{\"prompt_tokens\":12,"
     "\"completion_tokens\":8}" EV "}"},
    {"response_complete, error", PL_MSG_EV_RESPONSE_DONE, b_done_error,
     "{\"type\":\"response_complete\",\"total_chunks\":8,\"processing_time\":0.21,\"message_count\":8,"
     "\"response_id\":\"r77\",\"finish_reason\":\"error\",\"model\":\"echo\",\"usage\":{\"prompt_tokens\":12,"
     "\"completion_tokens\":8},\"error\":\"backend timed out\"" EV "}"},
    {"user_typing", PL_MSG_EV_TYPING, b_typing,
     "{\"type\":\"session_update\",\"update_type\":\"user_typing\",\"typing\":true,"
     "\"connection_id\":\"c0000000000000abc\"" EV "}"},
    {"user_typing, stop", PL_MSG_EV_TYPING, b_typing_stop,
     "{\"type\":\"session_update\",\"update_type\":\"user_typing\",\"typing\":false,"
     "\"connection_id\":\"c0000000000000abc\"" EV "}"},
    {"member_joined", PL_MSG_EV_MEMBER, b_member_joined,
     "{\"type\":\"session_update\",\"update_type\":\"member_joined\",\"connection_id\":\"c00000000000c1f0a\","
     "\"members\":2" EV "}"},
    {"member_left", PL_MSG_EV_MEMBER, b_member_left,
     "{\"type\":\"session_update\",\"update_type\":\"member_left\",\"connection_id\":\"c00000000000c1f0a\","
     "\"members\":1" EV "}"},
    {"history_cleared", PL_MSG_EV_CLEARED, b_event,
     "{\"type\":\"session_update\",\"update_type\":\"history_cleared\",\"message_count\":0" EV "}"},
    {"session_deleted", PL_MSG_EV_DELETED, b_event,
     "{\"type\":\"session_update\",\"update_type\":\"session_deleted\"" EV "}"},
};

/* Renders `env`, checks len and that it is one JSON object; caller deletes. */
static cJSON *
s_render_parse(const pl_env_t *env)
{
    size_t len = 0;
    char *out = pl_session_render(env, &len);
    assert_non_null(out);
    assert_int_equal(len, strlen(out));
    const char *end = NULL;
    cJSON *o = cJSON_ParseWithOpts(out, &end, 1);
    if (!o)
        fail_msg("rendered invalid JSON: %s", out);
    assert_true(cJSON_IsObject(o));
    free(out);
    return o;
}

static void
test_render_table(void **state)
{
    (void) state;
    for (size_t i = 0; i < sizeof s_render / sizeof s_render[0]; i++) {
        const render_case_t *c = &s_render[i];
        pl_env_t env;
        pl_env_init(&env, c->type);
        c->build(&env);
        size_t len = 0;
        char *out = pl_session_render(&env, &len);
        assert_non_null(out);
        cJSON *have = cJSON_Parse(out);
        cJSON *want = cJSON_Parse(c->expect);
        assert_non_null(want);
        if (!have || !cJSON_Compare(have, want, true))
            fail_msg("%s:\n  have %s\n  want %s", c->name, out, c->expect);
        /* the same number of keys (cJSON_Compare checks both ways, but say it) */
        assert_int_equal(cJSON_GetArraySize(have), cJSON_GetArraySize(want));
        cJSON_Delete(have);
        cJSON_Delete(want);
        free(out);
        pl_env_reset(&env);
    }
}

/* Exactly the types of §1.2 render; every other type renders NULL. */
static void
test_render_only_shown(void **state)
{
    (void) state;
    static const struct {
        pl_msg_t type;
        const char *json_type;
    } shown[] = {
        {PL_MSG_CONNECTED, "connected"},
        {PL_MSG_PONG, "pong"},
        {PL_MSG_ERROR, "error"},
        {PL_MSG_SESSION_CREATED, "session_created"},
        {PL_MSG_SESSION_JOINED, "session_joined"},
        {PL_MSG_SESSION_LEFT, "session_left"},
        {PL_MSG_DELIVERY, "delivery_confirmation"},
        {PL_MSG_EV_MESSAGE_ADDED, "session_update"},
        {PL_MSG_EV_STATUS, "status"},
        {PL_MSG_EV_RESPONSE_START, "response_start"},
        {PL_MSG_EV_CHUNK, "chunk"},
        {PL_MSG_EV_RESPONSE_DONE, "response_complete"},
        {PL_MSG_EV_TYPING, "session_update"},
        {PL_MSG_EV_MEMBER, "session_update"},
        {PL_MSG_EV_CLEARED, "session_update"},
        {PL_MSG_EV_MODEL_ERROR, "error"},
        {PL_MSG_EV_DELETED, "session_update"},
        {PL_MSG_EV_RECEIPT, "delivery_confirmation"},
        {PL_MSG_HISTORY, "history"},
    };
    for (int t = 0; t <= PL_MSG_COUNT_; t++) {
        const char *want = NULL;
        for (size_t i = 0; i < sizeof shown / sizeof shown[0]; i++)
            if (shown[i].type == (pl_msg_t) t)
                want = shown[i].json_type;
        pl_env_t env;
        pl_env_init(&env, (pl_msg_t) t); /* no fields: render must cope */
        size_t len = 12345;
        char *out = pl_session_render(&env, &len);
        if (!want) {
            if (out)
                fail_msg("%s rendered %s", pl_msg_name((pl_msg_t) t), out);
            assert_int_equal(len, 12345); /* untouched */
            continue;
        }
        if (!out)
            fail_msg("%s rendered NULL", pl_msg_name((pl_msg_t) t));
        free(out);
        cJSON *o = s_render_parse(&env);
        assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "type")), want);
        if (t >= PL_MSG_EV_MESSAGE_ADDED && t <= PL_MSG_EV_DELETED) { /* session events (●) */
            assert_true(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(o, "session_id")));
            assert_true(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(o, "seq")));
        }
        cJSON_Delete(o);
    }
    /* len may be NULL */
    pl_env_t env;
    pl_env_init(&env, PL_MSG_PONG);
    char *out = pl_session_render(&env, NULL);
    assert_non_null(out);
    assert_string_equal(out, "{\"type\":\"pong\"}");
    free(out);
    pl_env_init(&env, PL_MSG_GENERATE);
    assert_null(pl_session_render(&env, NULL));
}

/* The finish reasons of §1.2, by pl_finish_t. */
static void
test_render_finish_reasons(void **state)
{
    (void) state;
    static const struct {
        int64_t finish;
        const char *name;
    } cases[] = {
        {PL_FINISH_STOP, "stop"},   {PL_FINISH_LENGTH, "length"}, {PL_FINISH_CANCELLED, "cancelled"},
        {PL_FINISH_ERROR, "error"}, {PL_FINISH_COUNT_, "error"},  {-1, "error"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pl_env_t env;
        pl_env_init(&env, PL_MSG_EV_RESPONSE_DONE);
        b_done(&env);
        pl_env_set_i64(&env, PL_F_FINISH, cases[i].finish);
        pl_env_set_f64(&env, PL_F_DURATION, 1.23456789);
        cJSON *o = s_render_parse(&env);
        assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "finish_reason")), cases[i].name);
        /* processing_time: seconds, to the microsecond */
        s_assert_double(cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(o, "processing_time")), 1.234568,
                        "processing_time");
        assert_false(cJSON_HasObjectItem(o, "error"));
        cJSON_Delete(o);
        pl_env_reset(&env);
    }
}

/* The client's id comes back as it was sent: a number stays a number. */
static void
test_render_id_echo(void **state)
{
    (void) state;
    static const char *const ids[] = {
        "7",
        "-1",
        "0",
        "1.5",
        "1e3",
        "\"abc\"",
        "\"\"",
        "\"a\\\"b\\\\c\\n\"",
        "\"\\u00e9\\ud83d\\ude00\"",
        "true",
        "false",
        "\"" A128 "\"",
    };
    static const pl_msg_t types[] = {PL_MSG_PONG, PL_MSG_ERROR, PL_MSG_DELIVERY};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        char frame[512];
        int n = snprintf(frame, sizeof frame, "{\"type\":\"ping\",\"id\":%s}", ids[i]);
        pl_env_t env;
        assert_int_equal(s_parse(frame, (size_t) n, NULL, &s_lim, &env), 0);
        assert_true(pl_env_has(&env, PL_F_CID));
        cJSON *sent = cJSON_Parse(ids[i]);
        assert_non_null(sent);
        for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
            env.type = types[k];
            cJSON *o = s_render_parse(&env);
            cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "id");
            assert_non_null(id);
            if (!cJSON_Compare(id, sent, true))
                fail_msg("id %s not echoed as sent on %s", ids[i], pl_msg_name(types[k]));
            assert_int_equal(cJSON_IsNumber(id), cJSON_IsNumber(sent));
            cJSON_Delete(o);
        }
        cJSON_Delete(sent);
        pl_env_reset(&env);
    }
}

/* An escaped backslash followed by "u0000" is the text \u0000, not a NUL:
   it is accepted and kept whole. */
static void
test_parse_literal_backslash_u0000(void **state)
{
    (void) state;
    static const char frame[] = "{\"type\":\"chat\",\"message\":\"say \\\\u0000 please\"}";
    pl_dialect_limits_t lim = {.max_message = 1024};
    pl_env_t env;
    assert_int_equal(s_parse(frame, sizeof frame - 1, NULL, &lim, &env), 0);
    assert_int_equal(env.type, PL_MSG_CHAT);
    assert_string_equal(env.text, "say \\u0000 please");
    pl_env_reset(&env);
}

/* Strings with quotes, backslashes, controls and non-ASCII survive
   rendering, and a client's escaped text survives parse then render. */
static void
test_render_strings(void **state)
{
    (void) state;
    static const char *const texts[] = {
        "",
        "plain",
        "quote \" backslash \\ slash /",
        "newline \n return \r tab \t",
        "controls \x01\x02\x1f and DEL \x7f",
        "\xc3\xa9\xc3\xa8 \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\x98\x80",
        "</script><script>alert(1)</script>",
        "{\"type\":\"error\"}",
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        pl_env_t env;
        pl_env_init(&env, PL_MSG_EV_CHUNK);
        b_chunk(&env);
        pl_env_set_str(&env, PL_F_TEXT, texts[i]);
        pl_env_set_str(&env, PL_F_SESSION, texts[i]);
        pl_env_set_str(&env, PL_F_RESPID, texts[i]);
        cJSON *o = s_render_parse(&env);
        assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "text")), texts[i]);
        assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "session_id")), texts[i]);
        assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "response_id")), texts[i]);
        cJSON_Delete(o);

        env.type = PL_MSG_ERROR;
        pl_env_set_i64(&env, PL_F_CODE, PL_E_BAD_FRAME);
        o = s_render_parse(&env);
        assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "message")), texts[i]);
        cJSON_Delete(o);

        env.type = PL_MSG_SESSION_CREATED;
        pl_env_set_str(&env, PL_F_NAME, texts[i]);
        pl_env_set_str(&env, PL_F_MODEL, texts[i]);
        o = s_render_parse(&env);
        assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "name")), texts[i]);
        assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "model")), texts[i]);
        cJSON_Delete(o);

        pl_env_reset(&env);
        pl_env_init(&env, PL_MSG_EV_MESSAGE_ADDED);
        pl_histent_t m = {(char *) texts[i], "user", (char *) texts[i], "c1", 1.0};
        assert_int_equal(pl_env_hist_add(&env, &m), 0);
        o = s_render_parse(&env);
        cJSON *msg = cJSON_GetObjectItemCaseSensitive(o, "message");
        assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(msg, "content")), texts[i]);
        assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(msg, "id")), texts[i]);
        cJSON_Delete(o);
        pl_env_reset(&env);
    }

    /* client JSON escapes -> UTF-8 in the envelope -> the same text out */
    static const struct {
        const char *json_text;
        const char *utf8;
    } escapes[] = {
        {"a\\\"b", "a\"b"},
        {"back\\\\slash", "back\\slash"},
        {"l1\\nl2\\r\\t", "l1\nl2\r\t"},
        {"\\u00e9t\\u00e9", "\xc3\xa9t\xc3\xa9"},
        {"\\u65e5\\u672c", "\xe6\x97\xa5\xe6\x9c\xac"},
        {"\\ud83d\\ude00", "\xf0\x9f\x98\x80"},
        {"raw \xc3\xa9", "raw \xc3\xa9"},
        {"\\/\\b\\f", "/\b\f"},
    };
    const pl_dialect_limits_t big = {1024};
    for (size_t i = 0; i < sizeof escapes / sizeof escapes[0]; i++) {
        char frame[256];
        int n = snprintf(frame, sizeof frame, "{\"type\":\"chat\",\"message\":\"%s\"}", escapes[i].json_text);
        pl_env_t env;
        assert_int_equal(s_parse(frame, (size_t) n, NULL, &big, &env), 0);
        assert_string_equal(env.text, escapes[i].utf8);
        env.type = PL_MSG_EV_CHUNK;
        cJSON *o = s_render_parse(&env);
        assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "text")), escapes[i].utf8);
        cJSON_Delete(o);
        pl_env_reset(&env);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_literal_backslash_u0000),
        cmocka_unit_test(test_parse_valid),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_parse_generated),
        cmocka_unit_test(test_parse_any_bytes),
        cmocka_unit_test(test_parse_as),
        cmocka_unit_test(test_render_table),
        cmocka_unit_test(test_render_only_shown),
        cmocka_unit_test(test_render_finish_reasons),
        cmocka_unit_test(test_render_id_echo),
        cmocka_unit_test(test_render_strings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
