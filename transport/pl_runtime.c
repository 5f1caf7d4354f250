#include "pl_runtime.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "../protocol/pl_err.h"
#include "../protocol/pl_limits.h"
#include "../protocol/pl_util.h"
#include "pl_log.h"

/* Messages a worker drains from one mailbox before looking at the others
   and at its timers: keeps one busy shard from starving the rest. */
#define S_DRAIN_BUDGET 256

typedef struct {
    const pl_actor_ops_t *ops;
    void *arg;
    void (*ring)(void *);
    void *ring_arg;
    bool own; /* one shard on a thread of its own */
} s_kind_reg_t;

typedef struct {
    pl_runtime_t *rt;
    unsigned index;
    int own; /* -1: a pooled worker; else the own-thread kind it runs */
    pthread_t thread;
    bool started;
} s_worker_t;

struct pl_runtime {
    void *zctx;
    unsigned workers, shards;
    int hwm;
    s_kind_reg_t kinds[PL_KIND_COUNT_];
    s_worker_t *pool; /* workers pooled threads, then one per own kind */
    unsigned nthreads;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    unsigned ready, failed;
    bool running;
    atomic_uint_fast64_t dropped;
};

struct pl_outbox {
    pl_runtime_t *rt;
    void *push[PL_KIND_COUNT_][PL_SHARDS_MAX];
    bool dirty[PL_KIND_COUNT_];
};

struct pl_mailbox {
    void *pull;
};

static void
s_endpoint(char *buf, size_t size, pl_kind_t kind, unsigned shard)
{
    snprintf(buf, size, "inproc://pl-%d-%u", (int) kind, shard);
}

pl_runtime_t *
pl_runtime_new(unsigned workers, unsigned shards, int hwm)
{
    if (workers == 0 || workers > PL_WORKERS_MAX || shards == 0 || shards > PL_SHARDS_MAX)
        return NULL;
    pl_runtime_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->zctx = zmq_ctx_new();
    self->pool = calloc(workers + PL_KIND_COUNT_, sizeof *self->pool);
    if (!self->zctx || !self->pool) {
        if (self->zctx)
            zmq_ctx_term(self->zctx);
        free(self->pool);
        free(self);
        return NULL;
    }
    self->workers = workers;
    self->shards = shards;
    self->hwm = hwm;
    pthread_mutex_init(&self->lock, NULL);
    pthread_cond_init(&self->cond, NULL);
    atomic_init(&self->dropped, 0);
    return self;
}

void
pl_runtime_register(pl_runtime_t *self, pl_kind_t kind, const pl_actor_ops_t *ops, void *arg)
{
    self->kinds[kind].ops = ops;
    self->kinds[kind].arg = arg;
}

void
pl_runtime_register_own(pl_runtime_t *self, pl_kind_t kind, const pl_actor_ops_t *ops, void *arg)
{
    pl_runtime_register(self, kind, ops, arg);
    self->kinds[kind].own = true;
}

/* How many shards `kind` has. */
static unsigned
s_kind_shards(const pl_runtime_t *rt, int kind)
{
    return kind == PL_KIND_EDGE || rt->kinds[kind].own ? 1 : rt->shards;
}

void
pl_runtime_set_doorbell(pl_runtime_t *self, pl_kind_t kind, void (*ring)(void *), void *arg)
{
    self->kinds[kind].ring = ring;
    self->kinds[kind].ring_arg = arg;
}

unsigned
pl_runtime_shards(const pl_runtime_t *self)
{
    return self->shards;
}

unsigned
pl_runtime_workers(const pl_runtime_t *self)
{
    return self->workers;
}

uint64_t
pl_runtime_dropped(const pl_runtime_t *self)
{
    return atomic_load(&((pl_runtime_t *) self)->dropped);
}

/* ---- sockets ---- */

static void *
s_socket(pl_runtime_t *rt, int type)
{
    void *s = zmq_socket(rt->zctx, type);
    if (!s)
        return NULL;
    int zero = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(s, type == ZMQ_PUSH ? ZMQ_SNDHWM : ZMQ_RCVHWM, &rt->hwm, sizeof rt->hwm);
    return s;
}

pl_outbox_t *
pl_outbox_new(pl_runtime_t *rt)
{
    pl_outbox_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->rt = rt;
    for (int k = 0; k < PL_KIND_COUNT_; k++) {
        unsigned n = s_kind_shards(rt, k);
        for (unsigned i = 0; i < n; i++) {
            char ep[64];
            s_endpoint(ep, sizeof ep, (pl_kind_t) k, i);
            void *s = s_socket(rt, ZMQ_PUSH);
            if (!s || zmq_connect(s, ep) != 0) {
                if (s)
                    zmq_close(s);
                pl_outbox_destroy(&self);
                return NULL;
            }
            self->push[k][i] = s;
        }
    }
    return self;
}

void
pl_outbox_destroy(pl_outbox_t **self_p)
{
    pl_outbox_t *self = *self_p;
    if (!self)
        return;
    for (int k = 0; k < PL_KIND_COUNT_; k++)
        for (unsigned i = 0; i < PL_SHARDS_MAX; i++)
            if (self->push[k][i])
                zmq_close(self->push[k][i]);
    free(self);
    *self_p = NULL;
}

int
pl_outbox_send(pl_outbox_t *self, pl_kind_t kind, unsigned shard, const pl_env_t *env)
{
    if ((unsigned) kind >= PL_KIND_COUNT_ || shard >= PL_SHARDS_MAX || !self->push[kind][shard])
        return -PL_E_INTERNAL;
    char *buf = NULL;
    size_t len = 0;
    int rc = pl_env_encode(env, &buf, &len);
    if (rc != 0)
        return rc;
    if (zmq_send(self->push[kind][shard], buf, len, ZMQ_DONTWAIT) < 0) {
        rc = errno == EAGAIN ? -PL_E_AGAIN : -PL_E_INTERNAL;
        atomic_fetch_add(&self->rt->dropped, 1);
        pl_log_warn("mailbox", "refused=%s kind=%d shard=%u", pl_msg_name(env->type), (int) kind, shard);
    } else {
        self->dirty[kind] = true;
    }
    free(buf);
    return rc;
}

int
pl_outbox_send_raw(pl_outbox_t *self, pl_kind_t kind, unsigned shard, const void *buf, size_t len)
{
    if ((unsigned) kind >= PL_KIND_COUNT_ || shard >= PL_SHARDS_MAX || !self->push[kind][shard])
        return -PL_E_INTERNAL;
    if (zmq_send(self->push[kind][shard], buf, len, ZMQ_DONTWAIT) < 0) {
        atomic_fetch_add(&self->rt->dropped, 1);
        pl_log_warn("mailbox", "refused=encoded kind=%d shard=%u", (int) kind, shard);
        return errno == EAGAIN ? -PL_E_AGAIN : -PL_E_INTERNAL;
    }
    self->dirty[kind] = true;
    return 0;
}

unsigned
pl_runtime_kind_shards(const pl_runtime_t *self, pl_kind_t kind)
{
    return s_kind_shards(self, kind);
}

int
pl_outbox_send_session(pl_outbox_t *self, pl_kind_t kind, const char *id, const pl_env_t *env)
{
    return pl_outbox_send(self, kind, (unsigned) (pl_hash(id) % s_kind_shards(self->rt, kind)), env);
}

void
pl_outbox_flush(pl_outbox_t *self)
{
    for (int k = 0; k < PL_KIND_COUNT_; k++) {
        if (!self->dirty[k])
            continue;
        self->dirty[k] = false;
        if (self->rt->kinds[k].ring)
            self->rt->kinds[k].ring(self->rt->kinds[k].ring_arg);
    }
}

pl_mailbox_t *
pl_mailbox_new(pl_runtime_t *rt, pl_kind_t kind, unsigned shard)
{
    pl_mailbox_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    char ep[64];
    s_endpoint(ep, sizeof ep, kind, shard);
    self->pull = s_socket(rt, ZMQ_PULL);
    if (!self->pull || zmq_bind(self->pull, ep) != 0) {
        pl_log_error("mailbox", "bind=%s error=%s", ep, zmq_strerror(errno));
        pl_mailbox_destroy(&self);
        return NULL;
    }
    return self;
}

void
pl_mailbox_destroy(pl_mailbox_t **self_p)
{
    pl_mailbox_t *self = *self_p;
    if (!self)
        return;
    if (self->pull)
        zmq_close(self->pull);
    free(self);
    *self_p = NULL;
}

int
pl_mailbox_recv(pl_mailbox_t *self, pl_env_t *env)
{
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    if (zmq_msg_recv(&msg, self->pull, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&msg);
        return errno == EAGAIN ? -PL_E_AGAIN : -PL_E_INTERNAL;
    }
    int rc = pl_env_decode(zmq_msg_data(&msg), zmq_msg_size(&msg), env);
    zmq_msg_close(&msg);
    if (rc != 0)
        pl_log_error("mailbox", "undecodable=1");
    return rc;
}

/* ---- workers ---- */

/* Which shard asked for a polled socket. */
typedef struct {
    unsigned shard;
    int fd;
    short events;
} s_fdref_t;

typedef struct {
    pl_mailbox_t *box;
    const pl_actor_ops_t *ops;
    pl_actor_t actor;
    void *self;
    bool live;
} s_shard_t;

static void
s_worker_ready(pl_runtime_t *rt, bool ok)
{
    pthread_mutex_lock(&rt->lock);
    rt->ready++;
    if (!ok)
        rt->failed++;
    pthread_cond_broadcast(&rt->cond);
    pthread_mutex_unlock(&rt->lock);
}

/* Receives up to a budget of envelopes for one shard. After TERM it
   handles whatever is still queued (no budget), then stops the shard. */
static void
s_drain(s_shard_t *sh)
{
    bool term = false;
    for (int i = 0; (i < S_DRAIN_BUDGET || term) && sh->live; i++) {
        pl_env_t env;
        int rc = pl_mailbox_recv(sh->box, &env);
        if (rc == -PL_E_AGAIN)
            break;
        if (rc != 0)
            continue;
        if (env.type == PL_MSG_TERM)
            term = true;
        else
            sh->ops->handle(sh->self, &env);
        pl_env_reset(&env);
    }
    if (term)
        sh->live = false;
}

static void *
s_worker_main(void *arg)
{
    s_worker_t *w = arg;
    pl_runtime_t *rt = w->rt;
    s_shard_t shards[PL_KIND_COUNT_ * PL_SHARDS_MAX];
    zmq_pollitem_t items[PL_KIND_COUNT_ * PL_SHARDS_MAX];
    unsigned n = 0;
    bool ok = true;

    pl_outbox_t *out = pl_outbox_new(rt);
    ok = out != NULL;
    for (int k = PL_KIND_CONN; ok && k < PL_KIND_COUNT_; k++) {
        if (!rt->kinds[k].ops || (w->own >= 0) != rt->kinds[k].own || (w->own >= 0 && w->own != k))
            continue;
        unsigned nk = s_kind_shards(rt, k), step = w->own >= 0 ? 1 : rt->workers;
        for (unsigned i = w->own >= 0 ? 0 : w->index; ok && i < nk; i += step) {
            s_shard_t *sh = &shards[n];
            memset(sh, 0, sizeof *sh);
            sh->ops = rt->kinds[k].ops;
            sh->actor = (pl_actor_t){rt, out, (pl_kind_t) k, i, nk, rt->kinds[k].arg};
            sh->box = pl_mailbox_new(rt, (pl_kind_t) k, i);
            sh->self = sh->box ? sh->ops->create(&sh->actor) : NULL;
            if (!sh->self) {
                pl_mailbox_destroy(&sh->box);
                ok = false;
                break;
            }
            sh->live = true;
            items[n] = (zmq_pollitem_t){sh->box->pull, 0, ZMQ_POLLIN, 0};
            n++;
        }
    }
    s_worker_ready(rt, ok);

    /* Room for the mailboxes, then the sockets shards ask to have polled. */
    unsigned with_fds = 0;
    for (unsigned i = 0; i < n; i++)
        with_fds += shards[i].ops->poll_fds != NULL;
    size_t cap = n + (size_t) with_fds * PL_POLL_FDS_MAX;
    zmq_pollitem_t *all = ok ? calloc(cap, sizeof *all) : NULL;
    s_fdref_t *refs = ok ? calloc(cap, sizeof *refs) : NULL;
    pl_pollfd_t *fds = ok && with_fds ? calloc(PL_POLL_FDS_MAX, sizeof *fds) : NULL;
    if (ok && (!all || !refs || (with_fds && !fds))) {
        pl_log_error("worker", "index=%u error=out_of_memory", w->index);
        ok = false;
    }
    unsigned live = ok ? n : 0;
    while (live > 0) {
        int64_t now = pl_now_ms();
        long timeout = -1;
        for (unsigned i = 0; i < n; i++) {
            if (!shards[i].live || !shards[i].ops->next_timer)
                continue;
            int64_t due = shards[i].ops->next_timer(shards[i].self);
            if (due < 0)
                continue;
            long wait = due <= now ? 0 : (long) (due - now);
            if (timeout < 0 || wait < timeout)
                timeout = wait;
        }
        memcpy(all, items, n * sizeof *items);
        size_t nall = n;
        for (unsigned i = 0; i < n; i++) {
            if (!shards[i].live || !shards[i].ops->poll_fds)
                continue;
            int k = shards[i].ops->poll_fds(shards[i].self, fds, PL_POLL_FDS_MAX);
            for (int j = 0; j < k && j < PL_POLL_FDS_MAX; j++) {
                short ev = (short) (((fds[j].events & PL_POLL_IN) ? ZMQ_POLLIN : 0) |
                                    ((fds[j].events & PL_POLL_OUT) ? ZMQ_POLLOUT : 0));
                all[nall] = (zmq_pollitem_t){NULL, fds[j].fd, ev, 0};
                refs[nall] = (s_fdref_t){i, fds[j].fd, fds[j].events};
                nall++;
            }
        }
        if (zmq_poll(all, (int) nall, timeout) < 0 && errno != EINTR)
            break;
        for (unsigned i = 0; i < n; i++)
            if (shards[i].live && (all[i].revents & ZMQ_POLLIN))
                s_drain(&shards[i]);
        for (size_t j = n; j < nall; j++) {
            s_shard_t *sh = &shards[refs[j].shard];
            if (!all[j].revents || !sh->live)
                continue;
            pl_pollfd_t ready = {refs[j].fd, refs[j].events,
                                 (short) (((all[j].revents & ZMQ_POLLIN) ? PL_POLL_IN : 0) |
                                          ((all[j].revents & ZMQ_POLLOUT) ? PL_POLL_OUT : 0) |
                                          ((all[j].revents & ZMQ_POLLERR) ? PL_POLL_ERR : 0))};
            sh->ops->on_fd(sh->self, &ready);
        }
        now = pl_now_ms();
        for (unsigned i = 0; i < n; i++) {
            s_shard_t *sh = &shards[i];
            if (!sh->live || !sh->ops->next_timer)
                continue;
            int64_t due = sh->ops->next_timer(sh->self);
            if (due >= 0 && due <= now)
                sh->ops->on_timer(sh->self, now);
        }
        pl_outbox_flush(out);
        live = 0;
        for (unsigned i = 0; i < n; i++) {
            if (shards[i].live) {
                live++;
            } else if (shards[i].self) {
                shards[i].ops->destroy(&shards[i].self);
                items[i].events = 0;
            }
        }
    }
    free(all);
    free(refs);
    free(fds);
    for (unsigned i = 0; i < n; i++) {
        if (shards[i].self)
            shards[i].ops->destroy(&shards[i].self);
        pl_mailbox_destroy(&shards[i].box);
    }
    pl_outbox_destroy(&out);
    return NULL;
}

int
pl_runtime_start(pl_runtime_t *self)
{
    self->nthreads = self->workers;
    for (unsigned i = 0; i < self->workers; i++)
        self->pool[i] = (s_worker_t){self, i, -1, 0, false};
    for (int k = PL_KIND_CONN; k < PL_KIND_COUNT_; k++)
        if (self->kinds[k].ops && self->kinds[k].own) {
            self->pool[self->nthreads] = (s_worker_t){self, self->nthreads, k, 0, false};
            self->nthreads++;
        }
    for (unsigned i = 0; i < self->nthreads; i++) {
        if (pthread_create(&self->pool[i].thread, NULL, s_worker_main, &self->pool[i]) != 0) {
            pl_runtime_stop(self);
            return -PL_E_INTERNAL;
        }
        self->pool[i].started = true;
    }
    self->running = true;
    pthread_mutex_lock(&self->lock);
    while (self->ready < self->nthreads)
        pthread_cond_wait(&self->cond, &self->lock);
    unsigned failed = self->failed;
    pthread_mutex_unlock(&self->lock);
    if (failed) {
        pl_runtime_stop(self);
        return -PL_E_INTERNAL;
    }
    return 0;
}

void
pl_runtime_stop(pl_runtime_t *self)
{
    if (!self->running && !self->pool[0].started)
        return;
    pl_outbox_t *out = pl_outbox_new(self);
    pl_env_t term;
    pl_env_init(&term, PL_MSG_TERM);
    /* pooled kinds first, then the own-thread kinds: the store hears TERM
       only after every shard that writes to it has stopped */
    for (int own = 0; own <= 1; own++) {
        for (int k = PL_KIND_CONN; out && k < PL_KIND_COUNT_; k++)
            if (self->kinds[k].ops && self->kinds[k].own == (bool) own)
                for (unsigned i = 0; i < s_kind_shards(self, k); i++)
                    pl_outbox_send(out, (pl_kind_t) k, i, &term);
        for (unsigned i = 0; i < self->nthreads; i++) {
            if ((self->pool[i].own >= 0) != (bool) own)
                continue;
            if (self->pool[i].started)
                pthread_join(self->pool[i].thread, NULL);
            self->pool[i].started = false;
        }
    }
    pl_outbox_destroy(&out);
    self->running = false;
}

void
pl_runtime_destroy(pl_runtime_t **self_p)
{
    pl_runtime_t *self = *self_p;
    if (!self)
        return;
    pl_runtime_stop(self);
    zmq_ctx_term(self->zctx);
    pthread_mutex_destroy(&self->lock);
    pthread_cond_destroy(&self->cond);
    free(self->pool);
    free(self);
    *self_p = NULL;
}
