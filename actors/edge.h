/*  edge — the edge actor: the libwebsockets loop that owns every socket.

    Runs on its own thread. Parses each client frame once (the dialect) and
    sends the envelope to the connection's shard; turns envelopes from the
    actors back into JSON, serialising a session broadcast once and queueing
    the same buffer on every member connection. Serves the HTTP endpoints.
    Woken by its mailbox doorbell (lws_cancel_service), never by polling. */
#ifndef EDGE_H
#define EDGE_H

#include "../transport/pl_runtime.h"
#include "pl_config.h"

typedef struct pl_edge pl_edge_t;

/* The runtime must be started first; the edge sends to its mailboxes. */
pl_edge_t *pl_edge_new(const pl_config_t *cfg, pl_runtime_t *rt);
/* Starts the thread; returns once listening (0) or on failure (< 0). */
int pl_edge_start(pl_edge_t *self);
/* TERM: closes every client with 1001, stops the loop, joins the thread.
   Idempotent. Call before pl_runtime_stop. */
void pl_edge_stop(pl_edge_t *self);
void pl_edge_destroy(pl_edge_t **self_p);

#endif
