/*  http — the HTTP router and the POST /sessions/new body.

    Input: 1 byte of method, then the path up to the first LF (copied and
    NUL-terminated: a NUL inside cuts it, as it would a C string from lws),
    then the body. pl_http_route must give 200, 404 or 405 — 405 with an
    Allow value, a route with every non-404, a valid NUL-terminated {id} on
    the /sessions/{id} routes, and a fixed path only for that exact path
    (one trailing slash aside). pl_http_parse_create gives CREATE whose
    strings are valid UTF-8 (they reach other clients' text frames), or an
    ERROR envelope carrying the error it returns, that renders. */
#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "pl_http.h"
#include "pl_util.h"

static const char *const s_paths[PL_ROUTE_COUNT_] = {
    NULL,
#define X(id, path, allow) path,
    PL_ROUTES(X)
#undef X
};

static void
s_route(pl_method_t method, const char *path)
{
    pl_http_match_t m;
    memset(&m, 0xA5, sizeof m); /* the router must set every field it promises */
    pl_http_route(method, path, &m);
    FUZZ_CHECK(m.status == 200 || m.status == 404 || m.status == 405);
    FUZZ_CHECK(memchr(m.id, '\0', sizeof m.id) != NULL);
    if (m.status == 404) {
        FUZZ_CHECK(m.route == PL_ROUTE_NONE);
        return;
    }
    FUZZ_CHECK(m.route > PL_ROUTE_NONE && m.route < PL_ROUTE_COUNT_);
    if (m.status == 405)
        FUZZ_CHECK(m.allow != NULL && m.allow[0] != '\0');
    else
        FUZZ_CHECK(m.allow == NULL);
    if (m.route == PL_ROUTE_SESSION || m.route == PL_ROUTE_SESSION_CLEAR) {
        FUZZ_CHECK(strlen(m.id) <= PL_ID_MAX && pl_id_valid(m.id));
        FUZZ_CHECK(strncmp(path, "/sessions/", 10) == 0 && strncmp(path + 10, m.id, strlen(m.id)) == 0);
    } else {
        size_t n = strlen(path), want = strlen(s_paths[m.route]);
        bool slash = n == want + 1 && path[want] == '/'; /* one is cut ("//" is "/") */
        FUZZ_CHECK((n == want || slash) && memcmp(path, s_paths[m.route], want) == 0);
    }
}

static const pl_dialect_limits_t s_lim = {.max_message = 512};

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_in_t in = {data, size};
    pl_method_t method = (pl_method_t) (fuzz_u8(&in) % (PL_METHOD_OTHER + 1));
    const uint8_t *lf = in.n ? memchr(in.p, '\n', in.n) : NULL;
    size_t plen = lf ? (size_t) (lf - in.p) : in.n;
    char *path = fuzz_dup(in.p, plen);
    s_route(method, path);
    free(path);

    const uint8_t *body = lf ? lf + 1 : in.p + in.n;
    size_t blen = lf ? in.n - plen - 1 : 0;
    pl_env_t env;
    int rc = pl_http_parse_create((const char *) body, blen, &s_lim, &env);
    if (rc == 0) {
        FUZZ_CHECK(env.type == PL_MSG_CREATE);
        /* these strings reach other clients' text frames */
        const char *strs[] = {env.model, env.kind, env.name, env.system};
        for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
            FUZZ_CHECK(!strs[i] || fuzz_utf8_valid(strs[i], strlen(strs[i])));
    } else {
        FUZZ_CHECK(rc < 0 && env.type == PL_MSG_ERROR && env.code == -rc);
        size_t len = 0;
        char *json = pl_session_render(&env, &len);
        FUZZ_CHECK(json && strlen(json) == len);
        free(json);
    }
    pl_env_reset(&env);
    return 0;
}
