#include "pl_http.h"

#include <stdio.h>
#include <string.h>

#include "pl_util.h"

static const struct {
    const char *path;
    const char *allow;
} s_routes[PL_ROUTE_COUNT_] = {
    {NULL, NULL},
#define X(id, path, allow) {path, allow},
    PL_ROUTES(X)
#undef X
};

static bool
s_allowed(const char *allow, pl_method_t m)
{
    static const char *const names[] = {"GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS", "?"};
    const char *name = names[m];
    size_t n = strlen(name);
    for (const char *p = allow; (p = strstr(p, name)) != NULL; p += n)
        if ((p == allow || p[-1] == ' ') && (p[n] == '\0' || p[n] == ','))
            return true;
    return false;
}

void
pl_http_route(pl_method_t method, const char *path, pl_http_match_t *out)
{
    memset(out, 0, sizeof *out);
    out->status = 404;
    char p[256];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof p || path[0] != '/')
        return;
    memcpy(p, path, n + 1);
    if (n > 1 && p[n - 1] == '/')
        p[--n] = '\0';

    pl_route_t route = PL_ROUTE_NONE;
    for (int r = 1; r < PL_ROUTE_COUNT_ && !route; r++)
        if (!strchr(s_routes[r].path, '{') && strcmp(s_routes[r].path, p) == 0)
            route = (pl_route_t) r;
    if (!route && strncmp(p, "/sessions/", 10) == 0) {
        const char *id = p + 10;
        const char *slash = strchr(id, '/');
        size_t idlen = slash ? (size_t) (slash - id) : strlen(id);
        if (idlen == 0 || idlen > PL_ID_MAX)
            return;
        memcpy(out->id, id, idlen);
        out->id[idlen] = '\0';
        if (!pl_id_valid(out->id))
            return;
        if (!slash)
            route = PL_ROUTE_SESSION;
        else if (strcmp(slash, "/clear") == 0)
            route = PL_ROUTE_SESSION_CLEAR;
        else
            return;
    }
    if (!route)
        return;
    out->route = route;
    if (!s_allowed(s_routes[route].allow, method)) {
        out->status = 405;
        out->allow = s_routes[route].allow;
        return;
    }
    out->status = 200;
}
