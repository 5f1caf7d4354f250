/*  session_turn — the session actor's turns: a chat joins the history and
    is queued; a turn sends the history up to its question to the model
    shard, relays the chunks, stores the answer right after its question,
    and starts the next queued turn. Cancel stops the running one. */
#include <stdlib.h>
#include <string.h>

#include "../protocol/pl_err.h"
#include "../protocol/pl_limits.h"
#include "../protocol/pl_util.h"
#include "../transport/pl_log.h"
#include "session_int.h"

size_t
session_hist_window(const s_session_t *s, size_t end, size_t budget, bool at_least_one)
{
    size_t from = end, bytes = 0;
    while (from > 0) {
        size_t n = strlen(s->hist[from - 1].text);
        if (bytes + n > budget && !(at_least_one && from == end))
            break;
        bytes += n;
        from--;
    }
    return from;
}

void
session_hist_newest(const s_session_t *s, pl_env_t *env)
{
    env->present |= 1ull << PL_F_HIST; /* an empty history is still a history */
    size_t from = session_hist_window(s, s->nhist, PL_HTTP_HISTORY_MAX, false);
    pl_env_set_bool(env, PL_F_FLAG, from > 0 || (int64_t) s->nhist < s->nmessages);
    for (size_t i = from; i < s->nhist; i++)
        pl_env_hist_add(env, &s->hist[i]);
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

/* Inserts a message at `pos` (nhist: at the end), dropping the oldest from
   memory past the cap (the store keeps them), and sends it to the store. A
   user message carries its sender's `req` (CONN, CID): the store confirms
   it "stored" to the sender once its batch has committed. Writes the new
   message's id to `id_out` (24 bytes) if given. */
static int
s_hist_insert(self_t *self, s_session_t *s, size_t pos, const char *role, const char *text, int64_t ord,
              int64_t finish, const pl_env_t *req, char *id_out)
{
    if (s->nhist >= (size_t) self->cfg->max_history) {
        session_hist_free(&s->hist[0]);
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
    if (req)
        pl_conn_name(req->conn, cname, sizeof cname);
    pl_histent_t e = {strdup(id), strdup(role), strdup(text), strdup(cname), pl_wall_s(), ord, finish};
    if (!e.id || !e.role || !e.text || !e.conn) {
        session_hist_free(&e);
        return -PL_E_NOMEM;
    }
    pl_env_t st;
    pl_env_init(&st, PL_MSG_ST_MESSAGE);
    pl_env_set_str(&st, PL_F_SESSION, s->id);
    pl_env_hist_add(&st, &e);
    if (req) {
        pl_env_set_u64(&st, PL_F_CONN, req->conn);
        if (pl_env_has(req, PL_F_CID))
            pl_env_set_str(&st, PL_F_CID, req->cid);
    }
    int rc = session_to_store(self, &st);
    pl_env_reset(&st);
    if (rc != 0 && req) { /* nobody may be told it is stored: refuse it */
        session_hist_free(&e);
        return -PL_E_BUSY;
    }
    memmove(s->hist + pos + 1, s->hist + pos, (s->nhist - pos) * sizeof *s->hist);
    s->hist[pos] = e;
    s->nhist++;
    s->nmessages++;
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
    s->turn_ord = chat->ord;
    pl_id_new('r', s->respid, sizeof s->respid);
    free(s->turn_model);
    s->turn_model = session_dup(pl_env_has(chat, PL_F_MODEL) ? chat->model : s->model);
    self->stats[PL_STAT_TURNS_STARTED]++;

    ssize_t last = s_hist_find(s, chat->msgid);
    size_t end = last >= 0 ? (size_t) last + 1 : s->nhist; /* history cleared meanwhile: all of it */
    size_t from = session_hist_window(s, end, (size_t) self->cfg->max_context, true);

    pl_env_t ev;
    pl_env_init(&ev, PL_MSG_EV_STATUS);
    pl_env_set_i64(&ev, PL_F_COUNT, (int64_t) (end - from));
    session_broadcast(self, s, &ev);
    pl_env_init(&ev, PL_MSG_EV_RESPONSE_START);
    pl_env_set_str(&ev, PL_F_RESPID, s->respid);
    pl_env_set_str(&ev, PL_F_MODEL, s->turn_model);
    pl_env_set_i64(&ev, PL_F_ORD, s->turn_ord + 1); /* the answer's: for crash recovery */
    session_broadcast(self, s, &ev);
    s->start_seq = s->chunk_seq = s->seq;

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

/* Ends the running turn: stores the answer (what there is of it) right
   after the message it answers, broadcasts response_complete. */
void
session_finish_turn(self_t *self, s_session_t *s, int64_t finish, const pl_env_t *done, const char *error)
{
    if (s->answer_len > 0 || finish == PL_FINISH_STOP || finish == PL_FINISH_LENGTH) {
        ssize_t at = s_hist_find(s, s->turn_msgid);
        size_t pos = at >= 0 ? (size_t) at + 1 : s->nhist;
        if (s_hist_insert(self, s, pos, "assistant", s->answer ? s->answer : "", s->turn_ord + 1, finish, NULL,
                          NULL) == 0)
            self->stats[PL_STAT_MESSAGES_MODEL]++;
    }
    double took = pl_wall_s() - s->started;
    pl_env_t ev;
    pl_env_init(&ev, PL_MSG_EV_RESPONSE_DONE);
    pl_env_set_str(&ev, PL_F_RESPID, s->respid);
    pl_env_set_i64(&ev, PL_F_NUMBER, s->chunks);
    pl_env_set_f64(&ev, PL_F_DURATION, took);
    pl_env_set_i64(&ev, PL_F_COUNT, s->nmessages);
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
    session_broadcast(self, s, &ev);
    self->stats[PL_STAT_TURNS_COMPLETED]++;
    s->running = false;
    s->respid[0] = '\0';
    if (self->draining)
        session_drained(self);
}

/* Starts queued turns, in order, while none is running (none while the
   server drains: they stay as unanswered questions in the history). */
static void
s_run_next(self_t *self, s_session_t *s)
{
    while (!s->running && s->npending > 0 && !self->draining) {
        s_turn_t t = s->pending[0];
        memmove(s->pending, s->pending + 1, (s->npending - 1) * sizeof *s->pending);
        s->npending--;
        if (!s_start_turn(self, s, &t.chat))
            session_finish_turn(self, s, PL_FINISH_ERROR, NULL, "the model is overloaded; try again");
        pl_env_reset(&t.chat);
    }
}

void
session_handle_chat(self_t *self, s_session_t *s, pl_env_t *env)
{
    s_member_t *m = session_member(s, env->conn);
    if (!m) {
        session_error(self, env, PL_E_FORBIDDEN, "not a member of this session: join_session first");
        return;
    }
    if (!session_model_ok(self, pl_env_has(env, PL_F_MODEL) ? env->model : NULL)) {
        session_error(self, env, PL_E_NOT_FOUND, "unknown model");
        return;
    }
    if (self->draining) {
        session_error(self, env, PL_E_BUSY, "the server is shutting down; send it again after it restarts");
        return;
    }
    if (s->running && s->npending >= (size_t) self->cfg->max_pending) {
        self->stats[PL_STAT_TURNS_REJECTED]++;
        session_error(self, env, PL_E_BUSY, "an answer is streaming and the queue is full; try again");
        return;
    }
    s_turn_t *p = realloc(s->pending, (s->npending + 1) * sizeof *p);
    if (p)
        s->pending = p;
    char msgid[24];
    int64_t ord = (s->seq + 1) * 2; /* its message_added comes next */
    int rc = p ? s_hist_insert(self, s, s->nhist, "user", env->text, ord, 0, env, msgid) : -PL_E_NOMEM;
    if (rc != 0) {
        session_error(self, env, rc == -PL_E_BUSY ? PL_E_BUSY : PL_E_INTERNAL,
                      rc == -PL_E_BUSY ? "the store is overloaded; try again" : "out of memory");
        return;
    }
    pl_env_set_str(env, PL_F_MSGID, msgid);
    pl_env_set_i64(env, PL_F_ORD, ord);
    if (pl_env_copy(&s->pending[s->npending].chat, env) != 0) {
        session_error(self, env, PL_E_INTERNAL, "out of memory");
        return;
    }
    s->npending++;
    self->stats[PL_STAT_MESSAGES_USER]++;
    if (s->running)
        self->stats[PL_STAT_TURNS_QUEUED]++;
    if (m->typing)
        session_typing(self, s, m, false);

    /* the delivery_confirmation comes from the store, after the commit */
    pl_env_t out;
    pl_env_init(&out, PL_MSG_EV_MESSAGE_ADDED);
    pl_env_set_i64(&out, PL_F_COUNT, s->nmessages);
    pl_env_hist_add(&out, &s->hist[s_hist_find(s, msgid)]);
    session_broadcast(self, s, &out);
    s_run_next(self, s);
}

void
session_handle_chunk(self_t *self, s_session_t *s, pl_env_t *env)
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
    session_broadcast(self, s, &ev);
    s->chunk_seq = s->seq;
}

void
session_handle_done(self_t *self, s_session_t *s, pl_env_t *env)
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
        session_broadcast(self, s, &ev);
    }
    session_finish_turn(self, s, env->finish, env, NULL);
    s_run_next(self, s);
}

/* Stops the running answer: the model stream is aborted (an upstream
   transfer's connection closed), members get response_complete with
   finish_reason `finish` ("cancelled", or "interrupted" at shutdown), and
   the partial text stays in the history. */
void
session_cancel_turn(self_t *self, s_session_t *s, int64_t finish)
{
    pl_env_t cancel;
    pl_env_init(&cancel, PL_MSG_GEN_CANCEL);
    pl_env_set_str(&cancel, PL_F_SESSION, s->id);
    pl_env_set_str(&cancel, PL_F_RESPID, s->respid);
    pl_outbox_send_session(self->actor->out, PL_KIND_MODEL, s->id, &cancel);
    pl_env_reset(&cancel);
    session_finish_turn(self, s, finish, NULL, NULL);
}

void
session_handle_cancel(self_t *self, s_session_t *s, pl_env_t *env)
{
    if (!session_member(s, env->conn)) {
        session_error(self, env, PL_E_FORBIDDEN, "not a member of this session");
        return;
    }
    if (!s->running) {
        session_error(self, env, PL_E_NOT_FOUND, "no answer is streaming in this session");
        return;
    }
    pl_log_info("cancel", "session=%s response=%s conn=c%016llx", s->id, s->respid, (unsigned long long) env->conn);
    session_cancel_turn(self, s, PL_FINISH_CANCELLED);
    s_run_next(self, s);
}
