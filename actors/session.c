/*  session — the session actor: a conversation, its members and its turns.

    Owns, per session: the members (connection ids, typing state), the
    multi-turn history, the per-session event sequence `seq`, the running
    turn and the turns queued behind it. Every session event leaves here as
    one envelope to the edge, which fans it out to the members' sockets.

    This file: the shard's lifecycle, sessions and membership, and the
    dispatch of every envelope. Turns are in session_turn.c, the HTTP
    requests in session_http.c; session_int.h is what the three share. */
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
    free(s->model);
    free(s->kind);
    free(s->name);
    free(s->system);
    free(s->turn_model);
    free(s->answer);
    free(s);
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
    self->max_sessions = (size_t) (self->cfg->max_sessions + actor->shards - 1) / actor->shards;
    if (!self->sessions) {
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

/* Broadcasts a session event: persistent events advance seq, typing does not. */
void
session_broadcast(self_t *self, s_session_t *s, pl_env_t *ev)
{
    if (ev->type != PL_MSG_EV_TYPING)
        s->seq++;
    pl_env_set_str(ev, PL_F_SESSION, s->id);
    pl_env_set_i64(ev, PL_F_SEQ, s->seq);
    session_to_edge(self, ev);
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

static void
s_member_event(self_t *self, s_session_t *s, uint64_t conn, bool joined)
{
    pl_env_t ev;
    pl_env_init(&ev, PL_MSG_EV_MEMBER);
    pl_env_set_u64(&ev, PL_F_CONN, conn);
    pl_env_set_u64(&ev, PL_F_EXCEPT, conn);
    pl_env_set_bool(&ev, PL_F_FLAG, joined);
    pl_env_set_i64(&ev, PL_F_MEMBERS, (int64_t) s->nmembers);
    session_broadcast(self, s, &ev);
}

/* Sends SESSION_CREATED or SESSION_JOINED to `conn`. */
static void
s_send_joined(self_t *self, s_session_t *s, pl_msg_t type, uint64_t conn)
{
    pl_env_t out;
    pl_env_init(&out, type);
    pl_env_set_u64(&out, PL_F_CONN, conn);
    pl_env_set_str(&out, PL_F_SESSION, s->id);
    pl_env_set_i64(&out, PL_F_SEQ, s->seq);
    pl_env_set_i64(&out, PL_F_COUNT, (int64_t) s->nhist);
    pl_env_set_str(&out, PL_F_MODEL, s->model);
    pl_env_set_str(&out, PL_F_KIND, s->kind);
    pl_env_set_str(&out, PL_F_NAME, s->name);
    pl_env_set_i64(&out, PL_F_MEMBERS, (int64_t) s->nmembers);
    session_to_edge(self, &out);
    pl_env_reset(&out);
}

static bool
s_add_member(self_t *self, s_session_t *s, uint64_t conn)
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
    if (pl_map_size(self->sessions) >= self->max_sessions) {
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
    if (!s->model || !s->kind || !s->name || pl_map_put(self->sessions, s->id, s) != 0) {
        session_free(s);
        *code = PL_E_INTERNAL, *why = "out of memory";
        return NULL;
    }
    self->stats[PL_STAT_SESSIONS_ACTIVE]++;
    return s;
}

static void
s_handle_create(self_t *self, pl_env_t *env)
{
    int code = 0;
    const char *why = NULL;
    s_session_t *s = session_create(self, env, &code, &why);
    if (!s || !s_add_member(self, s, env->conn)) {
        session_error(self, env, s ? PL_E_BUSY : code, s ? "session is full" : why);
        session_member_gone(self, env->conn, env->session);
        return;
    }
    s_send_joined(self, s, PL_MSG_SESSION_CREATED, env->conn);
    pl_log_info("session", "created=%s conn=c%016llx model=%s", s->id, (unsigned long long) env->conn, s->model);
}

static void
s_handle_join(self_t *self, s_session_t *s, pl_env_t *env)
{
    bool was = session_member(s, env->conn) != NULL;
    if (!s_add_member(self, s, env->conn)) {
        session_error(self, env, PL_E_BUSY, "session is full");
        session_member_gone(self, env->conn, s->id);
        return;
    }
    s_send_joined(self, s, PL_MSG_SESSION_JOINED, env->conn);
    if (!was)
        s_member_event(self, s, env->conn, true);
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
    if (!session_member(s, env->conn)) {
        if (!closing)
            session_error(self, env, PL_E_NOT_FOUND, "not a member of this session");
        return;
    }
    s_remove_member(self, s, env->conn);
    if (closing) {
        s_member_event(self, s, env->conn, false);
        return;
    }
    pl_env_t out;
    pl_env_init(&out, PL_MSG_SESSION_LEFT);
    pl_env_set_u64(&out, PL_F_CONN, env->conn);
    pl_env_set_str(&out, PL_F_SESSION, s->id);
    session_to_edge(self, &out);
    pl_env_reset(&out);
    s_member_event(self, s, env->conn, false);
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


static void
s_handle(void *self_, pl_env_t *env)
{
    self_t *self = self_;
    switch (env->type) {
    case PL_MSG_CREATE:
        s_handle_create(self, env);
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
        if (env->type == PL_MSG_JOIN || env->type == PL_MSG_CHAT || env->type == PL_MSG_TYPING ||
            env->type == PL_MSG_CANCEL ||
            (env->type == PL_MSG_LEAVE && !(pl_env_has(env, PL_F_FLAG) && env->flag))) {
            session_error(self, env, PL_E_NOT_FOUND, "no such session");
            session_member_gone(self, env->conn, env->session);
        }
        return;
    }
    switch (env->type) {
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

const pl_actor_ops_t pl_session_actor = {
    .name = "session",
    .create = s_self_new,
    .destroy = s_self_destroy,
    .handle = s_handle,
};
