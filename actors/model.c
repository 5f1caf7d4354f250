/*  model — the model actor: runs the answers of its sessions' turns.

    Owns the streams of the turns routed to this shard (by session id). On
    GENERATE it starts a backend stream; when a stream's deadline passes it
    steps it and sends MODEL_CHUNK / MODEL_DONE to the session actor. A
    GEN_CANCEL drops the stream (the session has already closed the turn;
    an upstream transfer is aborted, closing its connection).
    A model of the models table with a network backend streams through
    pl_upstream (libcurl multi, its sockets polled by this shard's worker);
    any other model name is answered by the built-in echo backend. Echo
    streams are stepped by a linear scan of their deadlines. */
#include <stdlib.h>
#include <string.h>

#include "../protocol/pl_err.h"
#include "../protocol/pl_limits.h"
#include "../protocol/pl_util.h"
#include "../transport/pl_log.h"
#include "backends/pl_backend.h"
#include "backends/pl_upstream.h"
#include "pl_actors.h"
#include "pl_config.h"

typedef struct {
    char session[PL_ID_MAX + 1];
    char respid[24];
    const pl_backend_ops_t *backend; /* NULL: an upstream transfer */
    void *st;
    uint64_t tag; /* the upstream transfer's tag */
    size_t model;  /* index in the models table, for the per-model counters */
    int64_t started_ms;
    bool got_chunk;
} s_stream_t;

typedef struct {
    const pl_actor_t *actor;
    const pl_config_t *cfg;
    s_stream_t *streams;
    size_t nstreams, cap;
    int64_t started, chunks; /* since start */
    pl_upstream_t *up;
    uint64_t next_tag;
    int64_t *mstats; /* models_table.n rows of PL_MSTAT_COUNT_ */
} self_t;

static void s_up_chunk(void *arg, uint64_t tag, const char *text);
static void s_up_done(void *arg, uint64_t tag, int64_t finish, int64_t ptok, int64_t ctok, const char *error,
                      long status, long retry_after, size_t malformed);
static const pl_upstream_sink_t s_sink = {s_up_chunk, s_up_done};

static void *
s_self_new(const pl_actor_t *actor)
{
    self_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->actor = actor;
    self->cfg = actor->arg;
    pl_upstream_limits_t lim = {self->cfg->upstream_connect_ms, self->cfg->upstream_first_byte_ms,
                                self->cfg->upstream_idle_ms, self->cfg->upstream_total_ms, PL_UPSTREAM_EVENT_MAX};
    self->up = pl_upstream_new(&s_sink, self, &lim);
    self->mstats = calloc(self->cfg->models_table.n * PL_MSTAT_COUNT_ + 1, sizeof *self->mstats);
    if (!self->up || !self->mstats) {
        pl_upstream_destroy(&self->up);
        free(self->mstats);
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
    for (size_t i = 0; i < self->nstreams; i++)
        if (self->streams[i].backend)
            self->streams[i].backend->free(self->streams[i].st);
    pl_upstream_destroy(&self->up); /* aborts every transfer */
    free(self->mstats);
    free(self->streams);
    free(self);
    *self_p = NULL;
}

static int64_t *
s_mstat(self_t *self, const s_stream_t *s)
{
    return self->mstats + s->model * PL_MSTAT_COUNT_;
}

/* Counts a chunk of stream s (its first: time to first chunk). */
static void
s_count_chunk(self_t *self, s_stream_t *s)
{
    self->chunks++;
    if (!s->got_chunk) {
        s->got_chunk = true;
        s_mstat(self, s)[PL_MSTAT_FIRST_CHUNKS]++;
        s_mstat(self, s)[PL_MSTAT_TTFC_MS_TOTAL] += pl_now_ms() - s->started_ms;
    }
}

/* Counts the end of stream s. */
static void
s_count_done(self_t *self, const s_stream_t *s, int64_t finish, int64_t ptok, int64_t ctok)
{
    int64_t *row = s_mstat(self, s);
    row[PL_MSTAT_FAILURES] += finish == PL_FINISH_ERROR;
    row[PL_MSTAT_CANCELLED] += finish == PL_FINISH_CANCELLED;
    row[PL_MSTAT_PROMPT_TOKENS] += ptok;
    row[PL_MSTAT_COMPLETION_TOKENS] += ctok;
}

static void
s_remove(self_t *self, size_t i)
{
    if (self->streams[i].backend)
        self->streams[i].backend->free(self->streams[i].st);
    else
        pl_upstream_cancel(self->up, self->streams[i].tag);
    self->streams[i] = self->streams[--self->nstreams];
}

static void
s_send(self_t *self, const s_stream_t *s, pl_env_t *env)
{
    pl_env_set_str(env, PL_F_SESSION, s->session);
    pl_env_set_str(env, PL_F_RESPID, s->respid);
    pl_outbox_send_session(self->actor->out, PL_KIND_SESSION, s->session, env);
    pl_env_reset(env);
}

/* Sends MODEL_DONE for stream s and counts it. `usage` ({prompt,
   completion}) NULL: the echo backend's own counts, if it ran. */
static void
s_done(self_t *self, const s_stream_t *s, int64_t finish, const int64_t *usage, const char *error, long status,
       long retry_after)
{
    pl_env_t done;
    pl_env_init(&done, PL_MSG_MODEL_DONE);
    pl_env_set_i64(&done, PL_F_FINISH, finish);
    int64_t ptok = 0, ctok = 0;
    if (usage) {
        ptok = usage[0];
        ctok = usage[1];
    } else if (s->st && s->backend) {
        s->backend->usage(s->st, &ptok, &ctok);
    }
    if (usage || (s->st && s->backend)) {
        pl_env_set_i64(&done, PL_F_PTOK, ptok);
        pl_env_set_i64(&done, PL_F_CTOK, ctok);
    }
    s_count_done(self, s, finish, ptok, ctok);
    if (status)
        pl_env_set_i64(&done, PL_F_STATUS, status);
    if (retry_after > 0)
        pl_env_set_i64(&done, PL_F_RETRY, retry_after);
    if (error)
        pl_env_set_str(&done, PL_F_TEXT, error);
    s_send(self, s, &done);
}

static void
s_handle_generate(self_t *self, pl_env_t *env)
{
    s_stream_t s = {0};
    snprintf(s.session, sizeof s.session, "%s", env->session);
    snprintf(s.respid, sizeof s.respid, "%s", env->respid);
    const pl_models_t *table = &self->cfg->models_table;
    const pl_model_t *m = pl_models_find(table, env->model);
    const pl_model_t *counted = m ? m : pl_models_find(table, "echo"); /* the default alias is echo */
    s.model = counted ? (size_t) (counted - table->v) : 0;
    s.started_ms = pl_now_ms();
    self->mstats[s.model * PL_MSTAT_COUNT_ + PL_MSTAT_REQUESTS]++;
    if (m && strcmp(m->backend, "echo") != 0) {
        s.tag = ++self->next_tag;
        int rc = pl_upstream_start(self->up, s.tag, m, env);
        if (rc != 0) {
            char why[400];
            if (rc == -PL_E_AUTH_FAILED)
                snprintf(why, sizeof why, "model %s: its API key variable %s is not set or not valid", m->name,
                         m->api_key_env);
            else
                snprintf(why, sizeof why, "model %s: the request could not be made", m->name);
            s_done(self, &s, PL_FINISH_ERROR, NULL, why, 0, 0);
            return;
        }
        s.st = self->up; /* marks the stream live; never freed through here */
    } else {
        s.backend = &pl_backend_echo;
        s.st = s.backend->start(env, self->cfg->echo_delay_ms, pl_now_ms());
    }
    if (s.st && self->nstreams == self->cap) {
        size_t cap = self->cap ? self->cap * 2 : 16;
        s_stream_t *v = realloc(self->streams, cap * sizeof *v);
        if (v) {
            self->streams = v;
            self->cap = cap;
        }
    }
    if (!s.st || self->nstreams == self->cap) {
        if (s.st && s.backend)
            s.backend->free(s.st);
        else if (s.st)
            pl_upstream_cancel(self->up, s.tag);
        s.st = NULL;
        s_done(self, &s, PL_FINISH_ERROR, NULL, "the model could not start: out of memory", 0, 0);
        return;
    }
    self->streams[self->nstreams++] = s;
    self->started++;
}

static void
s_handle(void *self_, pl_env_t *env)
{
    self_t *self = self_;
    if (env->type == PL_MSG_GENERATE) {
        s_handle_generate(self, env);
    } else if (env->type == PL_MSG_GEN_CANCEL) {
        for (size_t i = 0; i < self->nstreams; i++)
            if (strcmp(self->streams[i].respid, env->respid) == 0) {
                s_count_done(self, &self->streams[i], PL_FINISH_CANCELLED, 0, 0);
                s_remove(self, i);
                break;
            }
    } else if (env->type == PL_MSG_STATS_REQ) {
        int64_t stats[PL_STAT_COUNT_] = {0};
        stats[PL_STAT_MODEL_STREAMS] = self->started;
        stats[PL_STAT_MODEL_ACTIVE] = (int64_t) self->nstreams;
        stats[PL_STAT_MODEL_CHUNKS] = self->chunks;
        pl_env_t reply;
        pl_env_init(&reply, PL_MSG_STATS_REPLY);
        pl_env_set_u64(&reply, PL_F_REQ, env->req);
        pl_env_set_i64v(&reply, PL_F_STATS, stats, PL_STAT_COUNT_);
        pl_env_set_i64v(&reply, PL_F_MSTATS, self->mstats, self->cfg->models_table.n * PL_MSTAT_COUNT_);
        pl_outbox_send(self->actor->out, PL_KIND_EDGE, 0, &reply);
        pl_env_reset(&reply);
    }
}

static int64_t
s_next_timer(void *self_)
{
    self_t *self = self_;
    int64_t due = pl_upstream_deadline(self->up);
    for (size_t i = 0; i < self->nstreams; i++) {
        if (!self->streams[i].backend)
            continue;
        int64_t d = self->streams[i].backend->next(self->streams[i].st);
        if (due < 0 || d < due)
            due = d;
    }
    return due;
}

static void
s_on_timer(void *self_, int64_t now)
{
    self_t *self = self_;
    int64_t up_due = pl_upstream_deadline(self->up);
    if (up_due >= 0 && up_due <= now)
        pl_upstream_on_timer(self->up, now);
    for (size_t i = 0; i < self->nstreams;) {
        s_stream_t *s = &self->streams[i];
        if (!s->backend) {
            i++;
            continue;
        }
        char *text = NULL;
        bool final = false;
        int64_t finish = PL_FINISH_STOP;
        pl_step_t r = s->backend->step(s->st, now, &text, &final, &finish);
        if (r == PL_STEP_CHUNK) {
            pl_env_t chunk;
            pl_env_init(&chunk, PL_MSG_MODEL_CHUNK);
            pl_env_set_str(&chunk, PL_F_TEXT, text);
            pl_env_set_bool(&chunk, PL_F_FLAG, final);
            free(text);
            s_send(self, s, &chunk);
            s_count_chunk(self, s);
            continue; /* a zero delay streams the whole answer in one go */
        }
        if (r == PL_STEP_DONE) {
            s_done(self, s, finish, NULL, NULL, 0, 0);
            s_remove(self, i);
            continue;
        }
        i++;
    }
}

/* ---- upstream sink and socket hooks ---- */

static ssize_t
s_find_tag(self_t *self, uint64_t tag)
{
    for (size_t i = 0; i < self->nstreams; i++)
        if (!self->streams[i].backend && self->streams[i].tag == tag)
            return (ssize_t) i;
    return -1;
}

static void
s_up_chunk(void *arg, uint64_t tag, const char *text)
{
    self_t *self = arg;
    ssize_t i = s_find_tag(self, tag);
    if (i < 0)
        return;
    pl_env_t chunk;
    pl_env_init(&chunk, PL_MSG_MODEL_CHUNK);
    pl_env_set_str(&chunk, PL_F_TEXT, text);
    pl_env_set_bool(&chunk, PL_F_FLAG, false); /* a network stream learns its end afterwards */
    s_send(self, &self->streams[i], &chunk);
    s_count_chunk(self, &self->streams[i]);
}

static void
s_up_done(void *arg, uint64_t tag, int64_t finish, int64_t ptok, int64_t ctok, const char *error, long status,
          long retry_after, size_t malformed)
{
    self_t *self = arg;
    ssize_t i = s_find_tag(self, tag);
    if (i < 0)
        return;
    s_stream_t *s = &self->streams[i];
    s_mstat(self, s)[PL_MSTAT_MALFORMED] += (int64_t) malformed;
    s_done(self, s, finish, (const int64_t[]){ptok, ctok}, error, status, retry_after);
    /* the transfer is already gone: drop the stream without cancelling */
    self->streams[i] = self->streams[--self->nstreams];
}

static int
s_poll_fds(void *self_, pl_pollfd_t *fds, int max)
{
    return pl_upstream_fds(((self_t *) self_)->up, fds, max);
}

static void
s_on_fd(void *self_, const pl_pollfd_t *fd)
{
    pl_upstream_on_fd(((self_t *) self_)->up, fd);
}

const pl_actor_ops_t pl_model_actor = {
    .name = "model",
    .create = s_self_new,
    .destroy = s_self_destroy,
    .handle = s_handle,
    .next_timer = s_next_timer,
    .on_timer = s_on_timer,
    .poll_fds = s_poll_fds,
    .on_fd = s_on_fd,
};
