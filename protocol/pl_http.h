/*  pl_http — HTTP routing and the JSON bodies of the HTTP endpoints.

    pl_http_route() is pure: method and path in, route out (fuzzed). The
    pl_http_json_* functions render bodies; each returns a malloc'd
    NUL-terminated string (caller frees) or NULL on out-of-memory. */
#ifndef PL_HTTP_H
#define PL_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "pl_dialect.h"
#include "pl_envelope.h"
#include "pl_err.h"
#include "pl_limits.h"
#include "pl_models.h"

typedef enum {
    PL_METHOD_GET = 0,
    PL_METHOD_POST,
    PL_METHOD_DELETE,
    PL_METHOD_PUT,
    PL_METHOD_PATCH,
    PL_METHOD_HEAD,
    PL_METHOD_OPTIONS,
    PL_METHOD_OTHER
} pl_method_t;

#define PL_ROUTES(X)                                                                                                   \
    X(ROOT, "/", "GET")                                                                                                \
    X(HEALTH, "/health", "GET")                                                                                        \
    X(STATS, "/stats", "GET")                                                                                          \
    X(OPENAPI, "/openapi.json", "GET")                                                                                 \
    X(DOCS, "/docs", "GET")                                                                                            \
    X(DEMO, "/demo", "GET")                                                                                            \
    X(WS, "/ws", "GET")                                                                                                \
    X(SESSIONS_NEW, "/sessions/new", "POST")                                                                           \
    X(SESSIONS, "/sessions", "GET")                                                                                    \
    X(SESSION, "/sessions/{id}", "GET, DELETE")                                                                        \
    X(SESSION_CLEAR, "/sessions/{id}/clear", "POST")

typedef enum {
    PL_ROUTE_NONE = 0,
#define X(id, path, allow) PL_ROUTE_##id,
    PL_ROUTES(X)
#undef X
        PL_ROUTE_COUNT_
} pl_route_t;

typedef struct {
    pl_route_t route;
    int status;             /* 200 (routed), 404 (no such path), 405 (method) */
    const char *allow;      /* for 405: the Allow header value */
    char id[PL_ID_MAX + 1]; /* {id} of /sessions/{id}... */
} pl_http_match_t;

/* Routes `method` on `path` (no query string). Never fails: unknown paths
   give status 404, known paths with another method 405 and `allow`. */
void pl_http_route(pl_method_t method, const char *path, pl_http_match_t *out);

/* The edge's own counters, for /health and /stats. */
typedef struct {
    int64_t conns_current, conns_total, conns_rejected, slow_closed;
    /* WebSockets admitted at most: --max-connections within the open-file limit */
    int64_t conns_limit;
    /* conns_rejected by reason: total cap, per-address cap, shutting down */
    int64_t rejected_max, rejected_per_address, rejected_stopping;
    int64_t frames_in, frames_out, mailbox_dropped;
    /* chunk frames merged into a slow consumer's queued chunk; bytes now
       charged to outbound queues (a shared frame once per queue) */
    int64_t coalesced, queued_bytes;
    /* --tap: records published, and dropped for a recorder too far behind */
    int64_t tap_published, tap_dropped;
    int64_t errors[PL_E_COUNT_];
    double uptime;
    int64_t workers, shards;
} pl_edge_stats_t;

char *pl_http_json_error(int status, const char *code, const char *message);
char *pl_http_json_root(const char *model);
char *pl_http_json_health(const pl_edge_stats_t *edge, const int64_t *stats);
/* `mstats` (may be NULL): models->n rows of PL_MSTAT_COUNT_ counters. */
char *pl_http_json_stats(const pl_edge_stats_t *edge, const int64_t *stats, const pl_models_t *models,
                         const int64_t *mstats);
/* One session; with `hist` (may be NULL) its messages, and whether older
   ones were left out. */
char *pl_http_json_session(const pl_sessinfo_t *s, const pl_hist_t *hist, int truncated);
char *pl_http_json_sessions(const pl_sessv_t *v);
/* {"<verb>":true,"session_id":…} (+ "message_count":0 when `count`). */
char *pl_http_json_ack(const char *verb, const char *session_id, int with_count);

/* Parses the optional body of POST /sessions/new like a create_session
   frame (same fields, same checks). 0, or a negative pl_err with env an
   ERROR envelope whose TEXT says why. An empty body is an empty request. */
int pl_http_parse_create(const char *body, size_t len, const pl_dialect_limits_t *lim, pl_env_t *env);

#endif
