/*  edge — the libwebsockets service loop: lifecycle, mailbox, fan-out.

    Everything here runs on the edge thread ("service thread only") except
    s_ring(), the doorbell workers ring after sending to the edge mailbox.
    WebSocket connections are in edge_ws.c, their outbound queues in
    edge_queue.c, admission and request deadlines in edge_limits.c, HTTP
    requests in edge_http.c. */
#include <ev.h>
#include <stdlib.h>
#include <string.h>

#include "../protocol/pl_err.h"
#include "../protocol/pl_util.h"
#include "../transport/pl_log.h"
#include "edge_int.h"

/* Bytes lws hands us per RECEIVE callback; larger frames arrive in pieces
   (edge_ws.c puts them together). lws allocates this much for every
   WebSocket at the upgrade: server RSS per idle connection measured 10.9 KB
   at 16 KiB, 8.5 KB at 4 KiB, 5.8 KB at 1 KiB (docs/benchmarks.md). Client
   frames are mostly far smaller. */
#define S_RX_CHUNK 1024
/* The most lws hands the kernel in one send(). Left 0, lws caps a send at
   rx_buffer_size (1 KiB here) and sends the rest of a write 1 KiB per loop
   turn: found in review, after the batched writes (edge_queue.c) went out
   in 1 KiB pieces. One batch, one send. */
#define S_TX_PACKET (LWS_PRE + PL_EDGE_BATCH)
/* lws 4.1's libev glue re-arms its timer only when that timer is idle, so a
   timer scheduled earlier than the one armed (a heartbeat, a handshake or
   close deadline) waits for the later one, or for any socket event, whose
   aftermath services every timer that is due. This tick is such an event:
   found by the heartbeat and 1009 tests, which failed without it. */
#define S_SUL_TICK_S 0.05
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

void
pl_edge_index_remove(pl_edge_t *self, pss_t *pss, const char *session)
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
        pl_edge_frame_t *f = json ? pl_edge_frame_new(json, len, env) : NULL;
        free(json);
        bool skip = pl_env_has(env, PL_F_EXCEPT);
        for (size_t i = 0; f && i < m->n; i++)
            if (!(skip && m->v[i]->conn == env->except))
                pl_edge_enqueue(self, m->v[i], f, env);
        pl_edge_frame_unref(f);
    }
    if (env->type == PL_MSG_EV_DELETED) {
        while ((m = pl_map_get(self->index, env->session)) && m->n > 0)
            pl_edge_index_remove(self, m->v[m->n - 1], env->session);
    }
}

/* ---- the mailbox ---- */

static void s_begin_stop(pl_edge_t *self);

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
                pl_edge_send_to(self, to, env);
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
        pl_edge_index_remove(self, pss, env->session);
    if (env->type == PL_MSG_ERROR)
        pl_edge_send_error(self, pss, env);
    else
        pl_edge_send_to(self, pss, env);
}

static void
s_drain(pl_edge_t *self)
{
    atomic_store(&self->rung, false); /* before the first receive: see s_ring */
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
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        return pl_edge_admit(self, wsi);
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
    case LWS_CALLBACK_ESTABLISHED:
    case LWS_CALLBACK_RECEIVE:
    case LWS_CALLBACK_SERVER_WRITEABLE:
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
    case LWS_CALLBACK_CLOSED:
        return pl_edge_ws_callback(self, wsi, reason, pss, in, len);
    case LWS_CALLBACK_TIMER:
        if (pss && pss->is_ws)
            return pl_edge_ws_callback(self, wsi, reason, pss, in, len);
        return pl_edge_http_callback(self, wsi, reason, pss, in, len);
    default:
        return pl_edge_http_callback(self, wsi, reason, pss, in, len);
    }
}

static const struct lws_protocols s_protocols[] = {
    {"parley", s_callback, sizeof(pss_t), S_RX_CHUNK, 0, NULL, S_TX_PACKET},
    {NULL, NULL, 0, 0, 0, NULL, 0}, /* terminator */
};

/* ---- lifecycle ---- */

static void
s_sul_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void) loop;
    (void) revents;
    lws_cancel_service(w->data); /* an event on lws's own pipe: see S_SUL_TICK_S */
}

static void
s_tap_tick(lws_sorted_usec_list_t *sul)
{
    pl_edge_t *self = lws_container_of(sul, pl_edge_t, tap_sul);
    pl_tap_service(self->tap);
    lws_sul_schedule(self->ctx, 0, &self->tap_sul, s_tap_tick, PL_TAP_SERVICE_MS * LWS_US_PER_MS);
}

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
        pl_edge_close(self, v, LWS_CLOSE_STATUS_GOINGAWAY);
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
    /* lws on a libev loop of ours (epoll): its default poll() walks every socket
       on every wake-up, which at 10,000 idle connections cost more than the work.
       NOSIGMASK: main owns the signals (sigwait); libev must not touch the mask. */
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
    void *loops[1] = {loop};
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = (int) self->cfg->port;
    info.iface = strcmp(self->cfg->host, "0.0.0.0") == 0 ? NULL : self->cfg->host;
    info.protocols = s_protocols;
    info.user = self;
    info.options = LWS_SERVER_OPTION_VALIDATE_UTF8 | LWS_SERVER_OPTION_DISABLE_IPV6 | LWS_SERVER_OPTION_LIBEV;
    info.foreign_loops = loops;
    info.retry_and_idle_policy = &retry;
    /* lws closes a connection whose request headers or WebSocket handshake
       are not in within this; request bodies get our own deadline. */
    info.timeout_secs = (unsigned) self->cfg->handshake_timeout;
    info.timeout_secs_ah_idle = (unsigned) self->cfg->handshake_timeout;
    info.vhost_name = "parley";
    info.count_threads = 1;
    char taperr[256] = "";
    bool tap_ok =
        !self->cfg->tap[0] || (self->tap = pl_tap_new(self->cfg->tap, (int) self->cfg->tap_hwm, taperr, sizeof taperr));
    if (!tap_ok)
        pl_log_error("tap", "error=\"%s\"", taperr);
    struct lws_context *ctx = self->box && self->out && tap_ok && loop ? lws_create_context(&info) : NULL;
    if (!ctx) {
        if (loop)
            ev_loop_destroy(loop);
        if (tap_ok)
            pl_log_error("listen",
                         "host=%s port=%ld error=cannot_listen note=\"the port is taken, or lws's libev plugin "
                         "(Debian package libwebsockets-evlib-ev) is not installed: see lws's error above\"",
                         self->cfg->host, self->cfg->port);
        pl_tap_destroy(&self->tap);
        pl_mailbox_destroy(&self->box);
        pl_outbox_destroy(&self->out);
        s_start_done(self, -PL_E_INTERNAL);
        return NULL;
    }
    pthread_mutex_lock(&self->ring_lock);
    self->ctx = ctx;
    pthread_mutex_unlock(&self->ring_lock);
    pl_log_info("listen", "host=%s port=%ld", self->cfg->host, self->cfg->port);
    pl_edge_conn_limit(self);
    if (self->tap) {
        pl_log_info("tap", "endpoint=%s hwm=%ld", self->cfg->tap, self->cfg->tap_hwm);
        lws_sul_schedule(ctx, 0, &self->tap_sul, s_tap_tick, PL_TAP_SERVICE_MS * LWS_US_PER_MS);
    }
    ev_timer tick;
    ev_timer_init(&tick, s_sul_tick, S_SUL_TICK_S, S_SUL_TICK_S);
    tick.data = ctx;
    ev_timer_start(loop, &tick);
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
        ev_run(loop, EVRUN_ONCE); /* lws's watchers, and the doorbell's pipe among them */
    }
    pthread_mutex_lock(&self->ring_lock);
    self->ctx = NULL;
    pthread_mutex_unlock(&self->ring_lock);
    lws_sul_cancel(&sul);
    lws_sul_cancel(&self->tap_sul);
    pl_edge_drain_end(self);
    ev_timer_stop(loop, &tick);
    lws_context_destroy(ctx);
    ev_loop_destroy(loop);
    pl_tap_destroy(&self->tap);
    pl_mailbox_destroy(&self->box);
    pl_outbox_destroy(&self->out);
    return NULL;
}

/* The doorbell: called from worker threads after they sent to the edge. A
   ring while one is pending is skipped: the edge clears `rung` before it
   drains, so whatever was sent before a skipped ring is drained after it.
   Under load that spares most of the write() and wake-ups. */
static void
s_ring(void *arg)
{
    pl_edge_t *self = arg;
    if (atomic_exchange(&self->rung, true))
        return;
    pthread_mutex_lock(&self->ring_lock);
    if (self->ctx)
        lws_cancel_service(self->ctx);
    else
        atomic_store(&self->rung, false); /* nothing rang: the next ring must */
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
    self->peers = pl_map_new(NULL);
    self->batch = malloc(LWS_PRE + PL_EDGE_BATCH);
    if (!self->conns || !self->index || !self->http || !self->peers || !self->batch) {
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
    pl_map_destroy(&self->peers);
    free(self->batch);
    pthread_mutex_destroy(&self->ring_lock);
    pthread_mutex_destroy(&self->start_lock);
    pthread_cond_destroy(&self->start_cond);
    free(self);
    *self_p = NULL;
}
