/*  test_http — HTTP routing and bodies (protocol/pl_http.c, pl_http_json.c)
    against docs/protocol.md §3.

    pl_http_route: every route of PL_ROUTES with every method (200 or 405
    and the Allow value), then a table of paths. pl_http_parse_create: a
    table of bodies. pl_http_json_*: each body parsed back with cJSON and
    compared with the exact object the docs give. */
#include <setjmp.h> /* cmocka needs these three first */
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pl_http.h"
#include "pl_version.h"

#define J(s) s, sizeof(s) - 1
#define A8 "aaaaaaaa"
#define A16 A8 A8
#define A64 A16 A16 A16 A16

static const char *const s_method_names[] = {"GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS", "OTHER"};
#define N_METHODS (PL_METHOD_OTHER + 1)

/* ---- routing ---- */

static const struct {
    pl_route_t route;
    const char *path;
    const char *allow;
} s_routes[] = {
#define X(id, path, allow) {PL_ROUTE_##id, path, allow},
    PL_ROUTES(X)
#undef X
};

/* Is `m` one of the comma-separated methods in `allow`? */
static bool
s_in_allow(const char *allow, pl_method_t m)
{
    char copy[64];
    snprintf(copy, sizeof copy, "%s", allow);
    for (char *save = NULL, *tok = strtok_r(copy, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save))
        if (strcmp(tok, s_method_names[m]) == 0)
            return true;
    return false;
}

/* "/sessions/{id}/clear" -> "/sessions/abc/clear" */
static void
s_concrete(const char *pattern, char *out, size_t size)
{
    const char *brace = strstr(pattern, "{id}");
    if (!brace) {
        snprintf(out, size, "%s", pattern);
        return;
    }
    snprintf(out, size, "%.*sabc%s", (int) (brace - pattern), pattern, brace + 4);
}

static void
s_assert_route(pl_method_t m, const char *path, int status, pl_route_t route, const char *allow, const char *id)
{
    pl_http_match_t out;
    memset(&out, 0x5a, sizeof out);
    pl_http_route(m, path, &out);
    if (out.status != status || out.route != route)
        fail_msg("%s %.80s: status %d route %d, want %d %d", s_method_names[m], path, out.status, (int) out.route,
                 status, (int) route);
    if (status == 405) {
        assert_non_null(out.allow);
        assert_string_equal(out.allow, allow);
    } else {
        assert_null(out.allow);
    }
    if (id)
        assert_string_equal(out.id, id);
    else if (status != 404)
        assert_string_equal(out.id, "");
}

/* Every route of the table with every method, with and without a trailing
   slash: 200 for the methods of its Allow value, 405 with it otherwise. */
static void
test_route_every_route_and_method(void **state)
{
    (void) state;
    assert_int_equal(sizeof s_routes / sizeof s_routes[0], PL_ROUTE_COUNT_ - 1);
    for (size_t i = 0; i < sizeof s_routes / sizeof s_routes[0]; i++) {
        char path[128], slashed[130];
        s_concrete(s_routes[i].path, path, sizeof path);
        snprintf(slashed, sizeof slashed, "%s/", path);
        const char *id = strstr(s_routes[i].path, "{id}") ? "abc" : NULL;
        int allowed = 0;
        for (int m = 0; m < N_METHODS; m++) {
            bool ok = s_in_allow(s_routes[i].allow, (pl_method_t) m);
            allowed += ok;
            s_assert_route((pl_method_t) m, path, ok ? 200 : 405, s_routes[i].route, s_routes[i].allow, id);
            if (strcmp(path, "/") != 0)
                s_assert_route((pl_method_t) m, slashed, ok ? 200 : 405, s_routes[i].route, s_routes[i].allow, id);
        }
        assert_true(allowed >= 1);
    }
}

typedef struct {
    pl_method_t method;
    const char *path;
    int status;
    pl_route_t route;
    const char *allow; /* 405 */
    const char *id;    /* routes with {id} */
} route_case_t;

static void
test_route_table(void **state)
{
    (void) state;
    static const route_case_t cases[] = {
        /* the documented endpoints */
        {PL_METHOD_GET, "/", 200, PL_ROUTE_ROOT},
        {PL_METHOD_GET, "/health", 200, PL_ROUTE_HEALTH},
        {PL_METHOD_GET, "/health/", 200, PL_ROUTE_HEALTH},
        {PL_METHOD_GET, "/stats", 200, PL_ROUTE_STATS},
        {PL_METHOD_GET, "/openapi.json", 200, PL_ROUTE_OPENAPI},
        {PL_METHOD_GET, "/docs", 200, PL_ROUTE_DOCS},
        {PL_METHOD_GET, "/demo", 200, PL_ROUTE_DEMO},
        {PL_METHOD_GET, "/ws", 200, PL_ROUTE_WS},
        {PL_METHOD_POST, "/sessions/new", 200, PL_ROUTE_SESSIONS_NEW},
        {PL_METHOD_POST, "/sessions/new/", 200, PL_ROUTE_SESSIONS_NEW},
        {PL_METHOD_GET, "/sessions", 200, PL_ROUTE_SESSIONS},
        {PL_METHOD_GET, "/sessions/abc", 200, PL_ROUTE_SESSION, NULL, "abc"},
        {PL_METHOD_DELETE, "/sessions/abc", 200, PL_ROUTE_SESSION, NULL, "abc"},
        {PL_METHOD_GET, "/sessions/abc/", 200, PL_ROUTE_SESSION, NULL, "abc"},
        {PL_METHOD_POST, "/sessions/abc/clear", 200, PL_ROUTE_SESSION_CLEAR, NULL, "abc"},
        {PL_METHOD_POST, "/sessions/abc/clear/", 200, PL_ROUTE_SESSION_CLEAR, NULL, "abc"},
        {PL_METHOD_GET, "/sessions/s0123456789abcdef", 200, PL_ROUTE_SESSION, NULL, "s0123456789abcdef"},
        {PL_METHOD_GET, "/sessions/123e4567-e89b-12d3-a456-426614174000", 200, PL_ROUTE_SESSION, NULL,
         "123e4567-e89b-12d3-a456-426614174000"},
        {PL_METHOD_GET, "/sessions/azAZ09_.:-", 200, PL_ROUTE_SESSION, NULL, "azAZ09_.:-"},
        {PL_METHOD_GET, "/sessions/" A64, 200, PL_ROUTE_SESSION, NULL, A64},
        {PL_METHOD_POST, "/sessions/" A64 "/clear", 200, PL_ROUTE_SESSION_CLEAR, NULL, A64},
        /* wrong methods: 405 and Allow */
        {PL_METHOD_POST, "/", 405, PL_ROUTE_ROOT, "GET"},
        {PL_METHOD_POST, "/health", 405, PL_ROUTE_HEALTH, "GET"},
        {PL_METHOD_DELETE, "/health/", 405, PL_ROUTE_HEALTH, "GET"},
        {PL_METHOD_PUT, "/stats", 405, PL_ROUTE_STATS, "GET"},
        {PL_METHOD_GET, "/sessions/new", 405, PL_ROUTE_SESSIONS_NEW, "POST"},
        {PL_METHOD_DELETE, "/sessions/new", 405, PL_ROUTE_SESSIONS_NEW, "POST"},
        {PL_METHOD_POST, "/sessions", 405, PL_ROUTE_SESSIONS, "GET"},
        {PL_METHOD_POST, "/sessions/abc", 405, PL_ROUTE_SESSION, "GET, DELETE", "abc"},
        {PL_METHOD_PUT, "/sessions/abc", 405, PL_ROUTE_SESSION, "GET, DELETE", "abc"},
        {PL_METHOD_PATCH, "/sessions/abc", 405, PL_ROUTE_SESSION, "GET, DELETE", "abc"},
        {PL_METHOD_GET, "/sessions/abc/clear", 405, PL_ROUTE_SESSION_CLEAR, "POST", "abc"},
        {PL_METHOD_DELETE, "/sessions/abc/clear", 405, PL_ROUTE_SESSION_CLEAR, "POST", "abc"},
        {PL_METHOD_HEAD, "/health", 405, PL_ROUTE_HEALTH, "GET"},
        {PL_METHOD_OPTIONS, "/ws", 405, PL_ROUTE_WS, "GET"},
        {PL_METHOD_OTHER, "/sessions/abc", 405, PL_ROUTE_SESSION, "GET, DELETE", "abc"},
        /* unknown paths: 404, whatever the method */
        {PL_METHOD_GET, "/nope", 404, PL_ROUTE_NONE},
        {PL_METHOD_POST, "/nope", 404, PL_ROUTE_NONE},
        {PL_METHOD_GET, "/healthz", 404, PL_ROUTE_NONE},
        {PL_METHOD_GET, "/HEALTH", 404, PL_ROUTE_NONE},
        {PL_METHOD_GET, "/health/x", 404, PL_ROUTE_NONE},
        {PL_METHOD_GET, "/health//", 404, PL_ROUTE_NONE},
        {PL_METHOD_GET, "/health?x=1", 404, PL_ROUTE_NONE},
        {PL_METHOD_GET, "/ws/abc", 404, PL_ROUTE_NONE},
        {PL_METHOD_GET, "/api/v1/ws/ws", 404, PL_ROUTE_NONE},
        {PL_METHOD_GET, "/sessionsx", 404, PL_ROUTE_NONE},
        {PL_METHOD_GET, "/sessions/abc/other", 404, PL_ROUTE_NONE},
        {PL_METHOD_POST, "/sessions/abc/clear/x", 404, PL_ROUTE_NONE},
        {PL_METHOD_POST, "/sessions/abc/clearx", 404, PL_ROUTE_NONE},
        {PL_METHOD_POST, "/sessions//clear", 404, PL_ROUTE_NONE},
        {PL_METHOD_GET, "/sessions//", 404, PL_ROUTE_NONE},
        {PL_METHOD_GET, "/sessions/a b", 404, PL_ROUTE_NONE},
        {PL_METHOD_GET, "/sessions/a%20b", 404, PL_ROUTE_NONE},
        {PL_METHOD_DELETE, "/sessions/a\"b", 404, PL_ROUTE_NONE},
        {PL_METHOD_GET, "/sessions/\xc3\xa9", 404, PL_ROUTE_NONE},
        {PL_METHOD_GET, "/sessions/" A64 "a", 404, PL_ROUTE_NONE},
        {PL_METHOD_POST, "/sessions/" A64 "a/clear", 404, PL_ROUTE_NONE},
        {PL_METHOD_GET, "health", 404, PL_ROUTE_NONE},
        {PL_METHOD_GET, "sessions/abc", 404, PL_ROUTE_NONE},
        {PL_METHOD_GET, "", 404, PL_ROUTE_NONE},
        {PL_METHOD_GET, " /health", 404, PL_ROUTE_NONE},
        {PL_METHOD_GET, "*", 404, PL_ROUTE_NONE},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        s_assert_route(cases[i].method, cases[i].path, cases[i].status, cases[i].route, cases[i].allow, cases[i].id);
}

/* Long paths: refused with 404, never copied past the router's buffer. */
static void
test_route_long_paths(void **state)
{
    (void) state;
    static const struct {
        const char *prefix;
        size_t len;
    } cases[] = {
        {"/", 255},          {"/", 256},          {"/", 300},       {"/sessions/", 100},  {"/sessions/", 250},
        {"/sessions/", 255}, {"/sessions/", 300}, {"/health", 300}, {"/sessions/", 4096}, {"/", 1u << 20},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *p = malloc(cases[i].len + 1);
        assert_non_null(p);
        size_t n = strlen(cases[i].prefix);
        memcpy(p, cases[i].prefix, n);
        memset(p + n, 'a', cases[i].len - n);
        p[cases[i].len] = '\0';
        for (int m = 0; m < N_METHODS; m++)
            s_assert_route((pl_method_t) m, p, 404, PL_ROUTE_NONE, NULL, NULL);
        /* all slashes, too */
        memset(p, '/', cases[i].len);
        s_assert_route(PL_METHOD_GET, p, 404, PL_ROUTE_NONE, NULL, NULL);
        free(p);
    }
}

/* ---- POST /sessions/new bodies ---- */

static void
test_parse_create(void **state)
{
    (void) state;
    const pl_dialect_limits_t lim = {16};
    static const struct {
        const char *name;
        const char *body;
        size_t len;
        int code; /* 0: valid */
        uint64_t fields;
        const char *model, *kind, *sname, *system;
    } cases[] = {
        {"empty body", J(""), 0, 0},
        {"whitespace", J(" \r\n\t "), 0, 0},
        {"empty object", J("{}"), 0, 0},
        {"full body",
         J("{\"model_id\":\"echo\",\"kind\":\"shared\",\"name\":\"Team\",\"system_prompt\":\"Be brief.\"}"), 0,
         F_(MODEL) | F_(KIND) | F_(NAME) | F_(SYSTEM), "echo", "shared", "Team", "Be brief."},
        {"padded body", J("\n  {\"kind\":\"group\"}  \n"), 0, F_(KIND), NULL, "group"},
        {"a frame's type is ignored", J("{\"type\":\"chat\",\"name\":\"n\"}"), 0, F_(NAME), NULL, NULL, "n"},
        {"nulls are absent", J("{\"model_id\":null,\"kind\":null}"), 0, 0},
        {"invalid JSON", J("{"), PL_E_BAD_JSON},
        {"not JSON", J("name=x"), PL_E_BAD_JSON},
        {"trailing garbage", J("{} {}"), PL_E_BAD_JSON},
        {"NUL byte", J("{\"name\":\"a\0b\"}"), PL_E_BAD_JSON},
        /* reached members' text frames as invalid UTF-8 (found by fuzz/http) */
        {"Latin-1 name", J("{\"name\":\"caf\xe9\"}"), PL_E_BAD_JSON},
        {"invalid UTF-8 outside strings", J("{\"kind\":\"group\"}\xff"), PL_E_BAD_JSON},
        {"truncated sequence at the end", J("{\"name\":\"a\"} \xe2\x82"), PL_E_BAD_JSON},
        {"surrogate", J("{\"name\":\"\xed\xa0\x80\"}"), PL_E_BAD_JSON},
        {"overlong", J("{\"name\":\"\xc0\xaf\"}"), PL_E_BAD_JSON},
        {"UTF-8 name", J("{\"name\":\"caf\xc3\xa9 \xf0\x9f\x98\x80\"}"), 0, F_(NAME), NULL, NULL,
         "caf\xc3\xa9 \xf0\x9f\x98\x80"},
        {"bad kind", J("{\"kind\":\"public\"}"), PL_E_BAD_FRAME},
        {"kind not a string", J("{\"kind\":1}"), PL_E_BAD_FRAME},
        {"model_id too long", J("{\"model_id\":\"" A64 A64 "a\"}"), PL_E_BAD_FRAME},
        {"array body", J("[]"), PL_E_BAD_FRAME},
        {"null body", J("null"), PL_E_BAD_FRAME},
        {"system_prompt over the limit", J("{\"system_prompt\":\"" A16 "a\"}"), PL_E_TOO_LARGE},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *body = malloc(cases[i].len ? cases[i].len : 1); /* exact size: ASan sees overreads */
        assert_non_null(body);
        memcpy(body, cases[i].body, cases[i].len);
        pl_env_t env;
        memset(&env, 0xa5, sizeof env);
        int rc = pl_http_parse_create(body, cases[i].len, &lim, &env);
        free(body);
        if (cases[i].code) {
            if (rc != -cases[i].code)
                fail_msg("%s: rc %d, want %d", cases[i].name, rc, -cases[i].code);
            assert_int_equal(env.type, PL_MSG_ERROR);
            assert_true(env.code == cases[i].code);
            assert_non_null(env.text);
            assert_true(env.text[0] != '\0');
        } else {
            if (rc != 0)
                fail_msg("%s: rc %d (%s)", cases[i].name, rc, env.text ? env.text : "");
            assert_int_equal(env.type, PL_MSG_CREATE);
            assert_int_equal(env.present, cases[i].fields);
            if (cases[i].model)
                assert_string_equal(env.model, cases[i].model);
            if (cases[i].kind)
                assert_string_equal(env.kind, cases[i].kind);
            if (cases[i].sname)
                assert_string_equal(env.name, cases[i].sname);
            if (cases[i].system)
                assert_string_equal(env.system, cases[i].system);
        }
        pl_env_reset(&env);
    }
    /* no body at all */
    pl_env_t env;
    assert_int_equal(pl_http_parse_create(NULL, 0, &lim, &env), 0);
    assert_int_equal(env.type, PL_MSG_CREATE);
    assert_int_equal(env.present, 0);
    pl_env_reset(&env);
}

/* ---- bodies ---- */

/* Parses `out` (consumed), compares it with `want` exactly, any key order. */
static void
s_assert_json(char *out, const char *want, const char *what)
{
    assert_non_null(out);
    cJSON *have = cJSON_Parse(out);
    cJSON *w = cJSON_Parse(want);
    assert_non_null(w);
    if (!have || !cJSON_Compare(have, w, true))
        fail_msg("%s:\n  have %s\n  want %s", what, out, want);
    cJSON_Delete(have);
    cJSON_Delete(w);
    free(out);
}

static cJSON *
s_get_path(const cJSON *o, const char *path)
{
    char buf[64];
    snprintf(buf, sizeof buf, "%s", path);
    const cJSON *cur = o;
    for (char *save = NULL, *tok = strtok_r(buf, ".", &save); tok && cur; tok = strtok_r(NULL, ".", &save))
        cur = cJSON_GetObjectItemCaseSensitive(cur, tok);
    return (cJSON *) cur;
}

static void
test_json_error(void **state)
{
    (void) state;
    static const struct {
        int status;
        const char *code, *message, *want;
    } cases[] = {
        {404, "NOT_FOUND", "not found", "{\"error\":\"not found\",\"code\":\"NOT_FOUND\"}"},
        {405, "METHOD_NOT_ALLOWED", "method not allowed",
         "{\"error\":\"method not allowed\",\"code\":\"METHOD_NOT_ALLOWED\"}"},
        {400, "BAD_FRAME", "\"kind\" must be private, shared or group",
         "{\"error\":\"\\\"kind\\\" must be private, shared or group\",\"code\":\"BAD_FRAME\"}"},
        {413, "TOO_LARGE", "too large", "{\"error\":\"too large\",\"code\":\"TOO_LARGE\"}"},
        {500, "INTERNAL", "line\nbreak \xc3\xa9", "{\"error\":\"line\\nbreak \\u00e9\",\"code\":\"INTERNAL\"}"},
    };
    /* §3: {"error":TEXT,"code":CODE}; the status is the status line's, not a key */
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        s_assert_json(pl_http_json_error(cases[i].status, cases[i].code, cases[i].message), cases[i].want,
                      cases[i].code);
}

static void
test_json_root(void **state)
{
    (void) state;
    char *out = pl_http_json_root("echo");
    assert_non_null(out);
    cJSON *o = cJSON_Parse(out);
    assert_non_null(o);
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "name")), "parley");
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "version")), PL_VERSION);
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "model")), "echo");
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "websocket")), "/ws");
    cJSON *eps = cJSON_GetObjectItemCaseSensitive(o, "endpoints");
    assert_true(cJSON_IsArray(eps));
    assert_int_equal(cJSON_GetArraySize(o), 5);

    /* every routed endpoint is listed as "METHOD /path" (the WebSocket as WS) */
    int listed = 0;
    for (size_t i = 0; i < sizeof s_routes / sizeof s_routes[0]; i++) {
        char allow[32];
        snprintf(allow, sizeof allow, "%s", s_routes[i].allow);
        for (char *save = NULL, *m = strtok_r(allow, ", ", &save); m; m = strtok_r(NULL, ", ", &save)) {
            char want[96];
            snprintf(want, sizeof want, "%s %s", s_routes[i].route == PL_ROUTE_WS ? "WS" : m, s_routes[i].path);
            bool found = false;
            const cJSON *e;
            cJSON_ArrayForEach(e, eps)
            {
                assert_true(cJSON_IsString(e));
                found |= strcmp(e->valuestring, want) == 0;
            }
            if (!found)
                fail_msg("endpoint \"%s\" not listed", want);
            listed++;
        }
    }
    assert_int_equal(cJSON_GetArraySize(eps), listed);
    cJSON_Delete(o);
    free(out);
}

static void
test_json_health(void **state)
{
    (void) state;
    pl_edge_stats_t edge;
    memset(&edge, 0, sizeof edge);
    edge.uptime = 12.5;
    edge.conns_current = 3;
    edge.conns_total = 99;
    int64_t stats[PL_STAT_COUNT_] = {0};
    stats[PL_STAT_SESSIONS_ACTIVE] = 4;
    stats[PL_STAT_SESSIONS_MEMBERS] = 7;
    stats[PL_STAT_STORE_SESSIONS] = 9;
    s_assert_json(pl_http_json_health(&edge, stats),
                  "{\"status\":\"ok\",\"version\":\"" PL_VERSION "\",\"uptime\":12.5,\"connections\":3,"
                  "\"sessions\":4,\"sessions_stored\":9}",
                  "health");
    memset(stats, 0, sizeof stats);
    memset(&edge, 0, sizeof edge);
    s_assert_json(pl_http_json_health(&edge, stats),
                  "{\"status\":\"ok\",\"version\":\"" PL_VERSION "\",\"uptime\":0,\"connections\":0,\"sessions\":0,\"sessions_stored\":0}",
                  "health, zeros");
}

static void
test_json_stats(void **state)
{
    (void) state;
    pl_edge_stats_t edge;
    memset(&edge, 0, sizeof edge);
    edge.uptime = 3600.25;
    edge.workers = 4;
    edge.shards = 8;
    edge.conns_current = 2;
    edge.conns_total = 50;
    edge.conns_rejected = 1;
    edge.slow_closed = 5;
    edge.frames_in = 1000;
    edge.frames_out = 2000;
    edge.mailbox_dropped = 6;
    edge.tap_published = 900;
    edge.tap_dropped = 12;
    for (int i = 0; i < PL_E_COUNT_; i++)
        edge.errors[i] = 10 * i + 1;
    int64_t stats[PL_STAT_COUNT_];
    for (int i = 0; i < PL_STAT_COUNT_; i++)
        stats[i] = 100 + i;

    pl_models_t models;
    char why[64];
    assert_int_equal(pl_models_parse(NULL, 0, &models, why, sizeof why), 0);
    int64_t mstats[PL_MSTAT_COUNT_] = {3, 1, 0, 2, 50, 7, 9};
    char *out = pl_http_json_stats(&edge, stats, &models, mstats);
    pl_models_free(&models);
    assert_non_null(out);
    cJSON *o = cJSON_Parse(out);
    assert_non_null(o);

    /* every key of docs/protocol.md §3 */
    static const struct {
        const char *path;
        double value;
    } doc[] = {
        {"uptime", 3600.25},
        {"workers", 4},
        {"shards", 8},
        {"connections.current", 2},
        {"connections.total", 50},
        {"frames.in", 1000},
        {"frames.out", 2000},
        {"sessions.active", 100 + PL_STAT_SESSIONS_ACTIVE},
        {"sessions.members", 100 + PL_STAT_SESSIONS_MEMBERS},
        {"messages.user", 100 + PL_STAT_MESSAGES_USER},
        {"messages.model", 100 + PL_STAT_MESSAGES_MODEL},
        {"turns.started", 100 + PL_STAT_TURNS_STARTED},
        {"turns.completed", 100 + PL_STAT_TURNS_COMPLETED},
        {"turns.queued", 100 + PL_STAT_TURNS_QUEUED},
        {"turns.rejected", 100 + PL_STAT_TURNS_REJECTED},
        {"model.streams", 100 + PL_STAT_MODEL_STREAMS},
        {"model.active", 100 + PL_STAT_MODEL_ACTIVE},
        {"model.chunks", 100 + PL_STAT_MODEL_CHUNKS},
        {"mailbox.dropped", 6},
    };
    for (size_t i = 0; i < sizeof doc / sizeof doc[0]; i++) {
        cJSON *v = s_get_path(o, doc[i].path);
        if (!cJSON_IsNumber(v))
            fail_msg("stats: no number at %s in %s", doc[i].path, out);
        if (v->valuedouble != doc[i].value)
            fail_msg("stats: %s is %g, want %g", doc[i].path, v->valuedouble, doc[i].value);
    }
    /* every counter of pl_stats.def, at its path */
    for (int i = 0; i < PL_STAT_COUNT_; i++) {
        cJSON *v = s_get_path(o, pl_stat_path((pl_stat_t) i));
        if (!cJSON_IsNumber(v) || v->valuedouble != (double) stats[i])
            fail_msg("stats: %s missing or wrong", pl_stat_path((pl_stat_t) i));
    }
    /* every error code's wire name (codes sharing a name are summed); no "OK" */
    cJSON *errors = cJSON_GetObjectItemCaseSensitive(o, "errors");
    assert_true(cJSON_IsObject(errors));
    int names = 0;
    for (int i = 1; i < PL_E_COUNT_; i++) {
        const char *name = pl_err_name(i);
        if (pl_err_from_name(name) != i)
            continue; /* an alias (NOMEM -> INTERNAL, AGAIN -> BUSY): counted under its first code */
        names++;
        double want = 0;
        for (int k = 1; k < PL_E_COUNT_; k++)
            if (strcmp(pl_err_name(k), name) == 0)
                want += (double) edge.errors[k];
        cJSON *v = cJSON_GetObjectItemCaseSensitive(errors, name);
        if (!cJSON_IsNumber(v) || v->valuedouble != want)
            fail_msg("stats: errors.%s missing or not %g", name, want);
    }
    assert_int_equal(cJSON_GetArraySize(errors), names);
    assert_false(cJSON_HasObjectItem(errors, "OK"));
    assert_true(cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(errors, "INTERNAL")) ==
                (double) (edge.errors[PL_E_INTERNAL] + edge.errors[PL_E_NOMEM]));
    assert_true(cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(errors, "BUSY")) ==
                (double) (edge.errors[PL_E_BUSY] + edge.errors[PL_E_AGAIN]));
    /* the groups are objects, and nothing else is at the top */
    static const char *const top[] = {"uptime",   "workers",  "shards", "connections", "frames", "errors",
                                      "sessions", "messages", "turns",  "model",       "mailbox", "models",
                                      "resume",   "store",       "tap"};
    for (size_t i = 0; i < sizeof top / sizeof top[0]; i++)
        assert_true(cJSON_HasObjectItem(o, top[i]));
    assert_int_equal(cJSON_GetArraySize(o), sizeof top / sizeof top[0]);
    const cJSON *tap = cJSON_GetObjectItemCaseSensitive(o, "tap");
    assert_true(cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(tap, "published")) == 900);
    assert_true(cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(tap, "dropped")) == 12);
    const cJSON *echo = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(o, "models"), "echo");
    assert_non_null(echo);
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(echo, "backend")), "echo");
    assert_int_equal((int) cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(echo, "requests")), 3);
    assert_int_equal((int) cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(echo, "completion_tokens")), 9);
    assert_true(cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(echo, "ttfc_ms_avg")) == 25.0);
    cJSON_Delete(o);
    free(out);
}

static void
test_json_session(void **state)
{
    (void) state;
    pl_sessinfo_t s = {"s4b", "echo", "shared", "Team \"A\"", 2, 1, 1763925000.5};
    s_assert_json(pl_http_json_session(&s, NULL, 0),
                  "{\"session_id\":\"s4b\",\"model\":\"echo\",\"kind\":\"shared\",\"name\":\"Team \\\"A\\\"\","
                  "\"created_at\":1763925000.5,\"message_count\":2,\"members\":1}",
                  "session without messages");

    pl_hist_t empty = {NULL, 0};
    s_assert_json(pl_http_json_session(&s, &empty, 1),
                  "{\"session_id\":\"s4b\",\"model\":\"echo\",\"kind\":\"shared\",\"name\":\"Team \\\"A\\\"\","
                  "\"created_at\":1763925000.5,\"message_count\":2,\"members\":1,\"truncated\":true,\"messages\":[]}",
                  "session with an empty history");

    pl_histent_t v[] = {
        {"m1", "user", "hi\n\xc3\xa9", "c0000000000000001", 1763925001.25},
        {"m2", "assistant", "Echo turn 1 (1 context messages): hi", "", 1763925002.5, 5, PL_FINISH_LENGTH},
    };
    pl_hist_t hist = {v, 2};
    s_assert_json(
        pl_http_json_session(&s, &hist, 0),
        "{\"session_id\":\"s4b\",\"model\":\"echo\",\"kind\":\"shared\",\"name\":\"Team \\\"A\\\"\","
        "\"created_at\":1763925000.5,\"message_count\":2,\"members\":1,\"truncated\":false,\"messages\":["
        "{\"id\":\"m1\",\"role\":\"user\",\"content\":\"hi\\n\\u00e9\",\"connection_id\":\"c0000000000000001\","
        "\"timestamp\":1763925001.25},"
        "{\"id\":\"m2\",\"role\":\"assistant\",\"content\":\"Echo turn 1 (1 context messages): hi\","
        "\"timestamp\":1763925002.5,\"finish_reason\":\"length\"}]}",
        "session with messages");
}

static void
test_json_sessions(void **state)
{
    (void) state;
    pl_sessv_t none = {NULL, 0};
    s_assert_json(pl_http_json_sessions(&none), "{\"sessions\":[],\"count\":0}", "no sessions");

    pl_sessinfo_t v[] = {
        {"s1", "echo", "private", "", 0, 1, 10.5},
        {"s2", "other", "group", "g", 7, 3, 20.25},
        {"s3", "echo", "shared", "x", 1, 0, 30},
    };
    pl_sessv_t list = {v, 3};
    s_assert_json(pl_http_json_sessions(&list),
                  "{\"sessions\":["
                  "{\"session_id\":\"s1\",\"model\":\"echo\",\"kind\":\"private\",\"name\":\"\",\"created_at\":10.5,"
                  "\"message_count\":0,\"members\":1},"
                  "{\"session_id\":\"s2\",\"model\":\"other\",\"kind\":\"group\",\"name\":\"g\",\"created_at\":20.25,"
                  "\"message_count\":7,\"members\":3},"
                  "{\"session_id\":\"s3\",\"model\":\"echo\",\"kind\":\"shared\",\"name\":\"x\",\"created_at\":30,"
                  "\"message_count\":1,\"members\":0}],\"count\":3}",
                  "three sessions");
}

static void
test_json_ack(void **state)
{
    (void) state;
    static const struct {
        const char *verb, *id;
        int with_count;
        const char *want;
    } cases[] = {
        {"deleted", "s4b", 0, "{\"deleted\":true,\"session_id\":\"s4b\"}"},
        {"cleared", "s4b", 1, "{\"cleared\":true,\"session_id\":\"s4b\",\"message_count\":0}"},
        {"deleted", A64, 0, "{\"deleted\":true,\"session_id\":\"" A64 "\"}"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        s_assert_json(pl_http_json_ack(cases[i].verb, cases[i].id, cases[i].with_count), cases[i].want, cases[i].verb);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_route_every_route_and_method),
        cmocka_unit_test(test_route_table),
        cmocka_unit_test(test_route_long_paths),
        cmocka_unit_test(test_parse_create),
        cmocka_unit_test(test_json_error),
        cmocka_unit_test(test_json_root),
        cmocka_unit_test(test_json_health),
        cmocka_unit_test(test_json_stats),
        cmocka_unit_test(test_json_session),
        cmocka_unit_test(test_json_sessions),
        cmocka_unit_test(test_json_ack),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
