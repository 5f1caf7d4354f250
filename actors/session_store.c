/*  session_store — the session actor's side of durability: writes to the
    store actor, loading a session the shard does not hold, evicting idle
    ones, and resuming a connection from the seq it last saw.

    Resuming (join_session with last_seq L). Every persistent event is in
    the store (sent there as it is broadcast) and the newest --replay-ring
    of them are also kept here, encoded. If the ring reaches back to L + 1,
    the events after L are sent from it at once; otherwise the store is
    asked for them, in batches, and the ring covers what happened while the
    store answered. The events go to that connection alone (TO), each as it
    was first sent, then session_joined (with "replayed": how many). Only
    then is the connection a member, so live events follow with no gap and
    no duplicate: every frame it gets comes from this shard, in seq order.
    When the events after L no longer exist (pruned, or L is from a seq the
    server never stored), the connection gets the history instead, then what
    there is of a running answer, then session_joined with "gap": true. */
#include <stdlib.h>
#include <string.h>

#include "../protocol/pl_err.h"
#include "../protocol/pl_limits.h"
#include "../protocol/pl_util.h"
#include "../transport/pl_log.h"
#include "session_int.h"

int
session_to_store(self_t *self, const pl_env_t *env)
{
    return pl_outbox_send(self->actor->out, PL_KIND_STORE, 0, env);
}

void
session_store_new(self_t *self, s_session_t *s)
{
    pl_env_t st;
    pl_env_init(&st, PL_MSG_ST_SESSION);
    pl_env_set_str(&st, PL_F_SESSION, s->id);
    pl_env_set_str(&st, PL_F_MODEL, s->model);
    pl_env_set_str(&st, PL_F_KIND, s->kind);
    pl_env_set_str(&st, PL_F_NAME, s->name);
    if (s->system)
        pl_env_set_str(&st, PL_F_SYSTEM, s->system);
    pl_env_set_f64(&st, PL_F_TS, s->created);
    pl_env_set_bool(&st, PL_F_FLAG, true); /* new */
    session_to_store(self, &st);
    pl_env_reset(&st);
}

void
session_flush_chunks(self_t *self, s_session_t *s)
{
    if (s->chunks_out.events.n == 0)
        return;
    pl_env_set_str(&s->chunks_out, PL_F_SESSION, s->id);
    session_to_store(self, &s->chunks_out);
    pl_env_reset(&s->chunks_out);
}

void
session_store_event(self_t *self, s_session_t *s, pl_msg_t type, int64_t seq, const char *buf, size_t len)
{
    if (type != PL_MSG_EV_CHUNK) {
        session_flush_chunks(self, s);
        pl_outbox_send_raw(self->actor->out, PL_KIND_STORE, 0, buf, len);
        return;
    }
    if (s->chunks_out.events.n == 0)
        pl_env_init(&s->chunks_out, PL_MSG_ST_CHUNKS);
    pl_env_binv_add(&s->chunks_out, PL_F_EVENTS, buf, len);
    pl_env_set_i64(&s->chunks_out, PL_F_SEQ, seq); /* the row's key: its newest */
    if (s->chunks_out.events.n >= PL_CHUNKS_PER_ROW)
        session_flush_chunks(self, s);
}

/* ---- the ring of recent events ---- */

void
session_ring_free(s_session_t *s)
{
    for (size_t i = 0; s->ring && i < s->ring_len; i++)
        free(s->ring[(s->ring_head + i) % s->ring_cap].buf);
    free(s->ring);
    s->ring = NULL;
    s->ring_len = s->ring_head = 0;
    s->ring_bytes = 0;
}

void
session_ring_push(self_t *self, s_session_t *s, int64_t seq, char *buf, size_t len)
{
    size_t cap = (size_t) self->cfg->replay_ring;
    if (!s->ring) {
        s->ring = calloc(cap, sizeof *s->ring);
        s->ring_cap = cap;
        if (!s->ring) {
            free(buf);
            return;
        }
    }
    if (s->ring_len > 0 && s->ring[(s->ring_head + s->ring_len - 1) % cap].seq != seq - 1) {
        /* not contiguous (cannot happen: every persistent event comes here);
           start over rather than ever replay a hole */
        session_ring_free(s);
        session_ring_push(self, s, seq, buf, len);
        return;
    }
    while (s->ring_len > 0 && (s->ring_len == cap || s->ring_bytes + len > PL_RING_BYTES_MAX)) {
        s->ring_bytes -= s->ring[s->ring_head].len;
        free(s->ring[s->ring_head].buf);
        s->ring_head = (s->ring_head + 1) % cap;
        s->ring_len--;
    }
    s->ring[(s->ring_head + s->ring_len) % cap] = (s_recent_t){seq, buf, len};
    s->ring_len++;
    s->ring_bytes += len;
}

/* Oldest seq in the ring, or 0 when empty. */
static int64_t
s_ring_first(const s_session_t *s)
{
    return s->ring_len ? s->ring[s->ring_head].seq : 0;
}

/* True when what happened after `last` is all in the ring (or nothing did). */
static bool
s_ring_covers(const s_session_t *s, int64_t last)
{
    return last >= s->seq || (s->ring_len > 0 && s_ring_first(s) <= last + 1);
}

/* Sends an encoded event (a ring entry or a stored row; a stored ST_CHUNKS
   row is a run of chunk events) to j->conn alone, if newer than j->last;
   advances j->last and counts what was sent in j->replayed. */
static void
s_replay_one(self_t *self, s_joiner_t *j, const char *buf, size_t len, int depth)
{
    pl_env_t ev;
    if (pl_env_decode(buf, len, &ev) != 0)
        return;
    if (ev.type == PL_MSG_ST_CHUNKS && depth == 0) {
        for (size_t i = 0; i < ev.events.n; i++)
            s_replay_one(self, j, ev.events.v[i].p, ev.events.v[i].n, 1);
    } else if (ev.type >= PL_MSG_EV_MESSAGE_ADDED && ev.type <= PL_MSG_EV_DELETED && ev.seq > j->last) {
        pl_env_set_u64(&ev, PL_F_TO, j->conn);
        if (pl_outbox_send(self->actor->out, PL_KIND_EDGE, 0, &ev) == 0)
            j->replayed++;
        j->last = ev.seq;
    }
    pl_env_reset(&ev);
}

/* Sends the ring's events after j->last. */
static void
s_ring_replay(self_t *self, s_session_t *s, s_joiner_t *j)
{
    for (size_t i = 0; i < s->ring_len; i++) {
        const s_recent_t *r = &s->ring[(s->ring_head + i) % s->ring_cap];
        if (r->seq > j->last)
            s_replay_one(self, j, r->buf, r->len, 0);
    }
}

/* ---- resuming ---- */

static void
s_join_done(self_t *self, s_session_t *s, uint64_t conn, int64_t replayed, bool gap)
{
    if (!session_add_member(self, s, conn)) {
        pl_env_t req;
        pl_env_init(&req, PL_MSG_JOIN);
        pl_env_set_u64(&req, PL_F_CONN, conn);
        session_error(self, &req, PL_E_BUSY, "session is full");
        pl_env_reset(&req);
        session_member_gone(self, conn, s->id);
        return;
    }
    pl_env_t extra;
    pl_env_init(&extra, PL_MSG_SESSION_JOINED);
    pl_env_set_i64(&extra, PL_F_REPLAYED, replayed);
    if (gap)
        pl_env_set_bool(&extra, PL_F_GAP, true);
    session_send_joined(self, s, PL_MSG_SESSION_JOINED, conn, &extra);
    pl_env_reset(&extra);
    session_member_event(self, s, conn, true);
    self->stats[PL_STAT_RESUME_EVENTS] += replayed;
}

/* The events after the resume point are gone: the history instead, then
   the running answer so far, then session_joined with gap. */
static void
s_gap(self_t *self, s_session_t *s, uint64_t conn)
{
    self->stats[PL_STAT_RESUME_GAPS]++;
    pl_env_t h;
    pl_env_init(&h, PL_MSG_HISTORY);
    pl_env_set_u64(&h, PL_F_CONN, conn);
    pl_env_set_str(&h, PL_F_SESSION, s->id);
    pl_env_set_i64(&h, PL_F_SEQ, s->seq);
    pl_env_set_i64(&h, PL_F_COUNT, s->nmessages);
    session_hist_newest(s, &h);
    session_to_edge(self, &h);
    pl_env_reset(&h);
    if (s->running) {
        pl_env_t ev;
        pl_env_init(&ev, PL_MSG_EV_RESPONSE_START);
        pl_env_set_u64(&ev, PL_F_TO, conn);
        pl_env_set_str(&ev, PL_F_SESSION, s->id);
        pl_env_set_i64(&ev, PL_F_SEQ, s->start_seq);
        pl_env_set_str(&ev, PL_F_RESPID, s->respid);
        pl_env_set_str(&ev, PL_F_MODEL, s->turn_model);
        session_to_edge(self, &ev);
        pl_env_reset(&ev);
        if (s->chunks > 0) {
            pl_env_init(&ev, PL_MSG_EV_CHUNK);
            pl_env_set_u64(&ev, PL_F_TO, conn);
            pl_env_set_str(&ev, PL_F_SESSION, s->id);
            pl_env_set_i64(&ev, PL_F_SEQ, s->chunk_seq);
            pl_env_set_str(&ev, PL_F_RESPID, s->respid);
            pl_env_set_strn(&ev, PL_F_TEXT, s->answer ? s->answer : "", s->answer_len);
            pl_env_set_i64(&ev, PL_F_NUMBER, s->chunks);
            pl_env_set_bool(&ev, PL_F_FLAG, false);
            session_to_edge(self, &ev);
            pl_env_reset(&ev);
        }
    }
    s_join_done(self, s, conn, 0, true);
}

static s_joiner_t *
s_joiner(s_session_t *s, uint64_t conn)
{
    for (size_t i = 0; i < s->njoiners; i++)
        if (s->joiners[i].conn == conn)
            return &s->joiners[i];
    return NULL;
}

void
session_forget_joiner(s_session_t *s, uint64_t conn)
{
    s_joiner_t *j = s_joiner(s, conn);
    if (!j)
        return;
    *j = s->joiners[--s->njoiners];
}

static void
s_ask_store(self_t *self, s_session_t *s, const s_joiner_t *j)
{
    session_flush_chunks(self, s); /* the store must hold everything so far */
    pl_env_t req;
    pl_env_init(&req, PL_MSG_ST_REPLAY);
    pl_env_set_str(&req, PL_F_SESSION, s->id);
    pl_env_set_u64(&req, PL_F_CONN, j->conn);
    pl_env_set_i64(&req, PL_F_LASTSEQ, j->last);
    if (session_to_store(self, &req) != 0)
        pl_log_warn("resume", "session=%s store=refused", s->id);
    pl_env_reset(&req);
}

void
session_resume(self_t *self, s_session_t *s, pl_env_t *env)
{
    int64_t last = env->last_seq;
    self->stats[PL_STAT_RESUMES]++;
    if (last > s->seq || last < 0) { /* a seq this server never stored */
        s_gap(self, s, env->conn);
        return;
    }
    if (s_ring_covers(s, last)) {
        s_joiner_t now = {env->conn, last, 0};
        s_ring_replay(self, s, &now);
        s_join_done(self, s, env->conn, now.replayed, false);
        return;
    }
    if (s_joiner(s, env->conn))
        return; /* already resuming */
    s_joiner_t *v = realloc(s->joiners, (s->njoiners + 1) * sizeof *v);
    if (!v) {
        session_error(self, env, PL_E_INTERNAL, "out of memory");
        return;
    }
    s->joiners = v;
    s_joiner_t *j = &s->joiners[s->njoiners++];
    *j = (s_joiner_t){env->conn, last, 0};
    s_ask_store(self, s, j);
}

/* A batch of stored events for a resuming connection. */
void
session_handle_events(self_t *self, pl_env_t *env)
{
    s_session_t *s = pl_map_get(self->sessions, env->session);
    s_joiner_t *j = s ? s_joiner(s, env->conn) : NULL;
    if (!j || env->last_seq != j->last)
        return; /* it left meanwhile, or an answer to an older question */
    uint64_t conn = j->conn;
    if (pl_env_has(env, PL_F_GAP) && env->gap) {
        session_forget_joiner(s, conn);
        s_gap(self, s, conn);
        return;
    }
    for (size_t i = 0; i < env->events.n; i++)
        s_replay_one(self, j, env->events.v[i].p, env->events.v[i].n, 0);
    if (s_ring_covers(s, j->last)) {
        s_ring_replay(self, s, j);
        int64_t count = j->replayed;
        session_forget_joiner(s, conn);
        s_join_done(self, s, conn, count, false);
    } else if (env->events.n > 0) {
        s_ask_store(self, s, j); /* more to come */
    } else { /* the store has nothing more, and the ring does not reach */
        session_forget_joiner(s, conn);
        s_gap(self, s, conn);
    }
}

/* ---- loading and eviction ---- */

static bool
s_needs_session(const pl_env_t *env)
{
    switch (env->type) {
    case PL_MSG_JOIN:
    case PL_MSG_CHAT:
    case PL_MSG_TYPING:
    case PL_MSG_CANCEL:
    case PL_MSG_READ:
    case PL_MSG_HTTP_GET:
    case PL_MSG_HTTP_DELETE:
    case PL_MSG_HTTP_CLEAR:
        return true;
    case PL_MSG_LEAVE:
        return !(pl_env_has(env, PL_F_FLAG) && env->flag);
    default:
        return false;
    }
}

bool
session_park(self_t *self, pl_env_t *env)
{
    if (self->missing || !s_needs_session(env))
        return false;
    s_parked_t *q = pl_map_get(self->loading, env->session);
    bool first = q == NULL;
    if (first) {
        q = calloc(1, sizeof *q);
        if (!q || pl_map_put(self->loading, env->session, q) != 0) {
            free(q);
            return false;
        }
    }
    pl_env_t *v = q->n < PL_PARKED_MAX ? realloc(q->v, (q->n + 1) * sizeof *v) : NULL;
    if (!v) {
        if (pl_env_has(env, PL_F_CONN))
            session_error(self, env, PL_E_BUSY, "the session is loading; try again");
        return true;
    }
    q->v = v;
    q->v[q->n] = *env; /* take it: the caller's copy is emptied */
    q->n++;
    pl_env_init(env, env->type);
    if (first) {
        pl_env_t req;
        pl_env_init(&req, PL_MSG_ST_LOAD);
        pl_env_set_str(&req, PL_F_SESSION, q->v[0].session);
        session_to_store(self, &req);
        pl_env_reset(&req);
    }
    return true;
}

/* Builds the in-memory session from the store's answer. */
static s_session_t *
s_from_loaded(self_t *self, const pl_env_t *env)
{
    if (!session_room(self))
        return NULL;
    s_session_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    snprintf(s->id, sizeof s->id, "%s", env->session);
    s->model = session_dup(env->model);
    s->kind = session_dup(env->kind);
    s->name = session_dup(env->name);
    s->system = pl_env_has(env, PL_F_SYSTEM) ? session_dup(env->system) : NULL;
    s->created = env->ts;
    s->seq = env->seq;
    s->nmessages = env->count;
    s->last_active = pl_now_ms();
    s->hist = calloc(env->hist.n ? env->hist.n : 1, sizeof *s->hist);
    bool ok = s->model && s->kind && s->name && s->hist;
    for (size_t i = 0; ok && i < env->hist.n; i++) {
        const pl_histent_t *e = &env->hist.v[i];
        s->hist[i] = (pl_histent_t){strdup(e->id), strdup(e->role), strdup(e->text), strdup(e->conn), e->ts,
                                    e->ord, e->finish};
        s->nhist++;
        ok = s->hist[i].id && s->hist[i].role && s->hist[i].text && s->hist[i].conn;
    }
    if (!ok || pl_map_put(self->sessions, s->id, s) != 0) {
        session_free(s);
        return NULL;
    }
    self->stats[PL_STAT_SESSIONS_ACTIVE]++;
    self->stats[PL_STAT_SESSIONS_LOADED]++;
    return s;
}

void
session_handle_loaded(self_t *self, pl_env_t *env)
{
    s_parked_t *q = pl_map_take(self->loading, env->session);
    if (!q)
        return;
    s_session_t *s = NULL;
    if (env->code == 200 && !pl_map_get(self->sessions, env->session)) {
        s = s_from_loaded(self, env);
        if (!s) {
            pl_log_warn("session", "load=%s error=no_room", env->session);
            for (size_t i = 0; i < q->n; i++)
                if (pl_env_has(&q->v[i], PL_F_CONN))
                    session_error(self, &q->v[i], PL_E_BUSY, "too many sessions in memory; try again");
            for (size_t i = 0; i < q->n; i++)
                pl_env_reset(&q->v[i]);
            free(q->v);
            free(q);
            return;
        }
        pl_log_info("session", "loaded=%s messages=%lld seq=%lld", s->id, (long long) s->nmessages,
                    (long long) s->seq);
    }
    /* replay what waited, in order; the handler finds the session now, or
       (self->missing) answers that there is none */
    self->missing = env->code != 200;
    for (size_t i = 0; i < q->n; i++) {
        pl_session_actor.handle(self, &q->v[i]);
        pl_env_reset(&q->v[i]);
    }
    self->missing = false;
    free(q->v);
    free(q);
}

static bool
s_idle(const s_session_t *s)
{
    return s->nmembers == 0 && !s->running && s->npending == 0 && s->njoiners == 0;
}

static void
s_evict(self_t *self, s_session_t *s)
{
    pl_log_info("session", "evicted=%s", s->id);
    self->stats[PL_STAT_SESSIONS_EVICTED]++;
    self->stats[PL_STAT_SESSIONS_ACTIVE]--;
    session_free(pl_map_take(self->sessions, s->id));
}

void
session_sweep(self_t *self, int64_t now)
{
    int64_t idle_ms = self->cfg->cleanup_interval * 1000;
    /* the map cannot change under its iterator: collect, then evict */
    s_session_t **victims = NULL;
    size_t n = 0, cap = 0;
    pl_map_iter_t it = {0};
    void *v;
    while (pl_map_next(self->sessions, &it, &v)) {
        s_session_t *s = v;
        if (!s_idle(s) || now - s->last_active < idle_ms)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            s_session_t **g = realloc(victims, cap * sizeof *g);
            if (!g)
                break;
            victims = g;
        }
        victims[n++] = s;
    }
    for (size_t i = 0; i < n; i++)
        s_evict(self, victims[i]);
    free(victims);
}

bool
session_room(self_t *self)
{
    if (pl_map_size(self->sessions) < self->max_sessions)
        return true;
    s_session_t *oldest = NULL;
    pl_map_iter_t it = {0};
    void *v;
    while (pl_map_next(self->sessions, &it, &v)) {
        s_session_t *s = v;
        if (s_idle(s) && (!oldest || s->last_active < oldest->last_active))
            oldest = s;
    }
    if (!oldest)
        return false;
    s_evict(self, oldest);
    return true;
}
