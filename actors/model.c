/*  model — the model actor: runs the answers of its sessions' turns.

    Owns the streams of the turns routed to this shard (by session id). On
    GENERATE it starts a backend stream; when a stream's deadline passes it
    steps it and sends MODEL_CHUNK / MODEL_DONE to the session actor. A
    GEN_CANCEL drops the stream (the session has already closed the turn).
    Streams are few per shard and stepped by a linear scan; a heap comes with
    the network backends. */
#include <stdlib.h>
#include <string.h>

#include "../protocol/pl_err.h"
#include "../protocol/pl_limits.h"
#include "../protocol/pl_util.h"
#include "../transport/pl_log.h"
#include "backends/pl_backend.h"
#include "pl_actors.h"
#include "pl_config.h"

typedef struct {
    char session[PL_ID_MAX + 1];
    char respid[24];
    const pl_backend_ops_t *backend;
    void *st;
} s_stream_t;

typedef struct {
    const pl_actor_t *actor;
    const pl_config_t *cfg;
    s_stream_t *streams;
    size_t nstreams, cap;
    int64_t started, chunks; /* since start */
} self_t;

static void *
s_self_new(const pl_actor_t *actor)
{
    self_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->actor = actor;
    self->cfg = actor->arg;
    return self;
}

static void
s_self_destroy(void **self_p)
{
    self_t *self = *self_p;
    if (!self)
        return;
    for (size_t i = 0; i < self->nstreams; i++)
        self->streams[i].backend->free(self->streams[i].st);
    free(self->streams);
    free(self);
    *self_p = NULL;
}

static void
s_remove(self_t *self, size_t i)
{
    self->streams[i].backend->free(self->streams[i].st);
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

static void
s_done(self_t *self, const s_stream_t *s, int64_t finish, const char *error)
{
    pl_env_t done;
    pl_env_init(&done, PL_MSG_MODEL_DONE);
    pl_env_set_i64(&done, PL_F_FINISH, finish);
    if (s->st) {
        int64_t ptok = 0, ctok = 0;
        s->backend->usage(s->st, &ptok, &ctok);
        pl_env_set_i64(&done, PL_F_PTOK, ptok);
        pl_env_set_i64(&done, PL_F_CTOK, ctok);
    }
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
    s.backend = &pl_backend_echo;
    s.st = s.backend->start(env, self->cfg->echo_delay_ms, pl_now_ms());
    if (s.st && self->nstreams == self->cap) {
        size_t cap = self->cap ? self->cap * 2 : 16;
        s_stream_t *v = realloc(self->streams, cap * sizeof *v);
        if (v) {
            self->streams = v;
            self->cap = cap;
        }
    }
    if (!s.st || self->nstreams == self->cap) {
        if (s.st)
            s.backend->free(s.st);
        s.st = NULL;
        s_done(self, &s, PL_FINISH_ERROR, "the model could not start: out of memory");
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
        pl_env_set_stats(&reply, stats, PL_STAT_COUNT_);
        pl_outbox_send(self->actor->out, PL_KIND_EDGE, 0, &reply);
        pl_env_reset(&reply);
    }
}

static int64_t
s_next_timer(void *self_)
{
    self_t *self = self_;
    int64_t due = -1;
    for (size_t i = 0; i < self->nstreams; i++) {
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
    for (size_t i = 0; i < self->nstreams;) {
        s_stream_t *s = &self->streams[i];
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
            self->chunks++;
            continue; /* a zero delay streams the whole answer in one go */
        }
        if (r == PL_STEP_DONE) {
            s_done(self, s, finish, NULL);
            s_remove(self, i);
            continue;
        }
        i++;
    }
}

const pl_actor_ops_t pl_model_actor = {
    .name = "model",
    .create = s_self_new,
    .destroy = s_self_destroy,
    .handle = s_handle,
    .next_timer = s_next_timer,
    .on_timer = s_on_timer,
};
