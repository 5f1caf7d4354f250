/*  conn — the connection actor: what one client connection is doing.

    Owns, per connection: its current session and the sessions it has joined.
    It resolves a request's session (the named one, else the current one),
    creates the private session of a first chat, and on disconnect leaves
    every session the connection was in. Everything else about a session is
    the session actor's. Membership here is optimistic: a join is recorded
    when forwarded (so a chat right after a join finds its session); the
    session actor sends MEMBER_GONE when a join failed or a session went. */
#include <stdlib.h>
#include <string.h>

#include "../protocol/pl_err.h"
#include "../protocol/pl_limits.h"
#include "../protocol/pl_util.h"
#include "../transport/pl_map.h"
#include "pl_actors.h"
#include "pl_config.h"

typedef struct {
    char current[PL_ID_MAX + 1];
    size_t njoined;
    char (*joined)[PL_ID_MAX + 1]; /* max_conn_sessions slots */
} s_conn_t;

typedef struct {
    const pl_actor_t *actor;
    const pl_config_t *cfg;
    pl_map_t *conns; /* conn key → s_conn_t */
} self_t;

static void
s_conn_free(void *p)
{
    s_conn_t *c = p;
    if (c)
        free(c->joined);
    free(c);
}

static void *
s_self_new(const pl_actor_t *actor)
{
    self_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->actor = actor;
    self->cfg = actor->arg;
    self->conns = pl_map_new(s_conn_free);
    if (!self->conns) {
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
    pl_map_destroy(&self->conns);
    free(self);
    *self_p = NULL;
}

static void
s_key(uint64_t conn, char *key)
{
    pl_conn_name(conn, key, 24);
}

static s_conn_t *
s_conn(self_t *self, uint64_t conn, bool create)
{
    char key[24];
    s_key(conn, key);
    s_conn_t *c = pl_map_get(self->conns, key);
    if (c || !create)
        return c;
    c = calloc(1, sizeof *c);
    if (c)
        c->joined = calloc((size_t) self->cfg->max_conn_sessions, sizeof *c->joined);
    if (!c || !c->joined || pl_map_put(self->conns, key, c) != 0) {
        s_conn_free(c);
        return NULL;
    }
    return c;
}

static bool
s_is_joined(const s_conn_t *c, const char *session)
{
    for (size_t i = 0; i < c->njoined; i++)
        if (strcmp(c->joined[i], session) == 0)
            return true;
    return false;
}

/* Records `session` as joined and current. False when the connection is in
   as many sessions as allowed. */
static bool
s_add_joined(self_t *self, s_conn_t *c, const char *session)
{
    if (!s_is_joined(c, session)) {
        if (c->njoined >= (size_t) self->cfg->max_conn_sessions)
            return false;
        snprintf(c->joined[c->njoined++], PL_ID_MAX + 1, "%s", session);
    }
    snprintf(c->current, sizeof c->current, "%s", session);
    return true;
}

static void
s_remove_joined(s_conn_t *c, const char *session)
{
    for (size_t i = 0; i < c->njoined; i++) {
        if (strcmp(c->joined[i], session) != 0)
            continue;
        memmove(c->joined[i], c->joined[i + 1], (c->njoined - i - 1) * sizeof c->joined[0]);
        c->njoined--;
        break;
    }
    if (strcmp(c->current, session) == 0)
        snprintf(c->current, sizeof c->current, "%s", c->njoined ? c->joined[c->njoined - 1] : "");
}

static void
s_forward(self_t *self, const pl_env_t *env)
{
    pl_outbox_send_session(self->actor->out, PL_KIND_SESSION, env->session, env);
}

/* Fills env->session from the current session; false (and an error sent)
   when there is none. */
static bool
s_resolve(self_t *self, s_conn_t *c, pl_env_t *env)
{
    if (pl_env_has(env, PL_F_SESSION))
        return true;
    if (c->current[0]) {
        pl_env_set_str(env, PL_F_SESSION, c->current);
        return true;
    }
    pl_actor_error(self->actor, env->conn, env->cid, PL_E_NOT_FOUND,
                   "not in a session: create_session or join_session first");
    return false;
}

static void
s_handle_create(self_t *self, s_conn_t *c, pl_env_t *env)
{
    char id[24];
    pl_id_new('s', id, sizeof id);
    if (!s_add_joined(self, c, id)) {
        pl_actor_error(self->actor, env->conn, env->cid, PL_E_BUSY, "too many sessions on this connection");
        return;
    }
    pl_env_set_str(env, PL_F_SESSION, id);
    s_forward(self, env);
}

static void
s_handle_chat(self_t *self, s_conn_t *c, pl_env_t *env)
{
    if (!pl_env_has(env, PL_F_SESSION) && !c->current[0]) {
        /* A first chat creates a private session: CREATE then CHAT, in order
           on one pipe, so the session exists when the chat arrives. */
        pl_env_t create;
        pl_env_init(&create, PL_MSG_CREATE);
        pl_env_set_u64(&create, PL_F_CONN, env->conn);
        if (pl_env_has(env, PL_F_MODEL))
            pl_env_set_str(&create, PL_F_MODEL, env->model);
        s_handle_create(self, c, &create);
        bool ok = pl_env_has(&create, PL_F_SESSION);
        pl_env_reset(&create);
        if (!ok)
            return;
    }
    if (s_resolve(self, c, env))
        s_forward(self, env);
}

static void
s_handle(void *self_, pl_env_t *env)
{
    self_t *self = self_;
    uint64_t conn = env->conn;
    char key[24];
    s_key(conn, key);

    if (env->type == PL_MSG_CONN_CLOSE) {
        s_conn_t *c = pl_map_take(self->conns, key);
        if (!c)
            return;
        pl_env_t leave;
        pl_env_init(&leave, PL_MSG_LEAVE);
        pl_env_set_u64(&leave, PL_F_CONN, conn);
        pl_env_set_bool(&leave, PL_F_FLAG, true); /* closing: leave silently */
        for (size_t i = 0; i < c->njoined; i++) {
            pl_env_set_str(&leave, PL_F_SESSION, c->joined[i]);
            s_forward(self, &leave);
        }
        pl_env_reset(&leave);
        s_conn_free(c);
        return;
    }
    /* The edge sends CONN_OPEN first and CONN_CLOSE last on one ordered
       pipe; anything for an unknown connection is late news of a closed one. */
    s_conn_t *c = s_conn(self, conn, env->type == PL_MSG_CONN_OPEN);
    if (!c) {
        if (env->type == PL_MSG_CONN_OPEN)
            pl_actor_error(self->actor, conn, env->cid, PL_E_INTERNAL, "out of memory");
        return;
    }
    switch (env->type) {
    case PL_MSG_CONN_OPEN:
        break;
    case PL_MSG_CREATE:
        s_handle_create(self, c, env);
        break;
    case PL_MSG_JOIN:
        if (!s_add_joined(self, c, env->session))
            pl_actor_error(self->actor, conn, env->cid, PL_E_BUSY, "too many sessions on this connection");
        else
            s_forward(self, env);
        break;
    case PL_MSG_LEAVE:
        if (s_resolve(self, c, env)) {
            s_forward(self, env);
            s_remove_joined(c, env->session);
        }
        break;
    case PL_MSG_CHAT:
        s_handle_chat(self, c, env);
        break;
    case PL_MSG_TYPING:
    case PL_MSG_CANCEL:
    case PL_MSG_READ:
        if (s_resolve(self, c, env))
            s_forward(self, env);
        break;
    case PL_MSG_MEMBER_GONE:
        s_remove_joined(c, env->session);
        break;
    default:
        break;
    }
}

void
pl_actor_error(const pl_actor_t *actor, uint64_t conn, const char *cid, int code, const char *text)
{
    pl_env_t err;
    pl_env_init(&err, PL_MSG_ERROR);
    pl_env_set_u64(&err, PL_F_CONN, conn);
    pl_env_set_i64(&err, PL_F_CODE, code < 0 ? -code : code);
    pl_env_set_str(&err, PL_F_TEXT, text);
    if (cid)
        pl_env_set_str(&err, PL_F_CID, cid);
    pl_outbox_send(actor->out, PL_KIND_EDGE, 0, &err);
    pl_env_reset(&err);
}

const pl_actor_ops_t pl_conn_actor = {
    .name = "conn",
    .create = s_self_new,
    .destroy = s_self_destroy,
    .handle = s_handle,
};
