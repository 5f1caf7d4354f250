/*  store — the store actor: owns the SQLite database (store_db.c).

    One shard, on a thread of its own (pl_runtime_register_own): a commit
    waits for fsync, and no session or connection shard may wait with it.

    Group commit. The first write after a commit opens a transaction and
    arms a timer --commit-ms away; every write until then joins it, and the
    timer (or a batch of PL_STORE_BATCH_MAX writes) commits it. What must
    not be said before the data is durable waits for that commit: a chat's
    delivery_confirmation "stored" is queued here and sent to the edge only
    after its batch committed (or replaced by an error if the commit failed).

    Reads (loading a session, replaying events, listing) run inside the open
    batch when there is one, so they see every write sent before them: one
    sender's envelopes reach this mailbox in order. */
#include <stdlib.h>
#include <string.h>

#include "../protocol/pl_err.h"
#include "../protocol/pl_limits.h"
#include "../protocol/pl_util.h"
#include "../transport/pl_log.h"
#include "pl_actors.h"
#include "pl_config.h"
#include "store_db.h"

typedef struct {
    const pl_actor_t *actor;
    const pl_config_t *cfg;
    pl_store_db_t *db;
    int64_t commit_at; /* pl_now_ms deadline of the open batch; 0: none */
    size_t batch;      /* writes in the open batch */
    pl_env_t *acks;    /* DELIVERY envelopes waiting for the commit */
    size_t nacks, capacks;
    int64_t stats[PL_STAT_COUNT_];
} self_t;

static void s_commit(self_t *self);
static bool s_begin(self_t *self);
static void s_put_event(self_t *self, const pl_env_t *ev);

/* ---- recovery after an unclean stop ---- */

typedef struct {
    char (*id)[PL_ID_MAX + 1];
    int64_t *start;
    size_t n, cap;
} s_opens_t;

static int
s_open_one(const char *session, int64_t start, void *arg)
{
    s_opens_t *o = arg;
    if (o->n == o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 16;
        void *id = realloc(o->id, cap * sizeof *o->id), *st = id ? realloc(o->start, cap * sizeof *o->start) : NULL;
        if (id)
            o->id = id;
        if (!id || !st)
            return 1;
        o->start = st;
        o->cap = cap;
    }
    snprintf(o->id[o->n], sizeof o->id[o->n], "%s", session);
    o->start[o->n++] = start;
    return 0;
}

/* What was stored of an answer cut short: its response_start and text. */
typedef struct {
    pl_env_t start;
    bool have_start;
    char *text;
    size_t len;
    int64_t chunks;
} s_partial_t;

static void
s_partial_add(s_partial_t *p, const char *buf, size_t len, int depth)
{
    pl_env_t ev;
    if (pl_env_decode(buf, len, &ev) != 0)
        return;
    if (ev.type == PL_MSG_ST_CHUNKS && depth == 0) {
        for (size_t i = 0; i < ev.events.n; i++)
            s_partial_add(p, ev.events.v[i].p, ev.events.v[i].n, 1);
    } else if (ev.type == PL_MSG_EV_RESPONSE_START && !p->have_start) {
        p->start = ev; /* taken */
        p->have_start = true;
        return;
    } else if (ev.type == PL_MSG_EV_CHUNK && p->have_start && strcmp(ev.respid, p->start.respid) == 0) {
        size_t n = strlen(ev.text);
        char *t = p->len + n <= PL_ANSWER_MAX ? realloc(p->text, p->len + n + 1) : NULL;
        if (t) {
            memcpy(t + p->len, ev.text, n + 1);
            p->text = t;
            p->len += n;
        }
        p->chunks++;
    }
    pl_env_reset(&ev);
}

static int
s_partial_one(int64_t seq, int type, const void *body, size_t len, void *arg)
{
    (void) seq, (void) type;
    s_partial_add(arg, body, len, 0);
    return 0;
}

/* Closes an answer the crash cut short, as a running server would have at
   shutdown: its text so far stored as an "interrupted" answer, and a
   response_complete event, so a client resuming from inside the answer
   sees it end. The event's seq is past the crash skip (new numbers). */
static void
s_close_turn(self_t *self, const char *session, int64_t start_seq)
{
    s_partial_t p = {0};
    pl_store_session_t s;
    pl_store_msg_t *msgs = NULL;
    size_t n = 0;
    if (pl_store_db_events(self->db, session, start_seq - 1, SIZE_MAX, s_partial_one, &p) < 0 || !p.have_start ||
        pl_store_db_load(self->db, session, 1, &s, &msgs, &n) != 0) {
        pl_store_db_set_open_turn(self->db, session, 0);
        pl_env_reset(&p.start);
        free(p.text);
        return;
    }
    pl_store_msgs_free(msgs, n);
    int64_t count = s.messages;
    if (p.len > 0 && pl_env_has(&p.start, PL_F_ORD)) {
        char id[24];
        pl_id_new('m', id, sizeof id);
        pl_store_msg_t m = {{id, "assistant", p.text, "", pl_wall_s(), p.start.ord, PL_FINISH_INTERRUPTED},
                            p.start.ord, PL_FINISH_INTERRUPTED};
        if (pl_store_db_put_message(self->db, session, &m) == 0)
            count++;
    }
    pl_env_t done;
    pl_env_init(&done, PL_MSG_EV_RESPONSE_DONE);
    pl_env_set_str(&done, PL_F_SESSION, session);
    pl_env_set_i64(&done, PL_F_SEQ, s.seq + 1);
    pl_env_set_str(&done, PL_F_RESPID, p.start.respid);
    pl_env_set_i64(&done, PL_F_NUMBER, p.chunks);
    pl_env_set_f64(&done, PL_F_DURATION, 0);
    pl_env_set_i64(&done, PL_F_COUNT, count);
    pl_env_set_i64(&done, PL_F_FINISH, PL_FINISH_INTERRUPTED);
    pl_env_set_str(&done, PL_F_MODEL, pl_env_has(&p.start, PL_F_MODEL) ? p.start.model : s.model);
    pl_env_set_i64(&done, PL_F_PTOK, 0);
    pl_env_set_i64(&done, PL_F_CTOK, p.chunks);
    s_put_event(self, &done); /* also clears open_turn */
    pl_env_reset(&done);
    pl_store_session_free(&s);
    pl_env_reset(&p.start);
    free(p.text);
}

/* After SIGKILL or a crash: seq numbers the dead process broadcast but
   never stored must not be handed out again, so every session's seq jumps
   past them; then answers that were streaming are closed as interrupted.
   One transaction, before anything is served. */
static void
s_recover(self_t *self)
{
    s_opens_t open = {0};
    if (pl_store_db_open_turns(self->db, s_open_one, &open) < 0)
        self->stats[PL_STAT_STORE_ERRORS]++;
    if (!s_begin(self))
        return;
    long bumped = pl_store_db_recover(self->db, PL_SEQ_CRASH_SKIP);
    for (size_t i = 0; i < open.n; i++)
        s_close_turn(self, open.id[i], open.start[i]);
    s_commit(self);
    pl_log_warn("store", "path=%s recovered=unclean-stop sessions=%ld seq_skip=%lld answers_interrupted=%zu",
                self->cfg->db, bumped, (long long) PL_SEQ_CRASH_SKIP, open.n);
    free(open.id);
    free(open.start);
}

static void *
s_new(const pl_actor_t *actor)
{
    self_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->actor = actor;
    self->cfg = actor->arg;
    char err[256] = "";
    bool clean = true;
    self->db = pl_store_db_open(self->cfg->db, strcmp(self->cfg->db_sync, "normal") != 0, &clean, err, sizeof err);
    if (!self->db) {
        pl_log_error("store", "path=%s error=%s", self->cfg->db, err);
        free(self);
        return NULL;
    }
    long n = pl_store_db_count(self->db);
    self->stats[PL_STAT_STORE_SESSIONS] = n > 0 ? n : 0;
    if (!clean)
        s_recover(self);
    pl_log_info("store", "path=%s sessions=%ld sync=%s commit_ms=%ld", self->cfg->db, n, self->cfg->db_sync,
                self->cfg->commit_ms);
    return self;
}

/* ---- group commit ---- */

static void
s_send_edge(self_t *self, const pl_env_t *env)
{
    pl_outbox_send(self->actor->out, PL_KIND_EDGE, 0, env);
}

/* Tells the sender of `msg` (CONN, CID) that its message is not stored. */
static void
s_not_stored(self_t *self, const pl_env_t *msg)
{
    pl_actor_error(self->actor, msg->conn, pl_env_has(msg, PL_F_CID) ? msg->cid : NULL, PL_E_INTERNAL,
                   "the message could not be stored; send it again");
}

/* Commits the open batch, then releases what waited for it. */
static void
s_commit(self_t *self)
{
    if (!pl_store_db_in_batch(self->db))
        return;
    int64_t t0 = pl_now_us();
    int rc = pl_store_db_commit(self->db);
    int64_t took = pl_now_us() - t0;
    self->stats[PL_STAT_STORE_COMMITS]++;
    self->stats[PL_STAT_STORE_COMMIT_US_TOTAL] += took;
    if (took > self->stats[PL_STAT_STORE_COMMIT_US_MAX])
        self->stats[PL_STAT_STORE_COMMIT_US_MAX] = took;
    if ((int64_t) self->batch > self->stats[PL_STAT_STORE_BATCH_MAX])
        self->stats[PL_STAT_STORE_BATCH_MAX] = (int64_t) self->batch;
    if (rc != 0) {
        self->stats[PL_STAT_STORE_ERRORS]++;
        pl_log_error("store", "commit=failed writes=%zu acks_refused=%zu", self->batch, self->nacks);
    }
    for (size_t i = 0; i < self->nacks; i++) {
        pl_env_t *a = &self->acks[i];
        if (rc == 0) {
            s_send_edge(self, a);
            self->stats[PL_STAT_STORE_ACKS]++;
        } else {
            s_not_stored(self, a);
        }
        pl_env_reset(a);
    }
    self->nacks = 0;
    self->batch = 0;
    self->commit_at = 0;
}

/* Opens a batch if none is open; false when the database refuses. */
static bool
s_begin(self_t *self)
{
    if (pl_store_db_in_batch(self->db))
        return true;
    if (pl_store_db_begin(self->db) != 0) {
        self->stats[PL_STAT_STORE_ERRORS]++;
        return false;
    }
    self->commit_at = pl_now_ms() + self->cfg->commit_ms;
    return true;
}

/* Counts one write; a full batch commits at once. */
static void
s_wrote(self_t *self, int rc)
{
    if (rc != 0) {
        self->stats[PL_STAT_STORE_ERRORS]++;
        return;
    }
    self->stats[PL_STAT_STORE_ROWS]++;
    if (++self->batch >= PL_STORE_BATCH_MAX)
        s_commit(self);
}

/* Queues `env` (a DELIVERY) to be sent after the batch commits. */
static void
s_ack_after_commit(self_t *self, const pl_env_t *msg)
{
    if (self->nacks == self->capacks) {
        size_t cap = self->capacks ? self->capacks * 2 : 64;
        pl_env_t *v = realloc(self->acks, cap * sizeof *v);
        if (!v) {
            pl_actor_error(self->actor, msg->conn, pl_env_has(msg, PL_F_CID) ? msg->cid : NULL, PL_E_INTERNAL,
                           "out of memory");
            return;
        }
        self->acks = v;
        self->capacks = cap;
    }
    pl_env_t *a = &self->acks[self->nacks++];
    pl_env_init(a, PL_MSG_DELIVERY);
    pl_env_set_u64(a, PL_F_CONN, msg->conn);
    pl_env_set_str(a, PL_F_MSGID, msg->hist.v[0].id);
    pl_env_set_str(a, PL_F_SESSION, msg->session);
    if (pl_env_has(msg, PL_F_CID))
        pl_env_set_str(a, PL_F_CID, msg->cid);
}

/* ---- writes ---- */

static void
s_put_event(self_t *self, const pl_env_t *ev)
{
    char *body = NULL;
    size_t len = 0;
    if (pl_env_encode(ev, &body, &len) != 0) {
        self->stats[PL_STAT_STORE_ERRORS]++;
        return;
    }
    const char *respid = pl_env_has(ev, PL_F_RESPID) ? ev->respid : NULL;
    s_wrote(self, pl_store_db_put_event(self->db, ev->session, ev->seq, (int) ev->type, respid, body, len));
    free(body);
    if (ev->type == PL_MSG_EV_RESPONSE_START || ev->type == PL_MSG_EV_RESPONSE_DONE)
        s_wrote(self, pl_store_db_set_open_turn(self->db, ev->session,
                                                ev->type == PL_MSG_EV_RESPONSE_START ? ev->seq : 0));
    /* retention: each time seq passes a multiple of 1024, forget the events
       older than --replay-events (a chunk row spans several seqs) */
    int64_t keep = self->cfg->replay_events;
    int64_t first = ev->type == PL_MSG_ST_CHUNKS ? ev->seq - (int64_t) ev->events.n + 1 : ev->seq;
    if (ev->seq / 1024 != (first - 1) / 1024 && ev->seq > keep)
        s_wrote(self, pl_store_db_prune_events(self->db, ev->session, ev->seq - keep));
}

static void
s_put_session(self_t *self, const pl_env_t *env)
{
    pl_store_session_t s = {env->session, env->model, env->kind, pl_env_has(env, PL_F_NAME) ? env->name : "",
                            pl_env_has(env, PL_F_SYSTEM) ? env->system : NULL, env->ts, 0, 0};
    int rc = pl_store_db_put_session(self->db, &s);
    if (rc == 0 && pl_env_has(env, PL_F_FLAG) && env->flag) /* new */
        self->stats[PL_STAT_STORE_SESSIONS]++;
    s_wrote(self, rc);
}

static void
s_put_message(self_t *self, const pl_env_t *env)
{
    if (env->hist.n != 1)
        return;
    const pl_histent_t *e = &env->hist.v[0];
    pl_store_msg_t m = {*e, e->ord, strcmp(e->role, "user") == 0 ? -1 : e->finish};
    int rc = pl_store_db_put_message(self->db, env->session, &m);
    s_wrote(self, rc);
    if (rc == 0 && pl_env_has(env, PL_F_CONN))
        s_ack_after_commit(self, env);
    else if (rc != 0 && pl_env_has(env, PL_F_CONN))
        s_not_stored(self, env);
}

/* ---- reads ---- */

static void
s_load(self_t *self, const pl_env_t *req)
{
    pl_store_session_t s;
    pl_store_msg_t *msgs = NULL;
    size_t n = 0;
    pl_env_t out;
    pl_env_init(&out, PL_MSG_ST_LOADED);
    pl_env_set_str(&out, PL_F_SESSION, req->session);
    int rc = pl_store_db_load(self->db, req->session, (size_t) self->cfg->max_history, &s, &msgs, &n);
    if (rc == 0) {
        pl_env_set_i64(&out, PL_F_CODE, 200);
        pl_env_set_str(&out, PL_F_MODEL, s.model);
        pl_env_set_str(&out, PL_F_KIND, s.kind);
        pl_env_set_str(&out, PL_F_NAME, s.name);
        if (s.system)
            pl_env_set_str(&out, PL_F_SYSTEM, s.system);
        pl_env_set_f64(&out, PL_F_TS, s.created);
        pl_env_set_i64(&out, PL_F_SEQ, s.seq);
        pl_env_set_i64(&out, PL_F_COUNT, s.messages);
        out.present |= 1ull << PL_F_HIST;
        for (size_t i = 0; i < n; i++) {
            pl_histent_t e = msgs[i].e;
            e.ord = msgs[i].ord;
            e.finish = msgs[i].finish < 0 ? 0 : msgs[i].finish;
            pl_env_hist_add(&out, &e);
        }
        pl_store_session_free(&s);
        pl_store_msgs_free(msgs, n);
    } else {
        pl_env_set_i64(&out, PL_F_CODE, rc == -PL_E_NOT_FOUND ? 404 : 500);
        if (rc != -PL_E_NOT_FOUND)
            self->stats[PL_STAT_STORE_ERRORS]++;
    }
    pl_outbox_send_session(self->actor->out, PL_KIND_SESSION, req->session, &out);
    pl_env_reset(&out);
}

typedef struct {
    pl_env_t *out;
    int64_t last;
} s_replay_t;

static int
s_replay_one(int64_t seq, int type, const void *body, size_t len, void *arg)
{
    (void) type;
    s_replay_t *r = arg;
    if (pl_env_binv_add(r->out, PL_F_EVENTS, body, len) != 0)
        return 1;
    r->last = seq;
    return 0;
}

/* The first stored row after a seq: its key (newest seq) and the first seq
   it holds (a chunk row holds several). */
typedef struct {
    bool found;
    int64_t first;
} s_probe_t;

static int
s_probe_one(int64_t seq, int type, const void *body, size_t len, void *arg)
{
    s_probe_t *p = arg;
    p->found = true;
    p->first = seq;
    pl_env_t row;
    if (type == PL_MSG_ST_CHUNKS && pl_env_decode(body, len, &row) == 0) {
        if (row.events.n > 0)
            p->first = seq - (int64_t) row.events.n + 1;
        pl_env_reset(&row);
    }
    return 1; /* one row is enough */
}

/* False when `after` is a seq this database never stored: the process that
   broadcast it died before the commit (after a crash, seq jumped past it).
   A client holding it saw events that are gone, so replaying what follows
   would leave them in its view: it must get the history (a gap). A stored
   seq has a row covering it, or (the seq a restart jumped to, which no event
   carries) one starting right after it. */
static bool
s_seq_stored(self_t *self, const char *session, int64_t after)
{
    if (after <= 0)
        return true;
    s_probe_t p = {false, 0};
    if (pl_store_db_events(self->db, session, after - 1, 1, s_probe_one, &p) < 0)
        return false;
    return p.found && p.first <= after + 1;
}

/* Events of a session after LASTSEQ, at most PL_REPLAY_BATCH_BYTES of them
   per answer; GAP when some were already pruned, or LASTSEQ was never
   stored (s_seq_stored). */
static void
s_replay(self_t *self, const pl_env_t *req)
{
    pl_env_t out;
    pl_env_init(&out, PL_MSG_ST_EVENTS);
    pl_env_set_str(&out, PL_F_SESSION, req->session);
    pl_env_set_u64(&out, PL_F_CONN, req->conn);
    pl_env_set_i64(&out, PL_F_LASTSEQ, req->last_seq);
    if (pl_env_has(req, PL_F_CID))
        pl_env_set_str(&out, PL_F_CID, req->cid);
    out.present |= 1ull << PL_F_EVENTS;
    s_replay_t r = {&out, req->last_seq};
    if (pl_store_db_events_gap(self->db, req->session, req->last_seq) ||
        !s_seq_stored(self, req->session, req->last_seq)) {
        pl_env_set_bool(&out, PL_F_GAP, true);
    } else if (pl_store_db_events(self->db, req->session, req->last_seq, PL_REPLAY_BATCH_BYTES, s_replay_one, &r) <
               0) {
        self->stats[PL_STAT_STORE_ERRORS]++;
        pl_env_set_bool(&out, PL_F_GAP, true);
    }
    pl_env_set_i64(&out, PL_F_SEQ, r.last);
    pl_outbox_send_session(self->actor->out, PL_KIND_SESSION, req->session, &out);
    pl_env_reset(&out);
}

static int
s_list_one(const pl_store_session_t *s, void *arg)
{
    pl_sessinfo_t info = {s->id, s->model, s->kind, s->name, s->messages, 0, s->created};
    return pl_env_sessv_add(arg, &info) == 0 ? 0 : 1;
}

static void
s_reply(self_t *self, const pl_env_t *req, pl_env_t *reply)
{
    pl_env_set_u64(reply, PL_F_REQ, req->req);
    s_send_edge(self, reply);
    pl_env_reset(reply);
}

static void
s_handle(void *self_, pl_env_t *env)
{
    self_t *self = self_;
    bool write = env->type != PL_MSG_ST_LOAD && env->type != PL_MSG_ST_REPLAY && env->type != PL_MSG_HTTP_LIST &&
                 env->type != PL_MSG_STATS_REQ;
    if (write && !s_begin(self)) {
        if (env->type == PL_MSG_ST_MESSAGE && pl_env_has(env, PL_F_CONN))
            s_not_stored(self, env);
        return;
    }
    pl_env_t reply;
    switch (env->type) {
    case PL_MSG_ST_SESSION:
        s_put_session(self, env);
        break;
    case PL_MSG_ST_MESSAGE:
        s_put_message(self, env);
        break;
    case PL_MSG_ST_MEMBER: {
        char name[24];
        pl_conn_name(env->conn, name, sizeof name);
        s_wrote(self, pl_store_db_put_member(self->db, env->session, name, env->ts));
        break;
    }
    case PL_MSG_ST_RECEIPT: {
        char name[24];
        pl_conn_name(env->conn, name, sizeof name);
        s_wrote(self, pl_store_db_put_receipt(self->db, env->session, env->msgid, name, env->ts));
        break;
    }
    case PL_MSG_ST_CLEAR:
        s_wrote(self, pl_store_db_clear(self->db, env->session));
        break;
    case PL_MSG_ST_DELETE: {
        int rc = pl_store_db_delete(self->db, env->session);
        if (rc == 0 && self->stats[PL_STAT_STORE_SESSIONS] > 0)
            self->stats[PL_STAT_STORE_SESSIONS]--;
        s_wrote(self, rc);
        break;
    }
    case PL_MSG_ST_LOAD:
        s_load(self, env);
        break;
    case PL_MSG_ST_REPLAY:
        s_replay(self, env);
        break;
    case PL_MSG_HTTP_LIST:
        pl_env_init(&reply, PL_MSG_HTTP_REPLY);
        reply.present |= 1ull << PL_F_SESSV;
        pl_env_set_i64(&reply, PL_F_CODE, 200);
        pl_env_set_bool(&reply, PL_F_FLAG, true); /* stored, not live */
        if (pl_store_db_list(self->db, PL_LIST_MAX, s_list_one, &reply) < 0)
            self->stats[PL_STAT_STORE_ERRORS]++;
        s_reply(self, env, &reply);
        break;
    case PL_MSG_STATS_REQ:
        pl_env_init(&reply, PL_MSG_STATS_REPLY);
        pl_env_set_i64v(&reply, PL_F_STATS, self->stats, PL_STAT_COUNT_);
        s_reply(self, env, &reply);
        break;
    default:
        if (((env->type >= PL_MSG_EV_MESSAGE_ADDED && env->type <= PL_MSG_EV_DELETED) ||
             env->type == PL_MSG_ST_CHUNKS) &&
            pl_env_has(env, PL_F_SEQ))
            s_put_event(self, env);
        break;
    }
}

static int64_t
s_next_timer(void *self_)
{
    self_t *self = self_;
    return self->commit_at > 0 ? self->commit_at : -1;
}

static void
s_on_timer(void *self_, int64_t now)
{
    self_t *self = self_;
    if (self->commit_at > 0 && now >= self->commit_at)
        s_commit(self);
}

static void
s_destroy(void **self_p)
{
    self_t *self = *self_p;
    if (!self)
        return;
    s_commit(self);
    pl_store_db_close(&self->db, true);
    pl_log_info("store", "closed=clean commits=%lld rows=%lld", (long long) self->stats[PL_STAT_STORE_COMMITS],
                (long long) self->stats[PL_STAT_STORE_ROWS]);
    free(self->acks);
    free(self);
    *self_p = NULL;
}

const pl_actor_ops_t pl_store_actor = {
    .name = "store",
    .create = s_new,
    .destroy = s_destroy,
    .handle = s_handle,
    .next_timer = s_next_timer,
    .on_timer = s_on_timer,
};
