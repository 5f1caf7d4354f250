/*  pl_runtime — the actor runtime: mailboxes, shards, the worker pool.

    Design. Each kind of actor (connection, session, model) runs as `shards`
    shards; shard i of every kind lives on worker thread i % workers for life.
    A mailbox is one ZeroMQ PULL socket bound at inproc://pl-<kind>-<shard>.
    Every thread that sends owns an outbox: one PUSH socket connected to each
    mailbox, so order between one sender and one mailbox is FIFO. Envelopes
    travel msgpack-encoded; sends never block (a full mailbox refuses the send,
    and the refusal is counted). ZeroMQ sockets never leave their thread.

    The edge is not a worker shard: it runs the libwebsockets loop on its own
    thread, owns mailbox (EDGE, 0), and is woken by a doorbell the runtime
    rings after a worker batch that sent it anything (lws_cancel_service).

    A kind registered with pl_runtime_register_own (the store) is one shard
    on a thread of its own instead.

    Lifecycle: new → register each kind → start (returns once every worker's
    mailboxes are bound and its actors created) → stop (TERM to every pooled
    shard, workers join; then TERM to the own-thread kinds, which join) →
    destroy. A shard that reads TERM first handles everything already in its
    mailbox, so nothing sent before the stop is dropped. */
#ifndef PL_RUNTIME_H
#define PL_RUNTIME_H

#include <stdbool.h>
#include <stdint.h>

#include "../protocol/pl_envelope.h"

typedef enum {
    PL_KIND_EDGE = 0,
    PL_KIND_CONN,
    PL_KIND_SESSION,
    PL_KIND_MODEL,
    PL_KIND_STORE,
    PL_KIND_COUNT_
} pl_kind_t;

typedef struct pl_runtime pl_runtime_t;
typedef struct pl_outbox pl_outbox_t;

/* What an actor shard knows of its place; valid for the shard's life. */
typedef struct {
    pl_runtime_t *rt;
    pl_outbox_t *out; /* the worker's outbox: use only from the handler */
    pl_kind_t kind;
    unsigned shard;
    unsigned shards;
    void *arg; /* from pl_runtime_register, read-only (configuration) */
} pl_actor_t;

/* A socket a shard wants polled beside its mailbox (curl's, for a model
   shard). events/revents: PL_POLL_IN | PL_POLL_OUT (| PL_POLL_ERR out). */
typedef struct {
    int fd;
    short events;
    short revents;
} pl_pollfd_t;

#define PL_POLL_IN 1
#define PL_POLL_OUT 2
#define PL_POLL_ERR 4
/* Sockets one shard may have polled at once. */
#define PL_POLL_FDS_MAX 4096

typedef struct {
    const char *name;
    /* Creates the shard's state; NULL on failure (start then fails). */
    void *(*create)(const pl_actor_t *actor);
    void (*destroy)(void **self_p);
    /* Handles one envelope; the envelope is borrowed (freed after). */
    void (*handle)(void *self, pl_env_t *env);
    /* Optional: next deadline (pl_now_ms clock), or -1 for none. */
    int64_t (*next_timer)(void *self);
    /* Optional: called when the deadline has passed. */
    void (*on_timer)(void *self, int64_t now);
    /* Optional: fills at most `max` sockets to poll with the mailbox; returns
       how many. Asked again before every wait. */
    int (*poll_fds)(void *self, pl_pollfd_t *fds, int max);
    /* Optional: one of those sockets is ready (revents set). */
    void (*on_fd)(void *self, const pl_pollfd_t *fd);
} pl_actor_ops_t;

pl_runtime_t *pl_runtime_new(unsigned workers, unsigned shards, int hwm);
void pl_runtime_destroy(pl_runtime_t **self_p);
void pl_runtime_register(pl_runtime_t *self, pl_kind_t kind, const pl_actor_ops_t *ops, void *arg);
/* Registers a kind that runs as ONE shard on a thread of its own: for an
   actor whose handler blocks on I/O (the store's fsync) and must not stall
   the shards that share a worker. It gets TERM after every pooled shard has
   stopped, so it sees everything they sent. */
void pl_runtime_register_own(pl_runtime_t *self, pl_kind_t kind, const pl_actor_ops_t *ops, void *arg);
/* `ring` is called (from any worker thread) after a batch that sent to
   `kind`'s mailbox; it must be thread-safe (lws_cancel_service is). */
void pl_runtime_set_doorbell(pl_runtime_t *self, pl_kind_t kind, void (*ring)(void *), void *arg);
/* 0, or a negative pl_err when a worker failed to start. */
int pl_runtime_start(pl_runtime_t *self);
/* Sends TERM to every shard and joins the workers (pooled kinds first, then
   own-thread kinds). Idempotent. */
void pl_runtime_stop(pl_runtime_t *self);

unsigned pl_runtime_shards(const pl_runtime_t *self);
/* Shards of one kind: 1 for the edge and own-thread kinds. */
unsigned pl_runtime_kind_shards(const pl_runtime_t *self, pl_kind_t kind);
unsigned pl_runtime_workers(const pl_runtime_t *self);
/* Sends refused by a full mailbox, since start. */
uint64_t pl_runtime_dropped(const pl_runtime_t *self);

/* The calling thread's outbox (create on the thread that uses it). */
pl_outbox_t *pl_outbox_new(pl_runtime_t *rt);
void pl_outbox_destroy(pl_outbox_t **self_p);
/* Encodes and sends. 0, -PL_E_AGAIN (mailbox full, counted) or -PL_E_x. */
int pl_outbox_send(pl_outbox_t *self, pl_kind_t kind, unsigned shard, const pl_env_t *env);
/* Sends an envelope already encoded with pl_env_encode (one encoding for
   several destinations). 0, -PL_E_AGAIN (counted) or -PL_E_x. */
int pl_outbox_send_raw(pl_outbox_t *self, pl_kind_t kind, unsigned shard, const void *buf, size_t len);
/* Sends to the shard of `kind` that owns session `id`. */
int pl_outbox_send_session(pl_outbox_t *self, pl_kind_t kind, const char *id, const pl_env_t *env);
/* Rings the doorbells of kinds sent to since the last flush. */
void pl_outbox_flush(pl_outbox_t *self);

/* A mailbox for a thread that is not a worker (the edge). */
typedef struct pl_mailbox pl_mailbox_t;
pl_mailbox_t *pl_mailbox_new(pl_runtime_t *rt, pl_kind_t kind, unsigned shard);
void pl_mailbox_destroy(pl_mailbox_t **self_p);
/* Receives one envelope without blocking: 0 (env filled), -PL_E_AGAIN when
   empty, -PL_E_BAD_FRAME for an undecodable one (dropped). */
int pl_mailbox_recv(pl_mailbox_t *self, pl_env_t *env);

#endif
