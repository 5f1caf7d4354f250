/*  session — the session actor: a conversation, its members and its turns.

    Owns, per session: the members (connection ids, typing state), the
    multi-turn history, the per-session event sequence `seq`, the running
    turn and the turns queued behind it. Every session event leaves here as
    one envelope to the edge, which fans it out to the members' sockets.

    A turn: the user message joins the history (message_added), then status
    and response_start, then GENERATE with the whole history goes to the
    model shard; chunks come back, are appended to the answer and broadcast;
    MODEL_DONE stores the answer and starts the next queued turn. */
#include <stdlib.h>
#include <string.h>

#include "../protocol/pl_err.h"
#include "../protocol/pl_limits.h"
#include "../protocol/pl_util.h"
#include "../transport/pl_log.h"
#include "../transport/pl_map.h"
#include "pl_actors.h"
#include "pl_config.h"

typedef struct {
    uint64_t conn;
    bool typing;
} s_member_t;

typedef struct {
    pl_env_t chat; /* the CHAT envelope (its MSGID set), kept for its parameters */
} s_turn_t;

typedef struct {
    char id[PL_ID_MAX + 1];
    char *model, *kind, *name, *system;
    double created;
    int64_t seq;
    s_member_t *members;
    size_t nmembers;
    pl_histent_t *hist;
    size_t nhist;
    /* the running turn */
    bool running;
    char respid[24];
    char turn_msgid[24]; /* the user message being answered */
    char *turn_model;
    int64_t chunks;
    double started;
    char *answer;
    size_t answer_len;
    /* turns waiting for it, FIFO */
    s_turn_t *pending;
    size_t npending;
} s_session_t;

typedef struct {
    const pl_actor_t *actor;
    const pl_config_t *cfg;
    pl_map_t *sessions;
    size_t max_sessions; /* this shard's share */
    int64_t stats[PL_STAT_COUNT_];
} self_t;

static void
s_hist_free(pl_histent_t *e)
{
    free(e->id);
    free(e->role);
    free(e->text);
    free(e->conn);
}

static void
s_session_free(void *p)
{
    s_session_t *s = p;
    if (!s)
        return;
    for (size_t i = 0; i < s->nhist; i++)
        s_hist_free(&s->hist[i]);
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
    self->sessions = pl_map_new(s_session_free);
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

static void
s_to_edge(self_t *self, const pl_env_t *env)
{
    pl_outbox_send(self->actor->out, PL_KIND_EDGE, 0, env);
}

static void
s_error(self_t *self, const pl_env_t *req, int code, const char *text)
{
    pl_actor_error(self->actor, req->conn, req->cid, code, text);
}

/* Tells the connection actor that `conn` is not (or no longer) a member. */
static void
s_member_gone(self_t *self, uint64_t conn, const char *session)
{
    pl_env_t gone;
    pl_env_init(&gone, PL_MSG_MEMBER_GONE);
    pl_env_set_u64(&gone, PL_F_CONN, conn);
    pl_env_set_str(&gone, PL_F_SESSION, session);
    pl_outbox_send(self->actor->out, PL_KIND_CONN, (unsigned) (conn % self->actor->shards), &gone);
    pl_env_reset(&gone);
}

/* Broadcasts a session event: persistent events advance seq, typing does not. */
static void
s_broadcast(self_t *self, s_session_t *s, pl_env_t *ev)
{
    if (ev->type != PL_MSG_EV_TYPING)
        s->seq++;
    pl_env_set_str(ev, PL_F_SESSION, s->id);
    pl_env_set_i64(ev, PL_F_SEQ, s->seq);
    s_to_edge(self, ev);
    pl_env_reset(ev);
}

/* ---- members ---- */

static s_member_t *
s_member(s_session_t *s, uint64_t conn)
{
    for (size_t i = 0; i < s->nmembers; i++)
        if (s->members[i].conn == conn)
            return &s->members[i];
    return NULL;
}

static void
s_typing(self_t *self, s_session_t *s, s_member_t *m, bool typing)
{
    m->typing = typing;
    pl_env_t ev;
    pl_env_init(&ev, PL_MSG_EV_TYPING);
    pl_env_set_u64(&ev, PL_F_CONN, m->conn);
    pl_env_set_u64(&ev, PL_F_EXCEPT, m->conn);
    pl_env_set_bool(&ev, PL_F_FLAG, typing);
    s_broadcast(self, s, &ev);
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
    s_broadcast(self, s, &ev);
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
    s_to_edge(self, &out);
    pl_env_reset(&out);
}

static bool
s_add_member(self_t *self, s_session_t *s, uint64_t conn)
{
    if (s_member(s, conn))
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
static bool
s_model_ok(self_t *self, const char *model)
{
    return !model || strcmp(model, self->cfg->model) == 0 || pl_models_find(&self->cfg->models_table, model);
}

static char *
s_dup(const char *s)
{
    return strdup(s ? s : "");
}

/* Creates session `id` from a CREATE or HTTP_CREATE; NULL with *code set. */
static s_session_t *
s_create(self_t *self, const pl_env_t *req, int *code, const char **why)
{
    if (pl_map_get(self->sessions, req->session)) {
        *code = PL_E_BUSY, *why = "session id already in use";
        return NULL;
    }
    if (pl_map_size(self->sessions) >= self->max_sessions) {
        *code = PL_E_BUSY, *why = "too many sessions";
        return NULL;
    }
    if (!s_model_ok(self, req->model)) {
        *code = PL_E_NOT_FOUND, *why = "unknown model";
        return NULL;
    }
    s_session_t *s = calloc(1, sizeof *s);
    if (!s) {
        *code = PL_E_INTERNAL, *why = "out of memory";
        return NULL;
    }
    snprintf(s->id, sizeof s->id, "%s", req->session);
    s->model = s_dup(pl_env_has(req, PL_F_MODEL) ? req->model : self->cfg->model);
    s->kind = s_dup(pl_env_has(req, PL_F_KIND) ? req->kind : "private");
    s->name = s_dup(req->name);
    s->system = pl_env_has(req, PL_F_SYSTEM) ? s_dup(req->system) : NULL;
    s->created = pl_wall_s();
    if (!s->model || !s->kind || !s->name || pl_map_put(self->sessions, s->id, s) != 0) {
        s_session_free(s);
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
    s_session_t *s = s_create(self, env, &code, &why);
    if (!s || !s_add_member(self, s, env->conn)) {
        s_error(self, env, s ? PL_E_BUSY : code, s ? "session is full" : why);
        s_member_gone(self, env->conn, env->session);
        return;
    }
    s_send_joined(self, s, PL_MSG_SESSION_CREATED, env->conn);
    pl_log_info("session", "created=%s conn=c%016llx model=%s", s->id, (unsigned long long) env->conn, s->model);
}

static void
s_handle_join(self_t *self, s_session_t *s, pl_env_t *env)
{
    bool was = s_member(s, env->conn) != NULL;
    if (!s_add_member(self, s, env->conn)) {
        s_error(self, env, PL_E_BUSY, "session is full");
        s_member_gone(self, env->conn, s->id);
        return;
    }
    s_send_joined(self, s, PL_MSG_SESSION_JOINED, env->conn);
    if (!was)
        s_member_event(self, s, env->conn, true);
}

static void
s_remove_member(self_t *self, s_session_t *s, uint64_t conn)
{
    s_member_t *m = s_member(s, conn);
    if (!m)
        return;
    if (m->typing)
        s_typing(self, s, m, false);
    m = s_member(s, conn);
    *m = s->members[--s->nmembers];
    self->stats[PL_STAT_SESSIONS_MEMBERS]--;
}

static void
s_handle_leave(self_t *self, s_session_t *s, pl_env_t *env)
{
    bool closing = pl_env_has(env, PL_F_FLAG) && env->flag; /* the connection is gone */
    if (!s_member(s, env->conn)) {
        if (!closing)
            s_error(self, env, PL_E_NOT_FOUND, "not a member of this session");
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
    s_to_edge(self, &out);
    pl_env_reset(&out);
    s_member_event(self, s, env->conn, false);
}

/* Index of message `id` in the history, or -1 (searched from the newest). */
static ssize_t
s_hist_find(const s_session_t *s, const char *id)
{
    for (size_t i = s->nhist; i > 0; i--)
        if (strcmp(s->hist[i - 1].id, id) == 0)
            return (ssize_t) (i - 1);
    return -1;
}

/* Inserts a message at `pos` (nhist: at the end), dropping the oldest past
   the cap. Writes the new message's id to `id_out` (24 bytes) if given. */
static int
s_hist_insert(self_t *self, s_session_t *s, size_t pos, const char *role, const char *text, uint64_t conn,
              char *id_out)
{
    if (s->nhist >= (size_t) self->cfg->max_history) {
        s_hist_free(&s->hist[0]);
        memmove(s->hist, s->hist + 1, (s->nhist - 1) * sizeof *s->hist);
        s->nhist--;
        pos = pos > 0 ? pos - 1 : 0;
    }
    pl_histent_t *h = realloc(s->hist, (s->nhist + 1) * sizeof *h);
    if (!h)
        return -PL_E_NOMEM;
    s->hist = h;
    char id[24], cname[24] = "";
    pl_id_new('m', id, sizeof id);
    if (conn)
        pl_conn_name(conn, cname, sizeof cname);
    pl_histent_t e = {strdup(id), strdup(role), strdup(text), strdup(cname), pl_wall_s()};
    if (!e.id || !e.role || !e.text || !e.conn) {
        s_hist_free(&e);
        return -PL_E_NOMEM;
    }
    memmove(s->hist + pos + 1, s->hist + pos, (s->nhist - pos) * sizeof *s->hist);
    s->hist[pos] = e;
    s->nhist++;
    if (id_out)
        memcpy(id_out, id, sizeof id);
    return 0;
}

/* Starts the turn that answers `chat` (its MSGID names the user message).
   The model gets the history up to and including that message — the newest
   part of it that fits --max-context bytes — and the system prompt. False
   when GENERATE could not be sent (the turn is then ended as an error). */
static bool
s_start_turn(self_t *self, s_session_t *s, const pl_env_t *chat)
{
    s->running = true;
    s->chunks = 0;
    s->answer_len = 0;
    s->started = pl_wall_s();
    snprintf(s->turn_msgid, sizeof s->turn_msgid, "%s", chat->msgid);
    pl_id_new('r', s->respid, sizeof s->respid);
    free(s->turn_model);
    s->turn_model = s_dup(pl_env_has(chat, PL_F_MODEL) ? chat->model : s->model);
    self->stats[PL_STAT_TURNS_STARTED]++;

    ssize_t last = s_hist_find(s, chat->msgid);
    size_t end = last >= 0 ? (size_t) last + 1 : s->nhist; /* history cleared meanwhile: all of it */
    size_t from = end, bytes = 0;
    while (from > 0 && (from == end || bytes + strlen(s->hist[from - 1].text) <= (size_t) self->cfg->max_context)) {
        bytes += strlen(s->hist[from - 1].text);
        from--;
    }

    pl_env_t ev;
    pl_env_init(&ev, PL_MSG_EV_STATUS);
    pl_env_set_i64(&ev, PL_F_COUNT, (int64_t) (end - from));
    s_broadcast(self, s, &ev);
    pl_env_init(&ev, PL_MSG_EV_RESPONSE_START);
    pl_env_set_str(&ev, PL_F_RESPID, s->respid);
    pl_env_set_str(&ev, PL_F_MODEL, s->turn_model);
    s_broadcast(self, s, &ev);

    pl_env_t gen;
    pl_env_init(&gen, PL_MSG_GENERATE);
    pl_env_set_str(&gen, PL_F_SESSION, s->id);
    pl_env_set_str(&gen, PL_F_RESPID, s->respid);
    pl_env_set_str(&gen, PL_F_MODEL, s->turn_model);
    const char *system = pl_env_has(chat, PL_F_SYSTEM) ? chat->system : s->system;
    if (system)
        pl_env_set_str(&gen, PL_F_SYSTEM, system);
    if (pl_env_has(chat, PL_F_TEMP))
        pl_env_set_f64(&gen, PL_F_TEMP, chat->temperature);
    if (pl_env_has(chat, PL_F_MAXTOK))
        pl_env_set_i64(&gen, PL_F_MAXTOK, chat->max_tokens);
    gen.present |= 1ull << PL_F_HIST; /* an empty history is still a history */
    for (size_t i = from; i < end; i++)
        pl_env_hist_add(&gen, &s->hist[i]);
    int rc = pl_outbox_send_session(self->actor->out, PL_KIND_MODEL, s->id, &gen);
    pl_env_reset(&gen);
    pl_log_info("generate", "session=%s response=%s model=%s context=%zu", s->id, s->respid, s->turn_model,
                end - from);
    return rc == 0;
}

/* Ends the running turn: stores the answer right after the message it
   answers, broadcasts response_complete. */
static void
s_finish_turn(self_t *self, s_session_t *s, int64_t finish, const pl_env_t *done, const char *error)
{
    if (s->answer_len > 0 || finish == PL_FINISH_STOP || finish == PL_FINISH_LENGTH) {
        ssize_t at = s_hist_find(s, s->turn_msgid);
        size_t pos = at >= 0 ? (size_t) at + 1 : s->nhist;
        if (s_hist_insert(self, s, pos, "assistant", s->answer ? s->answer : "", 0, NULL) == 0)
            self->stats[PL_STAT_MESSAGES_MODEL]++;
    }
    double took = pl_wall_s() - s->started;
    pl_env_t ev;
    pl_env_init(&ev, PL_MSG_EV_RESPONSE_DONE);
    pl_env_set_str(&ev, PL_F_RESPID, s->respid);
    pl_env_set_i64(&ev, PL_F_NUMBER, s->chunks);
    pl_env_set_f64(&ev, PL_F_DURATION, took);
    pl_env_set_i64(&ev, PL_F_COUNT, (int64_t) s->nhist);
    pl_env_set_i64(&ev, PL_F_FINISH, finish);
    pl_env_set_str(&ev, PL_F_MODEL, s->turn_model);
    int64_t ptok = done && pl_env_has(done, PL_F_PTOK) ? done->prompt_tokens : 0;
    int64_t ctok = done && pl_env_has(done, PL_F_CTOK) ? done->completion_tokens : s->chunks;
    pl_env_set_i64(&ev, PL_F_PTOK, ptok);
    pl_env_set_i64(&ev, PL_F_CTOK, ctok);
    const pl_model_t *m = pl_models_find(&self->cfg->models_table, s->turn_model);
    if (m && (m->price_in > 0 || m->price_out > 0))
        pl_env_set_f64(&ev, PL_F_COST, ((double) ptok * m->price_in + (double) ctok * m->price_out) / 1e6);
    if (done && pl_env_has(done, PL_F_TEXT))
        error = done->text;
    if (error)
        pl_env_set_str(&ev, PL_F_TEXT, error);
    pl_log_info("complete", "session=%s response=%s finish=%s chunks=%lld time_ms=%.0f", s->id, s->respid,
                pl_finish_name(finish), (long long) s->chunks, took * 1000);
    s_broadcast(self, s, &ev);
    self->stats[PL_STAT_TURNS_COMPLETED]++;
    s->running = false;
    s->respid[0] = '\0';
}

/* Starts queued turns, in order, while none is running. */
static void
s_run_next(self_t *self, s_session_t *s)
{
    while (!s->running && s->npending > 0) {
        s_turn_t t = s->pending[0];
        memmove(s->pending, s->pending + 1, (s->npending - 1) * sizeof *s->pending);
        s->npending--;
        if (!s_start_turn(self, s, &t.chat))
            s_finish_turn(self, s, PL_FINISH_ERROR, NULL, "the model is overloaded; try again");
        pl_env_reset(&t.chat);
    }
}

static void
s_handle_chat(self_t *self, s_session_t *s, pl_env_t *env)
{
    s_member_t *m = s_member(s, env->conn);
    if (!m) {
        s_error(self, env, PL_E_FORBIDDEN, "not a member of this session: join_session first");
        return;
    }
    if (!s_model_ok(self, pl_env_has(env, PL_F_MODEL) ? env->model : NULL)) {
        s_error(self, env, PL_E_NOT_FOUND, "unknown model");
        return;
    }
    if (s->running && s->npending >= (size_t) self->cfg->max_pending) {
        self->stats[PL_STAT_TURNS_REJECTED]++;
        s_error(self, env, PL_E_BUSY, "an answer is streaming and the queue is full; try again");
        return;
    }
    s_turn_t *p = realloc(s->pending, (s->npending + 1) * sizeof *p);
    if (p)
        s->pending = p;
    char msgid[24];
    if (!p || s_hist_insert(self, s, s->nhist, "user", env->text, env->conn, msgid) != 0) {
        s_error(self, env, PL_E_INTERNAL, "out of memory");
        return;
    }
    pl_env_set_str(env, PL_F_MSGID, msgid);
    if (pl_env_copy(&s->pending[s->npending].chat, env) != 0) {
        s_error(self, env, PL_E_INTERNAL, "out of memory");
        return;
    }
    s->npending++;
    self->stats[PL_STAT_MESSAGES_USER]++;
    if (s->running)
        self->stats[PL_STAT_TURNS_QUEUED]++;
    if (m->typing)
        s_typing(self, s, m, false);

    pl_env_t out;
    pl_env_init(&out, PL_MSG_DELIVERY);
    pl_env_set_u64(&out, PL_F_CONN, env->conn);
    pl_env_set_str(&out, PL_F_MSGID, msgid);
    pl_env_set_str(&out, PL_F_SESSION, s->id);
    if (pl_env_has(env, PL_F_CID))
        pl_env_set_str(&out, PL_F_CID, env->cid);
    s_to_edge(self, &out);
    pl_env_reset(&out);

    pl_env_init(&out, PL_MSG_EV_MESSAGE_ADDED);
    pl_env_set_i64(&out, PL_F_COUNT, (int64_t) s->nhist);
    pl_env_hist_add(&out, &s->hist[s_hist_find(s, msgid)]);
    s_broadcast(self, s, &out);
    s_run_next(self, s);
}

static void
s_handle_chunk(self_t *self, s_session_t *s, pl_env_t *env)
{
    if (!s->running || strcmp(env->respid, s->respid) != 0)
        return;
    size_t n = strlen(env->text);
    if (s->answer_len + n <= PL_ANSWER_MAX) {
        char *a = realloc(s->answer, s->answer_len + n + 1);
        if (a) {
            memcpy(a + s->answer_len, env->text, n + 1);
            s->answer = a;
            s->answer_len += n;
        }
    }
    s->chunks++;
    pl_env_t ev;
    pl_env_init(&ev, PL_MSG_EV_CHUNK);
    pl_env_set_str(&ev, PL_F_RESPID, s->respid);
    pl_env_set_str(&ev, PL_F_TEXT, env->text);
    pl_env_set_i64(&ev, PL_F_NUMBER, s->chunks);
    pl_env_set_bool(&ev, PL_F_FLAG, pl_env_has(env, PL_F_FLAG) && env->flag);
    s_broadcast(self, s, &ev);
}

static void
s_handle_done(self_t *self, s_session_t *s, pl_env_t *env)
{
    if (!s->running || strcmp(env->respid, s->respid) != 0)
        return;
    if (env->finish == PL_FINISH_ERROR) {
        /* every member learns why, with the upstream's status and when to retry */
        pl_env_t ev;
        pl_env_init(&ev, PL_MSG_EV_MODEL_ERROR);
        pl_env_set_str(&ev, PL_F_RESPID, s->respid);
        pl_env_set_str(&ev, PL_F_TEXT, pl_env_has(env, PL_F_TEXT) ? env->text : "the model failed");
        if (pl_env_has(env, PL_F_STATUS))
            pl_env_set_i64(&ev, PL_F_STATUS, env->status);
        if (pl_env_has(env, PL_F_RETRY))
            pl_env_set_i64(&ev, PL_F_RETRY, env->retry_after);
        s_broadcast(self, s, &ev);
    }
    s_finish_turn(self, s, env->finish, env, NULL);
    s_run_next(self, s);
}

/* Stops the running answer: the model stream is aborted (an upstream
   transfer's connection closed), members get response_complete with
   finish_reason "cancelled", and the partial text stays in the history. */
static void
s_cancel_turn(self_t *self, s_session_t *s)
{
    pl_env_t cancel;
    pl_env_init(&cancel, PL_MSG_GEN_CANCEL);
    pl_env_set_str(&cancel, PL_F_SESSION, s->id);
    pl_env_set_str(&cancel, PL_F_RESPID, s->respid);
    pl_outbox_send_session(self->actor->out, PL_KIND_MODEL, s->id, &cancel);
    pl_env_reset(&cancel);
    s_finish_turn(self, s, PL_FINISH_CANCELLED, NULL, NULL);
}

static void
s_handle_cancel(self_t *self, s_session_t *s, pl_env_t *env)
{
    if (!s_member(s, env->conn)) {
        s_error(self, env, PL_E_FORBIDDEN, "not a member of this session");
        return;
    }
    if (!s->running) {
        s_error(self, env, PL_E_NOT_FOUND, "no answer is streaming in this session");
        return;
    }
    pl_log_info("cancel", "session=%s response=%s conn=c%016llx", s->id, s->respid, (unsigned long long) env->conn);
    s_cancel_turn(self, s);
    s_run_next(self, s);
}

static void
s_handle_typing(self_t *self, s_session_t *s, pl_env_t *env)
{
    s_member_t *m = s_member(s, env->conn);
    if (!m)
        s_error(self, env, PL_E_FORBIDDEN, "not a member of this session");
    else if (m->typing != env->flag) /* repeats are not news: no amplification */
        s_typing(self, s, m, env->flag);
}

/* ---- HTTP ---- */

static void
s_info(const s_session_t *s, pl_sessinfo_t *info)
{
    *info = (pl_sessinfo_t){(char *) s->id, s->model, s->kind, s->name, (int64_t) s->nhist,
                            (int64_t) s->nmembers, s->created};
}

static void
s_reply(self_t *self, pl_env_t *reply, const pl_env_t *req, int status)
{
    reply->type = PL_MSG_HTTP_REPLY;
    pl_env_set_u64(reply, PL_F_REQ, req->req);
    pl_env_set_i64(reply, PL_F_CODE, status);
    s_to_edge(self, reply);
    pl_env_reset(reply);
}

static void
s_delete(self_t *self, s_session_t *s)
{
    if (s->running)
        s_cancel_turn(self, s);
    pl_env_t ev;
    pl_env_init(&ev, PL_MSG_EV_DELETED);
    s_broadcast(self, s, &ev);
    for (size_t i = 0; i < s->nmembers; i++)
        s_member_gone(self, s->members[i].conn, s->id);
    self->stats[PL_STAT_SESSIONS_MEMBERS] -= (int64_t) s->nmembers;
    self->stats[PL_STAT_SESSIONS_ACTIVE]--;
    s_session_free(pl_map_take(self->sessions, s->id));
}

static void
s_handle_http(self_t *self, pl_env_t *env)
{
    pl_env_t reply;
    pl_env_init(&reply, PL_MSG_HTTP_REPLY);
    pl_sessinfo_t info;
    if (env->type == PL_MSG_HTTP_LIST) {
        reply.present |= 1ull << PL_F_SESSV;
        pl_map_iter_t it = {0};
        void *v;
        while (pl_map_next(self->sessions, &it, &v)) {
            s_info(v, &info);
            pl_env_sessv_add(&reply, &info);
        }
        s_reply(self, &reply, env, 200);
        return;
    }
    if (env->type == PL_MSG_HTTP_CREATE) {
        int code = 0;
        const char *why = NULL;
        s_session_t *s = s_create(self, env, &code, &why);
        if (!s) {
            pl_env_set_str(&reply, PL_F_TEXT, why);
            s_reply(self, &reply, env, code == PL_E_NOT_FOUND ? 400 : 503);
            return;
        }
        s_info(s, &info);
        pl_env_sessv_add(&reply, &info);
        s_reply(self, &reply, env, 201);
        return;
    }
    s_session_t *s = pl_map_get(self->sessions, env->session);
    if (!s) {
        pl_env_set_str(&reply, PL_F_TEXT, "session not found");
        s_reply(self, &reply, env, 404);
        return;
    }
    if (env->type == PL_MSG_HTTP_GET) {
        s_info(s, &info);
        pl_env_sessv_add(&reply, &info);
        reply.present |= 1ull << PL_F_HIST;
        size_t from = s->nhist, bytes = 0;
        while (from > 0 && bytes + strlen(s->hist[from - 1].text) <= PL_HTTP_HISTORY_MAX)
            bytes += strlen(s->hist[--from].text);
        pl_env_set_bool(&reply, PL_F_FLAG, from > 0); /* truncated */
        for (size_t i = from; i < s->nhist; i++)
            pl_env_hist_add(&reply, &s->hist[i]);
    } else if (env->type == PL_MSG_HTTP_CLEAR) {
        for (size_t i = 0; i < s->nhist; i++)
            s_hist_free(&s->hist[i]);
        s->nhist = 0;
        pl_env_t ev;
        pl_env_init(&ev, PL_MSG_EV_CLEARED);
        s_broadcast(self, s, &ev);
        s_info(s, &info);
        pl_env_sessv_add(&reply, &info);
    } else { /* HTTP_DELETE */
        pl_env_set_str(&reply, PL_F_SESSION, s->id);
        s_delete(self, s);
    }
    s_reply(self, &reply, env, 200);
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
        s_handle_http(self, env);
        return;
    case PL_MSG_STATS_REQ: {
        pl_env_t reply;
        pl_env_init(&reply, PL_MSG_STATS_REPLY);
        pl_env_set_u64(&reply, PL_F_REQ, env->req);
        pl_env_set_i64v(&reply, PL_F_STATS, self->stats, PL_STAT_COUNT_);
        s_to_edge(self, &reply);
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
            s_error(self, env, PL_E_NOT_FOUND, "no such session");
            s_member_gone(self, env->conn, env->session);
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
        s_handle_chat(self, s, env);
        break;
    case PL_MSG_TYPING:
        s_handle_typing(self, s, env);
        break;
    case PL_MSG_CANCEL:
        s_handle_cancel(self, s, env);
        break;
    case PL_MSG_MODEL_CHUNK:
        s_handle_chunk(self, s, env);
        break;
    case PL_MSG_MODEL_DONE:
        s_handle_done(self, s, env);
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
