/*  pl_actors — the actor kinds parleyd runs, and the small helpers they
    share to answer a connection. Each actor lives in its own file. */
#ifndef PL_ACTORS_H
#define PL_ACTORS_H

#include "../transport/pl_runtime.h"

extern const pl_actor_ops_t pl_conn_actor;    /* conn.c    */
extern const pl_actor_ops_t pl_session_actor; /* session.c */
extern const pl_actor_ops_t pl_model_actor;   /* model.c   */
extern const pl_actor_ops_t pl_store_actor;   /* store.c: one shard, own thread */

/* Sends an ERROR for connection `conn` to the edge (echoing `cid` when not
   NULL). `text` is shown to the client: no secrets, no content. */
void pl_actor_error(const pl_actor_t *actor, uint64_t conn, const char *cid, int code, const char *text);

#endif
