/*  session — the session actor: a conversation, its members and its turns.

    Owns, per session: the members (connection ids, typing state), the
    multi-turn history, the per-session event sequence `seq`, the running
    turn and the turns queued behind it. Every session event leaves here as
    one envelope to the edge, which fans it out to the members' sockets.

    Every persistent event (those that advance seq) also goes to the store
    actor and into the session's ring of recent events; a session with no
    members is evicted after --cleanup-interval and loaded again from the
    store when someone asks for it.

    This file: the shard's lifecycle, sessions and membership, and the
    dispatch of every envelope. Turns are in session_turn.c, the HTTP
    requests in session_http.c, the store (loading, eviction, resuming) in
    session_store.c; session_int.h is what they share. */
#include <stdlib.h>
#include <string.h>

#include "../protocol/pl_err.h"
#include "../protocol/pl_limits.h"
#include "../protocol/pl_util.h"
#include "../transport/pl_log.h"
#include "../transport/pl_map.h"
#include "pl_actors.h"
#include "pl_config.h"

#include "session_int.h"

void
session_hist_free(pl_histent_t *e)
{
    free(e->id);
    free(e->role);
    free(e->text);
    free(e->conn);
}

void
session_free(void *p)
{
    s_session_t *s = p;
    if (!s)
        return;
    for (size_t i = 0; i < s->nhist; i++)
        session_hist_free(&s->hist[i]);
    for (size_t i = 0; i < s->npending; i++)
        pl_env_reset(&s->pending[i].chat);
    free(s->hist);
    free(s->pending);
    free(s->members);
    session_ring_free(s);
    pl_env_reset(&s->chunks_out);
    free(s->joiners);
    free(s->model);
    free(s->kind);
    free(s->name);
    free(s->system);
    free(s->turn_model);
    free(s->answer);
    free(s);
}

static void
s_parked_free(void *p)
{
    s_parked_t *q = p;
    if (!q)
        return;
    for (size_t i = 0; i < q->n; i++)
        pl_env_reset(&q->v[i]);
    free(q->v);
    free(q);
}

static void *
s_self_new(const pl_actor_t *actor)
{
    self_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->actor = actor;
    self->cfg = actor->arg;
    self->sessions = pl_map_new(session_free);
    self->loading = pl_map_new(s_parked_free);
    self->max_sessions = (size_t) (self->cfg->max_sessions + actor->shards - 1) / actor->shards;
    self->next_sweep = pl_now_ms() + 1000;
    if (!self->sessions || !self->loading) {
        pl_map_destroy(&self->sessions);
        pl_map_destroy(&self->loading);
        free(self);
        return NULL;
    }
    return self;
}

static void
s_self_destroy(void **self_p)
{
    self_t *self = *self_p;
    if (!self)
        return;
    pl_map_destroy(&self->sessions);
    pl_map_destroy(&self->loading);
    free(self);
    *self_p = NULL;
}

/* ---- sending ---- */

void
session_to_edge(self_t *self, const pl_env_t *env)
{
    pl_outbox_send(self->actor->out, PL_KIND_EDGE, 0, env);
}

void
session_error(self_t *self, const pl_env_t *req, int code, const char *text)
{
    pl_actor_error(self->actor, req->conn, req->cid, code, text);
}

/* Tells the connection actor that `conn` is not (or no longer) a member. */
void
session_member_gone(self_t *self, uint64_t conn, const char *session)
{
    pl_env_t gone;
    pl_env_init(&gone, PL_MSG_MEMBER_GONE);
    pl_env_set_u64(&gone, PL_F_CONN, conn);
    pl_env_set_str(&gone, PL_F_SESSION, session);
    pl_outbox_send(self->actor->out, PL_KIND_CONN, (unsigned) (conn % self->actor->shards), &gone);
    pl_env_reset(&gone);
}

/* Broadcasts a session event. Persistent events advance seq and are
   encoded once for the edge, the store and the recent ring; typing and
   membership carry the current seq without advancing it (they are never
   replayed), and a deleted session's last event is not stored. */
void
session_broadcast(self_t *self, s_session_t *s, pl_env_t *ev)
{
    bool persistent = ev->type != PL_MSG_EV_TYPING && ev->type != PL_MSG_EV_MEMBER;
    if (persistent)
        s->seq++;
    pl_env_set_str(ev, PL_F_SESSION, s->id);
    pl_env_set_i64(ev, PL_F_SEQ, s->seq);
    char *buf = NULL;
    size_t len = 0;
    if (!persistent || ev->type == PL_MSG_EV_DELETED || pl_env_encode(ev, &buf, &len) != 0) {
        session_to_edge(self, ev);
    } else {
        pl_outbox_send_raw(self->actor->out, PL_KIND_EDGE, 0, buf, len);
        session_store_event(self, s, ev->type, s->seq, buf, len);
        session_ring_push(self, s, s->seq, buf, len); /* takes buf */
    }
    pl_env_reset(ev);
}

/* ---- members ---- */

s_member_t *
session_member(s_session_t *s, uint64_t conn)
{
    for (size_t i = 0; i < s->nmembers; i++)
        if (s->members[i].conn == conn)
            return &s->members[i];
    return NULL;
}

void
session_typing(self_t *self, s_session_t *s, s_member_t *m, bool typing)
{
    m->typing = typing;
    pl_env_t ev;
    pl_env_init(&ev, PL_MSG_EV_TYPING);
    pl_env_set_u64(&ev, PL_F_CONN, m->conn);
    pl_env_set_u64(&ev, PL_F_EXCEPT, m->conn);
    pl_env_set_bool(&ev, PL_F_FLAG, typing);
    session_broadcast(self, s, &ev);
}

void
session_member_event(self_t *self, s_session_t *s, uint64_t conn, bool joined)
{
    pl_env_t ev;
    pl_env_init(&ev, PL_MSG_EV_MEMBER);
    pl_env_set_u64(&ev, PL_F_CONN, conn);
    pl_env_set_u64(&ev, PL_F_EXCEPT, conn);
    pl_env_set_bool(&ev, PL_F_FLAG, joined);
    pl_env_set_i64(&ev, PL_F_MEMBERS, (int64_t) s->nmembers);
    session_broadcast(self, s, &ev);
}

/* Sends SESSION_CREATED or SESSION_JOINED to `conn` (with the fields of
   `extra`, when given: REPLAYED, GAP). */
void
session_send_joined(self_t *self, s_session_t *s, pl_msg_t type, uint64_t conn, const pl_env_t *extra)
{
    pl_env_t out;
    if (!extra || pl_env_copy(&out, extra) != 0)
        pl_env_init(&out, type);
    out.type = type;
    pl_env_set_u64(&out, PL_F_CONN, conn);
    pl_env_set_str(&out, PL_F_SESSION, s->id);
    pl_env_set_i64(&out, PL_F_SEQ, s->seq);
    pl_env_set_i64(&out, PL_F_COUNT, s->nmessages);
    pl_env_set_str(&out, PL_F_MODEL, s->model);
    pl_env_set_str(&out, PL_F_KIND, s->kind);
    pl_env_set_str(&out, PL_F_NAME, s->name);
    pl_env_set_i64(&out, PL_F_MEMBERS, (int64_t) s->nmembers);
    session_to_edge(self, &out);
    pl_env_reset(&out);
}

bool
session_add_member(self_t *self, s_session_t *s, uint64_t conn)
{
    if (session_member(s, conn))
        return true;
    if (s->nmembers >= (size_t) self->cfg->max_members)
        return false;
    s_member_t *m = realloc(s->members, (s->nmembers + 1) * sizeof *m);
    if (!m)
        return false;
    s->members = m;
    s->members[s->nmembers++] = (s_member_t){conn, false};
    self->stats[PL_STAT_SESSIONS_MEMBERS]++;
    pl_env_t st;
    pl_env_init(&st, PL_MSG_ST_MEMBER);
    pl_env_set_str(&st, PL_F_SESSION, s->id);
    pl_env_set_u64(&st, PL_F_CONN, conn);
    pl_env_set_f64(&st, PL_F_TS, pl_wall_s());
    session_to_store(self, &st);
    pl_env_reset(&st);
    return true;
}

/* ---- sessions ---- */

/* True when `model` (may be NULL: the default) names a model we serve. */
bool
session_model_ok(self_t *self, const char *model)
{
    return !model || strcmp(model, self->cfg->model) == 0 || pl_models_find(&self->cfg->models_table, model);
}

char *
session_dup(const char *s)
{
    return strdup(s ? s : "");
}

/* Creates session `id` from a CREATE or HTTP_CREATE; NULL with *code set. */
s_session_t *
session_create(self_t *self, const pl_env_t *req, int *code, const char **why)
{
    if (pl_map_get(self->sessions, req->session)) {
        *code = PL_E_BUSY, *why = "session id already in use";
        return NULL;
    }
    if (!session_room(self)) {
        *code = PL_E_BUSY, *why = "too many sessions";
        return NULL;
    }
    if (!session_model_ok(self, req->model)) {
        *code = PL_E_NOT_FOUND, *why = "unknown model";
        return NULL;
    }
    s_session_t *s = calloc(1, sizeof *s);
    if (!s) {
        *code = PL_E_INTERNAL, *why = "out of memory";
        return NULL;
    }
    snprintf(s->id, sizeof s->id, "%s", req->session);
    s->model = session_dup(pl_env_has(req, PL_F_MODEL) ? req->model : self->cfg->model);
    s->kind = session_dup(pl_env_has(req, PL_F_KIND) ? req->kind : "private");
    s->name = session_dup(req->name);
    s->system = pl_env_has(req, PL_F_SYSTEM) ? session_dup(req->system) : NULL;
    s->created = pl_wall_s();
    s->last_active = pl_now_ms();
    if (!s->model || !s->kind || !s->name || pl_map_put(self->sessions, s->id, s) != 0) {
        session_free(s);
        *code = PL_E_INTERNAL, *why = "out of memory";
        return NULL;
    }
    self->stats[PL_STAT_SESSIONS_ACTIVE]++;
    session_store_new(self, s);
    return s;
}

static void
s_handle_create(self_t *self, pl_env_t *env)
{
    int code = 0;
    const char *why = NULL;
    s_session_t *s = session_create(self, env, &code, &why);
    if (!s || !session_add_member(self, s, env->conn)) {
        session_error(self, env, s ? PL_E_BUSY : code, s ? "session is full" : why);
        session_member_gone(self, env->conn, env->session);
        return;
    }
    session_send_joined(self, s, PL_MSG_SESSION_CREATED, env->conn, NULL);
    pl_log_info("session", "created=%s conn=c%016llx model=%s", s->id, (unsigned long long) env->conn, s->model);
}

static void
s_handle_join(self_t *self, s_session_t *s, pl_env_t *env)
{
    bool was = session_member(s, env->conn) != NULL;
    if (!was && pl_env_has(env, PL_F_LASTSEQ)) {
        session_resume(self, s, env);
        return;
    }
    if (!session_add_member(self, s, env->conn)) {
        session_error(self, env, PL_E_BUSY, "session is full");
        session_member_gone(self, env->conn, s->id);
        return;
    }
    session_send_joined(self, s, PL_MSG_SESSION_JOINED, env->conn, NULL);
    if (!was)
        session_member_event(self, s, env->conn, true);
}

static void
s_remove_member(self_t *self, s_session_t *s, uint64_t conn)
{
    s_member_t *m = session_member(s, conn);
    if (!m)
        return;
    if (m->typing)
        session_typing(self, s, m, false);
    m = session_member(s, conn);
    *m = s->members[--s->nmembers];
    self->stats[PL_STAT_SESSIONS_MEMBERS]--;
}

static void
s_handle_leave(self_t *self, s_session_t *s, pl_env_t *env)
{
    bool closing = pl_env_has(env, PL_F_FLAG) && env->flag; /* the connection is gone */
    session_forget_joiner(s, env->conn);
    if (!session_member(s, env->conn)) {
        if (!closing)
            session_error(self, env, PL_E_NOT_FOUND, "not a member of this session");
        return;
    }
    s_remove_member(self, s, env->conn);
    if (closing) {
        session_member_event(self, s, env->conn, false);
        return;
    }
    pl_env_t out;
    pl_env_init(&out, PL_MSG_SESSION_LEFT);
    pl_env_set_u64(&out, PL_F_CONN, env->conn);
    pl_env_set_str(&out, PL_F_SESSION, s->id);
    session_to_edge(self, &out);
    pl_env_reset(&out);
    session_member_event(self, s, env->conn, false);
}


static void
s_handle_typing(self_t *self, s_session_t *s, pl_env_t *env)
{
    s_member_t *m = session_member(s, env->conn);
    if (!m)
        session_error(self, env, PL_E_FORBIDDEN, "not a member of this session");
    else if (m->typing != env->flag) /* repeats are not news: no amplification */
        session_typing(self, s, m, env->flag);
}


/* A read receipt: stored, and every member hears who read which message. */
static void
s_handle_read(self_t *self, s_session_t *s, pl_env_t *env)
{
    if (!session_member(s, env->conn)) {
        session_error(self, env, PL_E_FORBIDDEN, "not a member of this session");
        return;
    }
    bool known = false;
    for (size_t i = 0; i < s->nhist && !known; i++)
        known = strcmp(s->hist[i].id, env->msgid) == 0;
    if (!known) {
        session_error(self, env, PL_E_NOT_FOUND, "no such message in this session");
        return;
    }
    double now = pl_wall_s();
    pl_env_t st;
    pl_env_init(&st, PL_MSG_ST_RECEIPT);
    pl_env_set_str(&st, PL_F_SESSION, s->id);
    pl_env_set_str(&st, PL_F_MSGID, env->msgid);
    pl_env_set_u64(&st, PL_F_CONN, env->conn);
    pl_env_set_f64(&st, PL_F_TS, now);
    session_to_store(self, &st);
    pl_env_reset(&st);
    pl_env_t ev;
    pl_env_init(&ev, PL_MSG_EV_RECEIPT);
    pl_env_set_str(&ev, PL_F_MSGID, env->msgid);
    pl_env_set_u64(&ev, PL_F_CONN, env->conn);
    pl_env_set_f64(&ev, PL_F_TS, now);
    session_broadcast(self, s, &ev);
}

/* SIGTERM: no new turns; tell the edge how many answers still run. */
static void
s_handle_drain(self_t *self, bool interrupt)
{
    self->draining = true;
    if (interrupt) {
        pl_map_iter_t it = {0};
        void *v;
        while (pl_map_next(self->sessions, &it, &v)) {
            s_session_t *s = v;
            if (s->running)
                session_cancel_turn(self, s, PL_FINISH_INTERRUPTED);
        }
    }
    session_drained(self);
}

int64_t
session_running(self_t *self)
{
    int64_t n = 0;
    pl_map_iter_t it = {0};
    void *v;
    while (pl_map_next(self->sessions, &it, &v))
        n += ((s_session_t *) v)->running;
    return n;
}

void
session_drained(self_t *self)
{
    pl_env_t out;
    pl_env_init(&out, PL_MSG_DRAINED);
    pl_env_set_i64(&out, PL_F_NUMBER, session_running(self));
    pl_env_set_u64(&out, PL_F_REQ, self->actor->shard);
    session_to_edge(self, &out);
    pl_env_reset(&out);
}

static void
s_handle(void *self_, pl_env_t *env)
{
    self_t *self = self_;
    switch (env->type) {
    case PL_MSG_CREATE:
        s_handle_create(self, env);
        return;
    case PL_MSG_ST_LOADED:
        session_handle_loaded(self, env);
        return;
    case PL_MSG_DRAIN:
    case PL_MSG_INTERRUPT:
        s_handle_drain(self, env->type == PL_MSG_INTERRUPT);
        return;
    case PL_MSG_HTTP_CREATE:
    case PL_MSG_HTTP_LIST:
    case PL_MSG_HTTP_GET:
    case PL_MSG_HTTP_DELETE:
    case PL_MSG_HTTP_CLEAR:
        session_handle_http(self, env);
        return;
    case PL_MSG_STATS_REQ: {
        pl_env_t reply;
        pl_env_init(&reply, PL_MSG_STATS_REPLY);
        pl_env_set_u64(&reply, PL_F_REQ, env->req);
        pl_env_set_i64v(&reply, PL_F_STATS, self->stats, PL_STAT_COUNT_);
        session_to_edge(self, &reply);
        pl_env_reset(&reply);
        return;
    }
    default:
        break;
    }
    if (!pl_env_has(env, PL_F_SESSION))
        return;
    s_session_t *s = pl_map_get(self->sessions, env->session);
    if (!s) {
        if (session_park(self, env))
            return;
        if (env->type == PL_MSG_JOIN || env->type == PL_MSG_CHAT || env->type == PL_MSG_TYPING ||
            env->type == PL_MSG_CANCEL || env->type == PL_MSG_READ ||
            (env->type == PL_MSG_LEAVE && !(pl_env_has(env, PL_F_FLAG) && env->flag))) {
            session_error(self, env, PL_E_NOT_FOUND, "no such session");
            session_member_gone(self, env->conn, env->session);
        }
        return;
    }
    s->last_active = pl_now_ms();
    switch (env->type) {
    case PL_MSG_ST_EVENTS:
        session_handle_events(self, env);
        break;
    case PL_MSG_READ:
        s_handle_read(self, s, env);
        break;
    case PL_MSG_JOIN:
        s_handle_join(self, s, env);
        break;
    case PL_MSG_LEAVE:
        s_handle_leave(self, s, env);
        break;
    case PL_MSG_CHAT:
        session_handle_chat(self, s, env);
        break;
    case PL_MSG_TYPING:
        s_handle_typing(self, s, env);
        break;
    case PL_MSG_CANCEL:
        session_handle_cancel(self, s, env);
        break;
    case PL_MSG_MODEL_CHUNK:
        session_handle_chunk(self, s, env);
        break;
    case PL_MSG_MODEL_DONE:
        session_handle_done(self, s, env);
        break;
    default:
        break;
    }
}

static int64_t
s_next_timer(void *self_)
{
    return ((self_t *) self_)->next_sweep;
}

static void
s_on_timer(void *self_, int64_t now)
{
    self_t *self = self_;
    session_sweep(self, now);
    int64_t every = self->cfg->cleanup_interval * 1000 / 4;
    self->next_sweep = now + (every < 1000 ? 1000 : every);
}

const pl_actor_ops_t pl_session_actor = {
    .name = "session",
    .create = s_self_new,
    .destroy = s_self_destroy,
    .handle = s_handle,
    .next_timer = s_next_timer,
    .on_timer = s_on_timer,
};
