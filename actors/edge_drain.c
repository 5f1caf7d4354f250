/*  edge_drain — the edge's part of a graceful stop (SIGTERM).

    1. New WebSocket upgrades are refused; every session shard gets DRAIN:
       it starts no new turn and answers DRAINED with how many answers it
       still runs (again each time one ends).
    2. When no answer runs, or --shutdown-grace has passed, every shard gets
       INTERRUPT: what still runs ends as "interrupted", its partial text
       stored; each shard answers DRAINED once more.
    3. Then (or after PL_DRAIN_INTERRUPT_MS) the edge closes every client
       with 1001 once its queued frames are out, and main stops the actors;
       the store, stopped last, commits what they sent.
    The events each shard sent before DRAINED reach the edge first (one
    ordered pipe per sender), so clients see response_complete before 1001. */
#include <string.h>

#include "../protocol/pl_util.h"
#include "../transport/pl_log.h"
#include "edge_int.h"

/* How long interrupted answers get to be stored and announced. */
#define PL_DRAIN_INTERRUPT_MS 2000

static void
s_wake(lws_sorted_usec_list_t *sul)
{
    (void) sul; /* wakes the loop; pl_edge_drain_poll looks at the clock */
}

static void
s_send_all(pl_edge_t *self, pl_msg_t type)
{
    pl_env_t env;
    pl_env_init(&env, type);
    unsigned n = pl_runtime_kind_shards(self->rt, PL_KIND_SESSION);
    for (unsigned i = 0; i < n && i < PL_SHARDS_MAX; i++) {
        self->drain_running[i] = -1; /* not heard yet */
        pl_outbox_send(self->out, PL_KIND_SESSION, i, &env);
    }
    pl_env_reset(&env);
}

/* With --shutdown-grace 0 the drain still runs: answers are interrupted
   (and stored) at once instead of lost. */
bool
pl_edge_drain_begin(pl_edge_t *self, struct lws_context *ctx)
{
    if (self->draining)
        return false; /* a second TERM: the caller stops at once */
    self->draining = true;
    self->drain_deadline = pl_now_ms() + self->cfg->shutdown_grace * 1000;
    s_send_all(self, PL_MSG_DRAIN);
    lws_sul_schedule(ctx, 0, &self->drain_sul, s_wake, self->cfg->shutdown_grace * LWS_US_PER_SEC);
    pl_log_info("draining", "grace_s=%ld connections=%lld", self->cfg->shutdown_grace,
                (long long) self->stats.conns_current);
    return true;
}

void
pl_edge_drain_report(pl_edge_t *self, const pl_env_t *env)
{
    if (env->req < PL_SHARDS_MAX)
        self->drain_running[env->req] = env->number;
}

/* Sum of running answers, or -1 while a shard has not answered. */
static int64_t
s_running(const pl_edge_t *self)
{
    int64_t sum = 0;
    unsigned n = pl_runtime_kind_shards(self->rt, PL_KIND_SESSION);
    for (unsigned i = 0; i < n && i < PL_SHARDS_MAX; i++) {
        if (self->drain_running[i] < 0)
            return -1;
        sum += self->drain_running[i];
    }
    return sum;
}

bool
pl_edge_drain_poll(pl_edge_t *self, struct lws_context *ctx)
{
    if (!self->draining)
        return false;
    int64_t now = pl_now_ms();
    int64_t running = s_running(self);
    if (!self->drain_interrupted) {
        if (running != 0 && now < self->drain_deadline)
            return false;
        self->drain_interrupted = true;
        self->drain_deadline = now + PL_DRAIN_INTERRUPT_MS;
        s_send_all(self, PL_MSG_INTERRUPT);
        lws_sul_schedule(ctx, 0, &self->drain_sul, s_wake, PL_DRAIN_INTERRUPT_MS * LWS_US_PER_MS);
        pl_log_info("draining", "phase=interrupt running=%lld", (long long) running);
        return false;
    }
    return running == 0 || now >= self->drain_deadline;
}

void
pl_edge_drain_end(pl_edge_t *self)
{
    lws_sul_cancel(&self->drain_sul);
}
