/*  edge_http — the HTTP endpoints, served by the edge thread.

    A request is routed (pl_http_route), then answered at once (static
    pages, errors) or sent as an envelope to the session shard that owns the
    session — or to every shard for lists and statistics — and answered when
    the replies are in. Responses are written from HTTP_WRITEABLE. */
#include <stdlib.h>
#include <string.h>

#include "../protocol/pl_err.h"
#include "../protocol/pl_util.h"
#include "../transport/pl_log.h"
#include "edge_int.h"
#include "www_assets.h"

/* HTTP requests waiting for actors' replies, at most: past it, 503. Each
   may hold a session's history in flight, so this bounds the edge's memory
   and the work one client can queue. */
#define S_HTTP_INFLIGHT_MAX 256

static const struct {
    enum lws_token_indexes token;
    pl_method_t method;
    const char *name;
} s_methods[] = {
    {WSI_TOKEN_GET_URI, PL_METHOD_GET, "GET"},          {WSI_TOKEN_POST_URI, PL_METHOD_POST, "POST"},
    {WSI_TOKEN_DELETE_URI, PL_METHOD_DELETE, "DELETE"}, {WSI_TOKEN_PUT_URI, PL_METHOD_PUT, "PUT"},
    {WSI_TOKEN_PATCH_URI, PL_METHOD_PATCH, "PATCH"},    {WSI_TOKEN_HEAD_URI, PL_METHOD_HEAD, "HEAD"},
    {WSI_TOKEN_OPTIONS_URI, PL_METHOD_OPTIONS, "OPTIONS"},
};

static void
s_req_key(uint64_t req, char *key, size_t size)
{
    snprintf(key, size, "%llx", (unsigned long long) req);
}

/* Forgets the previous transaction on this (keep-alive) connection. */
static void
s_reset(pl_edge_t *self, pss_t *pss)
{
    if (pss->waiting > 0) {
        char key[24];
        s_req_key(pss->req, key, sizeof key);
        pl_map_take(self->http, key);
    }
    if (pss->body_pending)
        pl_edge_body_deadline(self, pss->wsi, pss, false);
    pl_env_reset(&pss->acc);
    free(pss->body);
    free(pss->resp);
    struct lws *wsi = pss->wsi;
    memset(pss, 0, sizeof *pss);
    pss->wsi = wsi;
}

static void
s_respond(pss_t *pss, int status, const char *ctype, const char *body, size_t len)
{
    free(pss->resp);
    pss->resp = malloc(LWS_PRE + len + 1);
    if (pss->resp)
        memcpy(pss->resp + LWS_PRE, body, len);
    pss->resplen = pss->resp ? len : 0;
    pss->status = status;
    pss->ctype = ctype;
    pss->responding = true;
    lws_callback_on_writable(pss->wsi);
}

/* Responds with a JSON body we built (consumed). */
static void
s_respond_json(pss_t *pss, int status, char *json)
{
    static const char oom[] = "{\"error\":\"out of memory\",\"code\":\"INTERNAL\"}";
    if (json)
        s_respond(pss, status, "application/json", json, strlen(json));
    else
        s_respond(pss, 500, "application/json", oom, sizeof oom - 1);
    free(json);
}

static void
s_respond_error(pss_t *pss, int status, const char *code, const char *message)
{
    s_respond_json(pss, status, pl_http_json_error(status, code, message));
}

void
pl_edge_stats_now(pl_edge_t *self)
{
    self->stats.uptime = pl_wall_s() - self->started_at;
    self->stats.mailbox_dropped = (int64_t) pl_runtime_dropped(self->rt);
    self->stats.tap_published = (int64_t) pl_tap_published(self->tap);
    self->stats.tap_dropped = (int64_t) pl_tap_dropped(self->tap);
}

/* Opens a gather: replies carrying this request id are routed back here. */
static bool
s_begin(pl_edge_t *self, pss_t *pss)
{
    if (pl_map_size(self->http) >= S_HTTP_INFLIGHT_MAX) {
        s_respond_error(pss, 503, "BUSY", "too many requests in flight; try again");
        return false;
    }
    pss->req = ++self->next_req;
    pss->waiting = 0;
    char key[24];
    s_req_key(pss->req, key, sizeof key);
    if (pl_map_put(self->http, key, pss) != 0) {
        s_respond_error(pss, 500, "INTERNAL", "out of memory");
        return false;
    }
    return true;
}

/* Sends `type` (fields from `with`, may be NULL) to the shard of `kind`
   owning with->session, or to every shard when there is no session; each
   send is one reply to wait for. */
static void
s_ask(pl_edge_t *self, pss_t *pss, pl_msg_t type, pl_kind_t kind, const pl_env_t *with)
{
    pl_env_t env;
    if (!with || pl_env_copy(&env, with) != 0)
        pl_env_init(&env, type);
    env.type = type;
    pl_env_set_u64(&env, PL_F_REQ, pss->req);
    if (pl_env_has(&env, PL_F_SESSION)) {
        if (pl_outbox_send_session(self->out, kind, env.session, &env) == 0)
            pss->waiting++;
    } else {
        for (unsigned i = 0; i < pl_runtime_kind_shards(self->rt, kind); i++)
            if (pl_outbox_send(self->out, kind, i, &env) == 0)
                pss->waiting++;
    }
    pl_env_reset(&env);
    if (pss->waiting == 0) {
        char key[24];
        s_req_key(pss->req, key, sizeof key);
        pl_map_take(self->http, key);
        s_respond_error(pss, 503, "BUSY", "the server is overloaded; try again");
    }
}

static void
s_ask_session(pl_edge_t *self, pss_t *pss, pl_msg_t type)
{
    pl_env_t env;
    pl_env_init(&env, type);
    pl_env_set_str(&env, PL_F_SESSION, pss->match.id);
    if (s_begin(self, pss))
        s_ask(self, pss, type, PL_KIND_SESSION, &env);
    pl_env_reset(&env);
}

static void
s_create(pl_edge_t *self, pss_t *pss)
{
    if (pss->body_too_big) {
        s_respond_error(pss, 413, "TOO_LARGE", "request body is over the limit");
        return;
    }
    pl_env_t env;
    int rc = pl_http_parse_create(pss->body ? pss->body : "", pss->bodylen, &self->lim, &env);
    if (rc != 0) {
        s_respond_error(pss, 400, pl_err_name((int) env.code), env.text ? env.text : "bad request");
    } else {
        char id[24];
        pl_id_new('s', id, sizeof id);
        pl_env_set_str(&env, PL_F_SESSION, id);
        if (s_begin(self, pss))
            s_ask(self, pss, PL_MSG_HTTP_CREATE, PL_KIND_SESSION, &env);
    }
    pl_env_reset(&env);
}

static void
s_static(pss_t *pss, pl_route_t route)
{
    const pl_www_asset_t *a = pl_www_find(route == PL_ROUTE_OPENAPI ? "openapi.json"
                                          : route == PL_ROUTE_DOCS  ? "docs.html"
                                                                    : "demo.html");
    if (!a) {
        s_respond_error(pss, 404, "NOT_FOUND", "not built into this server");
        return;
    }
    s_respond(pss, 200, a->ctype, (const char *) a->data, a->len);
}

static int
s_request(pl_edge_t *self, struct lws *wsi, pss_t *pss, const char *path)
{
    pss->wsi = wsi;
    s_reset(self, pss);
    pss->method = PL_METHOD_OTHER;
    for (size_t i = 0; i < sizeof s_methods / sizeof s_methods[0]; i++)
        if (lws_hdr_total_length(wsi, s_methods[i].token) > 0)
            pss->method = s_methods[i].method;
    pl_http_route(pss->method, path ? path : "", &pss->match);
    /* A body must be in within --handshake-timeout of the headers (lws
       itself would wait as long as each piece keeps arriving). */
    char cl[32] = "";
    unsigned long long clen = 0;
    if (lws_hdr_copy(wsi, cl, sizeof cl, WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0)
        clen = strtoull(cl, NULL, 10);
    if (clen > 0 || lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0)
        pl_edge_body_deadline(self, wsi, pss, true);
    if (pss->match.status == 404) {
        s_respond_error(pss, 404, "NOT_FOUND", "not found");
        return 0;
    }
    if (pss->match.status == 405) {
        pss->allow = pss->match.allow;
        s_respond_error(pss, 405, "METHOD_NOT_ALLOWED", "method not allowed");
        return 0;
    }
    switch (pss->match.route) {
    case PL_ROUTE_ROOT:
        s_respond_json(pss, 200, pl_http_json_root(self->cfg->model));
        break;
    case PL_ROUTE_OPENAPI:
    case PL_ROUTE_DOCS:
    case PL_ROUTE_DEMO:
        s_static(pss, pss->match.route);
        break;
    case PL_ROUTE_WS:
        s_respond_error(pss, 426, "BAD_FRAME", "this path takes a WebSocket upgrade");
        break;
    case PL_ROUTE_HEALTH:
    case PL_ROUTE_STATS:
        if (!s_begin(self, pss))
            break;
        s_ask(self, pss, PL_MSG_STATS_REQ, PL_KIND_SESSION, NULL);
        if (pss->waiting > 0)
            s_ask(self, pss, PL_MSG_STATS_REQ, PL_KIND_STORE, NULL);
        if (pss->match.route == PL_ROUTE_STATS && pss->waiting > 0)
            s_ask(self, pss, PL_MSG_STATS_REQ, PL_KIND_MODEL, NULL);
        break;
    case PL_ROUTE_SESSIONS:
        /* the sessions in memory (live member counts) and the stored ones */
        pss->acc.present |= 1ull << PL_F_SESSV; /* an empty list is still a list */
        if (!s_begin(self, pss))
            break;
        s_ask(self, pss, PL_MSG_HTTP_LIST, PL_KIND_SESSION, NULL);
        if (pss->waiting > 0)
            s_ask(self, pss, PL_MSG_HTTP_LIST, PL_KIND_STORE, NULL);
        break;
    case PL_ROUTE_SESSION:
        s_ask_session(self, pss, pss->method == PL_METHOD_DELETE ? PL_MSG_HTTP_DELETE : PL_MSG_HTTP_GET);
        break;
    case PL_ROUTE_SESSION_CLEAR:
        s_ask_session(self, pss, PL_MSG_HTTP_CLEAR);
        break;
    case PL_ROUTE_SESSIONS_NEW:
        if (clen > (unsigned long long) self->cfg->max_http_body) {
            pss->body_too_big = true;
            s_create(self, pss);
        } else if (clen > 0) {
            break; /* the body follows: HTTP_BODY, then HTTP_BODY_COMPLETION */
        }
        if (!pss->responding)
            s_create(self, pss);
        break;
    default:
        s_respond_error(pss, 404, "NOT_FOUND", "not found");
        break;
    }
    return 0;
}

static void
s_body(pl_edge_t *self, pss_t *pss, const void *in, size_t len)
{
    if (len == 0 || !in)
        return;
    if (pss->body_too_big || pss->bodylen + len > (size_t) self->cfg->max_http_body) {
        pss->body_too_big = true;
        return;
    }
    char *b = realloc(pss->body, pss->bodylen + len + 1);
    if (!b) {
        pss->body_too_big = true;
        return;
    }
    memcpy(b + pss->bodylen, in, len);
    pss->body = b;
    pss->bodylen += len;
    b[pss->bodylen] = '\0';
}

static int
s_write(pl_edge_t *self, struct lws *wsi, pss_t *pss)
{
    if (!pss->responding)
        return 0;
    pss->responding = false;
    unsigned char hdr[LWS_PRE + 1024];
    unsigned char *start = hdr + LWS_PRE, *p = start, *end = hdr + sizeof hdr - 1;
    if (!pss->resp)
        return -1;
    if (lws_add_http_common_headers(wsi, (unsigned) pss->status, pss->ctype, pss->resplen, &p, end))
        return -1;
    if (pss->allow && lws_add_http_header_by_name(wsi, (const unsigned char *) "allow:",
                                                  (const unsigned char *) pss->allow, (int) strlen(pss->allow),
                                                  &p, end))
        return -1;
    if (lws_add_http_header_by_name(wsi, (const unsigned char *) "cache-control:",
                                    (const unsigned char *) "no-store", 8, &p, end))
        return -1;
    if (lws_finalize_write_http_header(wsi, start, &p, end))
        return -1;
    int n = lws_write(wsi, pss->resp + LWS_PRE, pss->resplen, LWS_WRITE_HTTP_FINAL);
    const char *method = "OTHER";
    for (size_t i = 0; i < sizeof s_methods / sizeof s_methods[0]; i++)
        if (s_methods[i].method == pss->method)
            method = s_methods[i].name;
    pl_log_info("http", "method=%s route=%d status=%d bytes=%zu", method, (int) pss->match.route, pss->status,
                pss->resplen);
    /* Answered before its body was all in (too big, or not needed): the
       rest of the body is not worth reading. */
    bool close = pss->body_too_big || pss->body_pending;
    s_reset(self, pss); /* the transaction is over: free what it held */
    if (n < 0 || close)
        return -1;
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

/* A session both in memory and in the store is listed once, as in memory
   (members live); stored ones (members -1) show 0 members. */
static void
s_dedupe_sessions(pl_sessv_t *v)
{
    pl_map_t *live = pl_map_new(NULL);
    if (!live)
        return;
    for (size_t i = 0; i < v->n; i++)
        if (v->v[i].members >= 0)
            pl_map_put(live, v->v[i].id, &v->v[i]);
    size_t out = 0;
    for (size_t i = 0; i < v->n; i++) {
        pl_sessinfo_t *e = &v->v[i];
        if (e->members < 0 && pl_map_get(live, e->id)) {
            free(e->id), free(e->model), free(e->kind), free(e->name);
            continue;
        }
        if (e->members < 0)
            e->members = 0;
        v->v[out++] = *e;
    }
    v->n = out;
    pl_map_destroy(&live);
}

/* Renders the gathered replies of a finished request. */
static void
s_finish(pl_edge_t *self, pss_t *pss, pl_env_t *last)
{
    int status = (int) last->code;
    const char *id = pss->match.id;
    switch (pss->match.route) {
    case PL_ROUTE_HEALTH:
    case PL_ROUTE_STATS: {
        pl_edge_stats_now(self);
        int64_t zero[PL_STAT_COUNT_] = {0};
        const int64_t *stats = pss->acc.stats.n == PL_STAT_COUNT_ ? pss->acc.stats.v : zero;
        s_respond_json(pss, 200, pss->match.route == PL_ROUTE_HEALTH ? pl_http_json_health(&self->stats, stats)
                                                                     : pl_http_json_stats(&self->stats, stats, &self->cfg->models_table,
                                                                                          pss->acc.mstats.n ? pss->acc.mstats.v
                                                                                                            : NULL));
        return;
    }
    case PL_ROUTE_SESSIONS:
        s_dedupe_sessions(&pss->acc.sessv);
        s_respond_json(pss, 200, pl_http_json_sessions(&pss->acc.sessv));
        return;
    default:
        break;
    }
    if (status >= 300) {
        const char *code = status == 404 ? "NOT_FOUND" : status == 400 ? "BAD_FRAME" : "BUSY";
        s_respond_error(pss, status, code, last->text ? last->text : "failed");
    } else if (pss->match.route == PL_ROUTE_SESSION && pss->method == PL_METHOD_DELETE) {
        s_respond_json(pss, 200, pl_http_json_ack("deleted", id, 0));
    } else if (pss->match.route == PL_ROUTE_SESSION_CLEAR) {
        s_respond_json(pss, 200, pl_http_json_ack("cleared", id, 1));
    } else if (last->sessv.n > 0) {
        bool with_hist = pss->match.route == PL_ROUTE_SESSION;
        s_respond_json(pss, status, pl_http_json_session(&last->sessv.v[0], with_hist ? &last->hist : NULL,
                                                         pl_env_has(last, PL_F_FLAG) && last->flag));
    } else {
        s_respond_error(pss, 500, "INTERNAL", "empty reply");
    }
}

void
pl_edge_http_reply(pl_edge_t *self, pl_env_t *env)
{
    char key[24];
    s_req_key(env->req, key, sizeof key);
    pss_t *pss = pl_map_get(self->http, key);
    if (!pss)
        return; /* the client has gone */
    if (env->type == PL_MSG_STATS_REPLY && env->stats.n == PL_STAT_COUNT_) {
        if (pss->acc.stats.n != PL_STAT_COUNT_) {
            int64_t zero[PL_STAT_COUNT_] = {0};
            pl_env_set_i64v(&pss->acc, PL_F_STATS, zero, PL_STAT_COUNT_);
        }
        for (size_t i = 0; i < PL_STAT_COUNT_; i++)
            pss->acc.stats.v[i] += env->stats.v[i];
        size_t n = self->cfg->models_table.n * PL_MSTAT_COUNT_;
        if (env->mstats.n == n && n > 0) {
            if (pss->acc.mstats.n != n) {
                free(pss->acc.mstats.v);
                pss->acc.mstats.v = calloc(n, sizeof *pss->acc.mstats.v);
                pss->acc.mstats.n = pss->acc.mstats.v ? n : 0;
                if (pss->acc.mstats.v)
                    pss->acc.present |= 1ull << PL_F_MSTATS;
            }
            for (size_t i = 0; i < pss->acc.mstats.n; i++)
                pss->acc.mstats.v[i] += env->mstats.v[i];
        }
    } else if (env->type == PL_MSG_HTTP_REPLY && pss->match.route == PL_ROUTE_SESSIONS) {
        bool stored = pl_env_has(env, PL_F_FLAG) && env->flag; /* from the store */
        for (size_t i = 0; i < env->sessv.n; i++) {
            pl_sessinfo_t info = env->sessv.v[i];
            info.members = stored ? -1 : info.members; /* marks it for s_dedupe_sessions */
            pl_env_sessv_add(&pss->acc, &info);
        }
    }
    if (--pss->waiting > 0)
        return;
    pl_map_take(self->http, key);
    s_finish(self, pss, env);
}

int
pl_edge_http_callback(pl_edge_t *self, struct lws *wsi, enum lws_callback_reasons reason, pss_t *pss, void *in,
                      size_t len)
{
    switch (reason) {
    case LWS_CALLBACK_HTTP:
        return s_request(self, wsi, pss, in);
    case LWS_CALLBACK_HTTP_BODY:
        s_body(self, pss, in, len);
        return 0;
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        pl_edge_body_deadline(self, wsi, pss, false);
        if (pss->match.route == PL_ROUTE_SESSIONS_NEW && !pss->responding && pss->waiting == 0)
            s_create(self, pss);
        return 0;
    case LWS_CALLBACK_HTTP_WRITEABLE:
        return s_write(self, wsi, pss);
    case LWS_CALLBACK_TIMER:
        if (!pss || !pss->body_pending)
            return 0;
        pl_log_warn("slow", "request_body_over_s=%ld action=close", self->cfg->handshake_timeout);
        return -1; /* lws closes the connection */
    case LWS_CALLBACK_CLOSED_HTTP:
    case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
        if (pss && !pss->is_ws)
            s_reset(self, pss);
        return lws_callback_http_dummy(wsi, reason, pss, in, len);
    default:
        return lws_callback_http_dummy(wsi, reason, pss, in, len);
    }
}
