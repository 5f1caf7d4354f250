/*  pl_http_json — the JSON bodies of the HTTP endpoints (docs/protocol.md §3). */
#include <cjson/cJSON.h>
#include <string.h>

#include "pl_dialect.h"
#include "pl_http.h"
#include "pl_util.h"
#include "pl_version.h"

static char *
s_print(cJSON *o)
{
    char *out = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    return out;
}

char *
pl_http_json_error(int status, const char *code, const char *message)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "error", message);
    cJSON_AddStringToObject(o, "code", code);
    (void) status; /* the HTTP status line carries it */
    return s_print(o);
}

char *
pl_http_json_root(const char *model)
{
    static const char *const endpoints[] = {"GET /",
                                            "GET /health",
                                            "GET /stats",
                                            "GET /openapi.json",
                                            "GET /docs",
                                            "GET /demo",
                                            "POST /sessions/new",
                                            "GET /sessions",
                                            "GET /sessions/{id}",
                                            "DELETE /sessions/{id}",
                                            "POST /sessions/{id}/clear",
                                            "WS /ws"};
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", PL_NAME);
    cJSON_AddStringToObject(o, "version", PL_VERSION);
    cJSON_AddStringToObject(o, "model", model);
    cJSON_AddStringToObject(o, "websocket", "/ws");
    cJSON_AddItemToObject(o, "endpoints",
                          cJSON_CreateStringArray(endpoints, (int) (sizeof endpoints / sizeof endpoints[0])));
    return s_print(o);
}

char *
pl_http_json_health(const pl_edge_stats_t *edge, const int64_t *stats)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", "ok");
    cJSON_AddStringToObject(o, "version", PL_VERSION);
    cJSON_AddNumberToObject(o, "uptime", edge->uptime);
    cJSON_AddNumberToObject(o, "connections", (double) edge->conns_current);
    cJSON_AddNumberToObject(o, "sessions", (double) stats[PL_STAT_SESSIONS_ACTIVE]);
    cJSON_AddNumberToObject(o, "sessions_stored", (double) stats[PL_STAT_STORE_SESSIONS]);
    return s_print(o);
}

/* Sets o[a][b] = v for a path "a.b". */
static void
s_put_path(cJSON *o, const char *path, double v)
{
    const char *dot = strchr(path, '.');
    char head[32];
    size_t n = dot ? (size_t) (dot - path) : strlen(path);
    if (n >= sizeof head)
        return;
    memcpy(head, path, n);
    head[n] = '\0';
    if (!dot) {
        cJSON_AddNumberToObject(o, head, v);
        return;
    }
    cJSON *sub = cJSON_GetObjectItemCaseSensitive(o, head);
    if (!sub)
        sub = cJSON_AddObjectToObject(o, head);
    s_put_path(sub, dot + 1, v);
}

char *
pl_http_json_stats(const pl_edge_stats_t *edge, const int64_t *stats, const pl_models_t *models, const int64_t *mstats)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "uptime", edge->uptime);
    cJSON_AddNumberToObject(o, "workers", (double) edge->workers);
    cJSON_AddNumberToObject(o, "shards", (double) edge->shards);
    s_put_path(o, "connections.current", (double) edge->conns_current);
    s_put_path(o, "connections.limit", (double) edge->conns_limit);
    s_put_path(o, "connections.total", (double) edge->conns_total);
    s_put_path(o, "connections.rejected", (double) edge->conns_rejected);
    s_put_path(o, "connections.rejected_by.max_connections", (double) edge->rejected_max);
    s_put_path(o, "connections.rejected_by.per_address", (double) edge->rejected_per_address);
    s_put_path(o, "connections.rejected_by.stopping", (double) edge->rejected_stopping);
    s_put_path(o, "connections.slow_closed", (double) edge->slow_closed);
    s_put_path(o, "frames.in", (double) edge->frames_in);
    s_put_path(o, "frames.out", (double) edge->frames_out);
    s_put_path(o, "frames.coalesced", (double) edge->coalesced);
    s_put_path(o, "frames.queued_bytes", (double) edge->queued_bytes);
    s_put_path(o, "tap.published", (double) edge->tap_published);
    s_put_path(o, "tap.dropped", (double) edge->tap_dropped);
    cJSON *errors = cJSON_AddObjectToObject(o, "errors");
    for (int i = 1; i < PL_E_COUNT_; i++) {
        const char *name = pl_err_name(i);
        cJSON *have = cJSON_GetObjectItemCaseSensitive(errors, name);
        if (have)
            cJSON_SetNumberValue(have, have->valuedouble + (double) edge->errors[i]);
        else
            cJSON_AddNumberToObject(errors, name, (double) edge->errors[i]);
    }
    for (int i = 0; i < PL_STAT_COUNT_; i++)
        s_put_path(o, pl_stat_path((pl_stat_t) i), (double) stats[i]);
    s_put_path(o, "mailbox.dropped", (double) edge->mailbox_dropped);
    cJSON *per = cJSON_AddObjectToObject(o, "models");
    for (size_t m = 0; models && mstats && m < models->n; m++) {
        const int64_t *row = mstats + m * PL_MSTAT_COUNT_;
        cJSON *mo = cJSON_AddObjectToObject(per, models->v[m].name);
        cJSON_AddStringToObject(mo, "backend", models->v[m].backend);
        for (int k = 0; k < PL_MSTAT_COUNT_; k++)
            cJSON_AddNumberToObject(mo, pl_mstat_key((pl_mstat_t) k), (double) row[k]);
        int64_t n = row[PL_MSTAT_FIRST_CHUNKS];
        cJSON_AddNumberToObject(mo, "ttfc_ms_avg", n ? (double) row[PL_MSTAT_TTFC_MS_TOTAL] / (double) n : 0);
    }
    return s_print(o);
}

static cJSON *
s_session(const pl_sessinfo_t *s)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "session_id", s->id);
    cJSON_AddStringToObject(o, "model", s->model);
    cJSON_AddStringToObject(o, "kind", s->kind);
    cJSON_AddStringToObject(o, "name", s->name);
    cJSON_AddNumberToObject(o, "created_at", s->created);
    cJSON_AddNumberToObject(o, "message_count", (double) s->messages);
    cJSON_AddNumberToObject(o, "members", (double) s->members);
    return o;
}

char *
pl_http_json_session(const pl_sessinfo_t *s, const pl_hist_t *hist, int truncated)
{
    cJSON *o = s_session(s);
    if (hist) {
        cJSON_AddBoolToObject(o, "truncated", truncated);
        cJSON *msgs = cJSON_AddArrayToObject(o, "messages");
        for (size_t i = 0; i < hist->n; i++)
            cJSON_AddItemToArray(msgs, pl_session_message_json(&hist->v[i]));
    }
    return s_print(o);
}

char *
pl_http_json_sessions(const pl_sessv_t *v)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(o, "sessions");
    for (size_t i = 0; i < v->n; i++)
        cJSON_AddItemToArray(arr, s_session(&v->v[i]));
    cJSON_AddNumberToObject(o, "count", (double) v->n);
    return s_print(o);
}

char *
pl_http_json_ack(const char *verb, const char *session_id, int with_count)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, verb, 1);
    cJSON_AddStringToObject(o, "session_id", session_id);
    if (with_count)
        cJSON_AddNumberToObject(o, "message_count", 0);
    return s_print(o);
}

int
pl_http_parse_create(const char *body, size_t len, const pl_dialect_limits_t *lim, pl_env_t *env)
{
    size_t i = 0;
    while (i < len && (body[i] == ' ' || body[i] == '\n' || body[i] == '\r' || body[i] == '\t'))
        i++;
    if (i == len) {
        pl_env_init(env, PL_MSG_CREATE);
        return 0;
    }
    /* lws checks WebSocket text frames, not bodies: a name in Latin-1 would
       reach every member's text frames (which browsers then fail). */
    if (!pl_utf8_valid(body, len)) {
        pl_env_init(env, PL_MSG_ERROR);
        pl_env_set_i64(env, PL_F_CODE, PL_E_BAD_JSON);
        if (pl_env_set_str(env, PL_F_TEXT, "the body is not valid UTF-8") != 0)
            pl_env_set_i64(env, PL_F_CODE, PL_E_NOMEM);
        return -(int) env->code;
    }
    return pl_session_parse_as(body, len, "create_session", lim, env);
}
