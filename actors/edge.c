/*  edge — the libwebsockets service loop: sockets, frames, fan-out.

    Everything here runs on the edge thread ("service thread only") except
    s_ring(), the doorbell workers ring after sending to the edge mailbox.
    HTTP requests are in edge_http.c. */
#include <stdlib.h>
#include <string.h>

#include "../protocol/pl_err.h"
#include "../protocol/pl_util.h"
#include "../transport/pl_log.h"
#include "edge_int.h"

/* Bytes lws hands us per RECEIVE callback; larger frames arrive in pieces. */
#define S_RX_CHUNK 16384
/* Frames written per writeable callback while the socket takes them. */
#define S_WRITE_BURST 16
/* Bytes past the hard frame limit we read and discard, as a multiple of it,
   before closing without waiting for the end of the message. */
#define S_DISCARD_FACTOR 16
/* ... or for this long. */
#define S_DISCARD_US (500 * LWS_US_PER_MS)
/* How long shutdown waits for clients to take their close frames. */
#define S_STOP_GRACE_US (2 * LWS_US_PER_SEC)

typedef struct {
    pss_t **v;
    size_t n, cap;
} s_members_t;

static void
s_members_free(void *p)
{
    s_members_t *m = p;
    if (m)
        free(m->v);
    free(m);
}

/* ---- frames and queues ---- */

static s_frame_t *
s_frame_new(const char *json, size_t len)
{
    s_frame_t *f = malloc(sizeof *f + LWS_PRE + len);
    if (!f)
        return NULL;
    f->refs = 1;
    f->len = len;
    memcpy(f->buf + LWS_PRE, json, len);
    return f;
}

static void
s_frame_unref(s_frame_t *f)
{
    if (f && --f->refs == 0)
        free(f);
}

static void
s_close(pss_t *pss, int code)
{
    if (!pss->close_code)
        pss->close_code = code;
    lws_callback_on_writable(pss->wsi);
}

static void
s_queue_clear(pl_edge_t *self, pss_t *pss)
{
    size_t cap = (size_t) self->cfg->out_queue;
    for (; pss->qlen > 0; pss->qlen--) {
        s_frame_unref(pss->q[pss->qhead]);
        pss->qhead = (pss->qhead + 1) % cap;
    }
}

/* Queues `f` (a new reference) on a connection; a connection whose queue is
   full is a slow consumer and is closed with 1013 (it may resume later). */
static void
s_enqueue(pl_edge_t *self, pss_t *pss, s_frame_t *f)
{
    size_t cap = (size_t) self->cfg->out_queue;
    if (pss->close_code)
        return;
    if (pss->qlen >= cap) {
        self->stats.slow_closed++;
        pl_log_warn("slow", "conn=c%016llx queued=%zu action=close-1013", (unsigned long long) pss->conn,
                    pss->qlen);
        s_queue_clear(self, pss);
        s_close(pss, 1013);
        return;
    }
    f->refs++;
    pss->q[(pss->qhead + pss->qlen) % cap] = f;
    pss->qlen++;
    lws_callback_on_writable(pss->wsi);
}

/* Renders `env` for one connection and queues it. */
static void
s_send_to(pl_edge_t *self, pss_t *pss, const pl_env_t *env)
{
    size_t len = 0;
    char *json = pl_session_render(env, &len);
    if (!json)
        return;
    s_frame_t *f = s_frame_new(json, len);
    free(json);
    if (f) {
        s_enqueue(self, pss, f);
        s_frame_unref(f);
    }
}

static void
s_send_error(pl_edge_t *self, pss_t *pss, const pl_env_t *err)
{
    if (err->code > 0 && err->code < PL_E_COUNT_)
        self->stats.errors[err->code]++;
    s_send_to(self, pss, err);
}

static pss_t *
s_find(pl_edge_t *self, uint64_t conn)
{
    char key[24];
    pl_conn_name(conn, key, sizeof key);
    return pl_map_get(self->conns, key);
}

/* ---- the session index: who hears a session's broadcasts ---- */

static void
s_index_add(pl_edge_t *self, pss_t *pss, const char *session)
{
    for (size_t i = 0; i < pss->nsessions; i++)
        if (strcmp(pss->sessions[i], session) == 0)
            return;
    if (pss->nsessions == pss->capsessions) {
        size_t cap = pss->capsessions ? pss->capsessions * 2 : 4;
        void *v = realloc(pss->sessions, cap * sizeof pss->sessions[0]);
        if (!v)
            return;
        pss->sessions = v;
        pss->capsessions = cap;
    }
    s_members_t *m = pl_map_get(self->index, session);
    if (!m) {
        m = calloc(1, sizeof *m);
        if (!m || pl_map_put(self->index, session, m) != 0) {
            free(m);
            return;
        }
    }
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 4;
        pss_t **v = realloc(m->v, cap * sizeof *v);
        if (!v)
            return;
        m->v = v;
        m->cap = cap;
    }
    m->v[m->n++] = pss;
    snprintf(pss->sessions[pss->nsessions++], PL_ID_MAX + 1, "%s", session);
}

static void
s_index_remove(pl_edge_t *self, pss_t *pss, const char *session)
{
    for (size_t i = 0; i < pss->nsessions; i++) {
        if (strcmp(pss->sessions[i], session) != 0)
            continue;
        memmove(pss->sessions[i], pss->sessions[i + 1], (pss->nsessions - i - 1) * sizeof pss->sessions[0]);
        pss->nsessions--;
        break;
    }
    s_members_t *m = pl_map_get(self->index, session);
    if (!m)
        return;
    for (size_t i = 0; i < m->n; i++)
        if (m->v[i] == pss) {
            m->v[i] = m->v[--m->n];
            break;
        }
    if (m->n == 0)
        s_members_free(pl_map_take(self->index, session));
}

/* Serialises a session event once and queues it on every member. */
static void
s_fanout(pl_edge_t *self, const pl_env_t *env)
{
    s_members_t *m = pl_map_get(self->index, env->session);
    if (m && m->n > 0) {
        size_t len = 0;
        char *json = pl_session_render(env, &len);
        s_frame_t *f = json ? s_frame_new(json, len) : NULL;
        free(json);
        bool skip = pl_env_has(env, PL_F_EXCEPT);
        for (size_t i = 0; f && i < m->n; i++)
            if (!(skip && m->v[i]->conn == env->except))
                s_enqueue(self, m->v[i], f);
        s_frame_unref(f);
    }
    if (env->type == PL_MSG_EV_DELETED) {
        while ((m = pl_map_get(self->index, env->session)) && m->n > 0)
            s_index_remove(self, m->v[m->n - 1], env->session);
    }
}

/* ---- the mailbox ---- */

static void
s_begin_stop(pl_edge_t *self);

static void
s_dispatch(pl_edge_t *self, pl_env_t *env)
{
    if (env->type == PL_MSG_TERM) {
        if (!pl_edge_drain_begin(self, self->ctx))
            s_begin_stop(self);
        return;
    }
    if (env->type == PL_MSG_DRAINED) {
        pl_edge_drain_report(self, env);
        return;
    }
    if (env->type == PL_MSG_HTTP_REPLY || env->type == PL_MSG_STATS_REPLY) {
        pl_edge_http_reply(self, env);
        return;
    }
    if (env->type >= PL_MSG_EV_MESSAGE_ADDED && env->type <= PL_MSG_EV_DELETED) {
        if (pl_env_has(env, PL_F_TO)) { /* a replayed event, for one connection */
            pss_t *to = s_find(self, env->to);
            if (to)
                s_send_to(self, to, env);
            return;
        }
        s_fanout(self, env);
        return;
    }
    if (!pl_env_has(env, PL_F_CONN))
        return;
    pss_t *pss = s_find(self, env->conn);
    if (!pss)
        return; /* the connection has gone */
    if (env->type == PL_MSG_SESSION_CREATED || env->type == PL_MSG_SESSION_JOINED)
        s_index_add(self, pss, env->session);
    else if (env->type == PL_MSG_SESSION_LEFT)
        s_index_remove(self, pss, env->session);
    if (env->type == PL_MSG_ERROR)
        s_send_error(self, pss, env);
    else
        s_send_to(self, pss, env);
}

static void
s_drain(pl_edge_t *self)
{
    for (;;) {
        pl_env_t env;
        int rc = pl_mailbox_recv(self->box, &env);
        if (rc == -PL_E_AGAIN)
            break;
        if (rc != 0)
            continue;
        s_dispatch(self, &env);
        pl_env_reset(&env);
    }
}

/* ---- WebSocket ---- */

static void
s_to_conn_actor(pl_edge_t *self, const pl_env_t *env)
{
    pl_outbox_send(self->out, PL_KIND_CONN, (unsigned) (env->conn % pl_runtime_shards(self->rt)), env);
}

static int
s_ws_open(pl_edge_t *self, struct lws *wsi, pss_t *pss)
{
    if (self->stopping)
        return -1;
    memset(pss, 0, sizeof *pss);
    pss->wsi = wsi;
    pss->is_ws = true;
    pss->q = calloc((size_t) self->cfg->out_queue, sizeof *pss->q);
    char key[24];
    do {
        pss->conn = pl_random_u64();
        pl_conn_name(pss->conn, key, sizeof key);
    } while (pl_map_get(self->conns, key));
    if (!pss->q || pl_map_put(self->conns, key, pss) != 0) {
        free(pss->q);
        pss->q = NULL;
        pss->conn = 0;
        return -1;
    }
    self->stats.conns_current++;
    self->stats.conns_total++;

    pl_env_t env;
    pl_env_init(&env, PL_MSG_CONN_OPEN);
    pl_env_set_u64(&env, PL_F_CONN, pss->conn);
    s_to_conn_actor(self, &env);
    env.type = PL_MSG_CONNECTED;
    pl_env_set_str(&env, PL_F_MODEL, self->cfg->model);
    s_send_to(self, pss, &env);
    pl_env_reset(&env);

    char peer[64] = "";
    lws_get_peer_simple(wsi, peer, sizeof peer);
    pl_log_info("connect", "conn=%s peer=%s path=/ws", key, peer);
    return 0;
}

static void
s_ws_closed(pl_edge_t *self, pss_t *pss)
{
    if (!pss->conn)
        return;
    char key[24];
    pl_conn_name(pss->conn, key, sizeof key);
    pl_map_take(self->conns, key);
    while (pss->nsessions > 0)
        s_index_remove(self, pss, pss->sessions[pss->nsessions - 1]);
    s_queue_clear(self, pss);
    free(pss->q);
    free(pss->sessions);
    free(pss->rx);
    pss->q = NULL;
    pss->sessions = NULL;
    pss->rx = NULL;
    self->stats.conns_current--;

    pl_env_t env;
    pl_env_init(&env, PL_MSG_CONN_CLOSE);
    pl_env_set_u64(&env, PL_F_CONN, pss->conn);
    s_to_conn_actor(self, &env);
    pl_env_reset(&env);
    pl_log_info("disconnect", "conn=%s", key);
    pss->conn = 0;
}

static void
s_local_error(pl_edge_t *self, pss_t *pss, int code, const char *text)
{
    pl_env_t err;
    pl_env_init(&err, PL_MSG_ERROR);
    pl_env_set_u64(&err, PL_F_CONN, pss->conn);
    pl_env_set_i64(&err, PL_F_CODE, code);
    pl_env_set_str(&err, PL_F_TEXT, text);
    s_send_error(self, pss, &err);
    pl_env_reset(&err);
}

/* One whole client message has arrived. */
static void
s_ws_message(pl_edge_t *self, pss_t *pss)
{
    self->stats.frames_in++;
    if (pss->rx_binary) {
        s_local_error(self, pss, PL_E_BAD_FRAME, "binary frames are not accepted: send JSON text");
        return;
    }
    if (pss->rxtotal > (size_t) self->cfg->max_frame) {
        char text[128];
        snprintf(text, sizeof text, "frame of %zu bytes is over the limit of %ld", pss->rxtotal,
                 self->cfg->max_frame);
        s_local_error(self, pss, PL_E_TOO_LARGE, text);
        return;
    }
    pl_env_t env;
    int rc = pl_session_parse(pss->rx ? pss->rx : "", pss->rxlen, &self->lim, &env);
    pl_env_set_u64(&env, PL_F_CONN, pss->conn);
    if (rc != 0) {
        s_send_error(self, pss, &env);
    } else if (env.type == PL_MSG_PING) {
        env.type = PL_MSG_PONG;
        s_send_to(self, pss, &env);
    } else {
        pl_log_info("message", "conn=c%016llx type=%s bytes=%zu", (unsigned long long) pss->conn,
                    pl_msg_name(env.type), pss->rxlen);
        s_to_conn_actor(self, &env);
    }
    pl_env_reset(&env);
}

static void
s_close_too_large(pl_edge_t *self, pss_t *pss)
{
    pl_log_warn("abuse", "conn=c%016llx frame_over=%ld action=close-1009", (unsigned long long) pss->conn,
                self->cfg->max_frame_hard);
    s_queue_clear(self, pss);
    s_close(pss, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE);
}

static int
s_ws_receive(pl_edge_t *self, struct lws *wsi, pss_t *pss, const void *in, size_t len)
{
    if (pss->close_code)
        return 0; /* closing: nothing more is read */
    if (pss->rxtotal == 0 && pss->rxlen == 0)
        pss->rx_binary = lws_frame_is_binary(wsi);
    pss->rxtotal += len;
    bool last = lws_is_final_fragment(wsi) && lws_remaining_packet_payload(wsi) == 0;
    if (pss->rxtotal > (size_t) self->cfg->max_frame_hard) {
        /* Over the hard limit: discard the rest of the message, then close with
           1009. Closing while the client is still sending would leave unread
           input, and the kernel's RST would destroy our close frame (the client
           would see 1006). A message that does not end within S_DISCARD_US
           or S_DISCARD_FACTOR times the limit is cut off anyway. */
        free(pss->rx);
        pss->rx = NULL;
        pss->rxlen = 0;
        if (!pss->discarding) {
            pss->discarding = true;
            lws_set_timer_usecs(wsi, S_DISCARD_US);
        }
        if (!last && pss->rxtotal / S_DISCARD_FACTOR <= (size_t) self->cfg->max_frame_hard)
            return 0;
        s_close_too_large(self, pss);
        return 0;
    }

    if (pss->rxtotal <= (size_t) self->cfg->max_frame && len > 0) {
        char *rx = realloc(pss->rx, pss->rxlen + len + 1);
        if (!rx)
            return -1;
        memcpy(rx + pss->rxlen, in, len);
        pss->rx = rx;
        pss->rxlen += len;
        rx[pss->rxlen] = '\0';
    }
    if (last) {
        s_ws_message(self, pss);
        free(pss->rx);
        pss->rx = NULL;
        pss->rxlen = pss->rxtotal = 0;
        pss->rx_binary = false;
    }
    return 0;
}

static int
s_ws_writeable(pl_edge_t *self, struct lws *wsi, pss_t *pss)
{
    /* going away (1001): what is queued (the last response_complete) goes first */
    if (pss->close_code && (pss->close_code != 1001 || pss->qlen == 0)) {
        const char *reason = pss->close_code == 1001   ? "server shutting down"
                             : pss->close_code == 1009 ? "frame too large"
                                                       : "too slow: resume later";
        lws_close_reason(wsi, (enum lws_close_status) pss->close_code, (unsigned char *) reason, strlen(reason));
        return -1;
    }
    size_t cap = (size_t) self->cfg->out_queue;
    for (int i = 0; i < S_WRITE_BURST && pss->qlen > 0; i++) {
        if (i > 0 && lws_send_pipe_choked(wsi))
            break;
        s_frame_t *f = pss->q[pss->qhead];
        pss->qhead = (pss->qhead + 1) % cap;
        pss->qlen--;
        int n = lws_write(wsi, f->buf + LWS_PRE, f->len, LWS_WRITE_TEXT);
        s_frame_unref(f);
        if (n < 0)
            return -1;
        self->stats.frames_out++;
    }
    if (pss->qlen > 0 || pss->close_code)
        lws_callback_on_writable(wsi);
    return 0;
}

/* Accepts a WebSocket upgrade only where a dialect is served. */
static int
s_ws_filter(pl_edge_t *self, struct lws *wsi)
{
    char path[128] = "";
    lws_hdr_copy(wsi, path, sizeof path, WSI_TOKEN_GET_URI);
    if (self->stopping || self->draining || strcmp(path, "/ws") != 0)
        return -1;
    if (self->stats.conns_current >= self->cfg->max_connections) {
        self->stats.conns_rejected++;
        pl_log_warn("refused", "reason=max_connections limit=%ld", self->cfg->max_connections);
        return -1;
    }
    return 0;
}

static int
s_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
    struct lws_context *ctx = lws_get_context(wsi);
    pl_edge_t *self = ctx ? lws_context_user(ctx) : NULL;
    pss_t *pss = user;
    if (!self)
        return 0;
    switch (reason) {
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
        s_drain(self);
        return 0;
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        return s_ws_filter(self, wsi);
    case LWS_CALLBACK_ESTABLISHED:
        return s_ws_open(self, wsi, pss);
    case LWS_CALLBACK_RECEIVE:
        return s_ws_receive(self, wsi, pss, in, len);
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return s_ws_writeable(self, wsi, pss);
    case LWS_CALLBACK_TIMER:
        if (pss && pss->discarding && !pss->close_code)
            s_close_too_large(self, pss);
        return 0;
    case LWS_CALLBACK_CLOSED:
        s_ws_closed(self, pss);
        return 0;
    default:
        return pl_edge_http_callback(self, wsi, reason, pss, in, len);
    }
}

static const struct lws_protocols s_protocols[] = {
    {"parley", s_callback, sizeof(pss_t), S_RX_CHUNK, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0}, /* terminator */
};

/* ---- lifecycle ---- */

static void
s_stop_deadline(lws_sorted_usec_list_t *sul)
{
    (void) sul; /* wakes the loop; the loop sees the deadline has passed */
}

static void
s_begin_stop(pl_edge_t *self)
{
    if (self->stopping)
        return;
    self->stopping = true;
    pl_map_iter_t it = {0};
    void *v;
    while (pl_map_next(self->conns, &it, &v))
        s_close(v, LWS_CLOSE_STATUS_GOINGAWAY);
    pl_log_info("stopping", "connections=%lld", (long long) self->stats.conns_current);
}

static void
s_lws_log(int level, const char *line)
{
    char text[200];
    size_t n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == ' '))
        n--;
    snprintf(text, sizeof text, "%.*s", (int) (n < 180 ? n : 180), line);
    for (char *p = text; *p; p++)
        if (*p == ' ')
            *p = '_';
    pl_log_event(level == LLL_ERR ? PL_LOG_ERROR : PL_LOG_WARN, "lws", "msg=%s", text);
}

static void
s_start_done(pl_edge_t *self, int rc)
{
    pthread_mutex_lock(&self->start_lock);
    self->start_rc = rc;
    self->start_done = true;
    pthread_cond_broadcast(&self->start_cond);
    pthread_mutex_unlock(&self->start_lock);
}

static void *
s_main(void *arg)
{
    pl_edge_t *self = arg;
    self->box = pl_mailbox_new(self->rt, PL_KIND_EDGE, 0);
    self->out = pl_outbox_new(self->rt);
    lws_retry_bo_t retry = {
        .secs_since_valid_ping = (uint16_t) self->cfg->heartbeat,
        .secs_since_valid_hangup = (uint16_t) (self->cfg->heartbeat * 2 + 1),
    };
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = (int) self->cfg->port;
    info.iface = strcmp(self->cfg->host, "0.0.0.0") == 0 ? NULL : self->cfg->host;
    info.protocols = s_protocols;
    info.user = self;
    info.options = LWS_SERVER_OPTION_VALIDATE_UTF8 | LWS_SERVER_OPTION_DISABLE_IPV6;
    info.retry_and_idle_policy = &retry;
    info.timeout_secs = 10;
    info.vhost_name = "parley";
    info.count_threads = 1;
    struct lws_context *ctx = self->box && self->out ? lws_create_context(&info) : NULL;
    if (!ctx) {
        pl_log_error("listen", "host=%s port=%ld error=cannot_listen", self->cfg->host, self->cfg->port);
        pl_mailbox_destroy(&self->box);
        pl_outbox_destroy(&self->out);
        s_start_done(self, -PL_E_INTERNAL);
        return NULL;
    }
    pthread_mutex_lock(&self->ring_lock);
    self->ctx = ctx;
    pthread_mutex_unlock(&self->ring_lock);
    pl_log_info("listen", "host=%s port=%ld", self->cfg->host, self->cfg->port);
    s_start_done(self, 0);

    lws_sorted_usec_list_t sul;
    memset(&sul, 0, sizeof sul);
    int64_t deadline = 0;
    for (;;) {
        if (!self->stopping && pl_edge_drain_poll(self, ctx))
            s_begin_stop(self);
        if (self->stopping) {
            if (!deadline) {
                deadline = pl_now_ms() + S_STOP_GRACE_US / 1000;
                lws_sul_schedule(ctx, 0, &sul, s_stop_deadline, S_STOP_GRACE_US);
            }
            if (self->stats.conns_current == 0 || pl_now_ms() >= deadline)
                break;
        }
        if (lws_service(ctx, 0) < 0)
            break;
    }
    pthread_mutex_lock(&self->ring_lock);
    self->ctx = NULL;
    pthread_mutex_unlock(&self->ring_lock);
    lws_sul_cancel(&sul);
    pl_edge_drain_end(self);
    lws_context_destroy(ctx);
    pl_mailbox_destroy(&self->box);
    pl_outbox_destroy(&self->out);
    return NULL;
}

/* The doorbell: called from worker threads after they sent to the edge. */
static void
s_ring(void *arg)
{
    pl_edge_t *self = arg;
    pthread_mutex_lock(&self->ring_lock);
    if (self->ctx)
        lws_cancel_service(self->ctx);
    pthread_mutex_unlock(&self->ring_lock);
}

pl_edge_t *
pl_edge_new(const pl_config_t *cfg, pl_runtime_t *rt)
{
    pl_edge_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->cfg = cfg;
    self->rt = rt;
    self->conns = pl_map_new(NULL);
    self->index = pl_map_new(s_members_free);
    self->http = pl_map_new(NULL);
    if (!self->conns || !self->index || !self->http) {
        pl_edge_destroy(&self);
        return NULL;
    }
    pthread_mutex_init(&self->ring_lock, NULL);
    pthread_mutex_init(&self->start_lock, NULL);
    pthread_cond_init(&self->start_cond, NULL);
    self->lim.max_message = (size_t) cfg->max_message;
    self->stats.workers = pl_runtime_workers(rt);
    self->stats.shards = pl_runtime_shards(rt);
    self->started_at = pl_wall_s();
    pl_runtime_set_doorbell(rt, PL_KIND_EDGE, s_ring, self);
    lws_set_log_level(LLL_ERR | LLL_WARN, s_lws_log);
    return self;
}

int
pl_edge_start(pl_edge_t *self)
{
    if (pthread_create(&self->thread, NULL, s_main, self) != 0)
        return -PL_E_INTERNAL;
    self->started = true;
    pthread_mutex_lock(&self->start_lock);
    while (!self->start_done)
        pthread_cond_wait(&self->start_cond, &self->start_lock);
    int rc = self->start_rc;
    pthread_mutex_unlock(&self->start_lock);
    if (rc != 0) {
        pthread_join(self->thread, NULL);
        self->started = false;
    }
    return rc;
}

void
pl_edge_stop(pl_edge_t *self)
{
    if (!self->started)
        return;
    pl_outbox_t *out = pl_outbox_new(self->rt);
    pl_env_t term;
    pl_env_init(&term, PL_MSG_TERM);
    if (out)
        pl_outbox_send(out, PL_KIND_EDGE, 0, &term);
    s_ring(self);
    pthread_join(self->thread, NULL);
    pl_outbox_destroy(&out); /* after the join: linger 0 would drop TERM */
    self->started = false;
}

void
pl_edge_destroy(pl_edge_t **self_p)
{
    pl_edge_t *self = *self_p;
    if (!self)
        return;
    pl_edge_stop(self);
    pl_map_destroy(&self->conns);
    pl_map_destroy(&self->index);
    pl_map_destroy(&self->http);
    pthread_mutex_destroy(&self->ring_lock);
    pthread_mutex_destroy(&self->start_lock);
    pthread_cond_destroy(&self->start_cond);
    free(self);
    *self_p = NULL;
}
