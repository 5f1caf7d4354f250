/*  edge_int — what the edge's files share: edge.c (lifecycle, mailbox,
    fan-out, the callback switch), edge_ws.c (WebSocket connections),
    edge_queue.c (outbound queues, coalescing, the writer), edge_limits.c
    (admission, per-address counts, slow-request deadlines) and edge_http.c.
    Only the edge thread touches any of it ("service thread only"), except
    `ctx` under `ring_lock`. */
#ifndef EDGE_INT_H
#define EDGE_INT_H

#include <libwebsockets.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "../protocol/pl_dialect.h"
#include "../protocol/pl_http.h"
#include "../protocol/pl_limits.h"
#include "../transport/pl_map.h"
#include "../transport/pl_tap.h"
#include "edge.h"

/* A serialised outbound frame. Shared (refcounted) by every connection it
   is queued on, except a merged chunk frame (`merged`), which belongs to
   one connection. A shared frame is rendered before it is queued, a merged
   one when it leaves the queue; lws_write() copies whatever the socket does
   not take, so a queued frame is never partly written. */
typedef struct {
    int refs;
    bool merged;                 /* coalesced chunks: `chunk` holds them, no JSON yet */
    size_t len;                  /* bytes of JSON in buf (merged: bytes of text) */
    size_t size;                 /* bytes this frame holds: charged to each queue it is on */
    char session[PL_ID_MAX + 1]; /* a session event's session; "" otherwise */
    pl_env_t *chunk;             /* merged: the newest chunk's envelope, with all the text */
    size_t textcap;              /* merged: bytes allocated for chunk->text */
    unsigned char buf[];         /* shared: LWS_PRE headroom, then len bytes of JSON */
} pl_edge_frame_t;

typedef struct pss {
    struct lws *wsi;
    bool is_ws;
    /* WebSocket */
    uint64_t conn;
    char peer[48];       /* counted against --max-per-address while open */
    pl_edge_frame_t **q; /* ring; grows by doubling up to cfg->out_queue */
    size_t qcap, qhead, qlen;
    size_t qbytes;    /* sum of the queued frames' `size` */
    bool choked;      /* the socket refused more since the last WRITEABLE */
    bool choke_known; /* `choked` was looked up since the last WRITEABLE */
    char *rx;
    size_t rxlen, rxtotal;
    bool rx_binary;
    bool discarding;                 /* over the hard limit: reading to the end, then 1009 */
    int close_code;                  /* nonzero: close with it at the next writeable */
    int peer_close;                  /* the close code the client sent, for the tap */
    char (*sessions)[PL_ID_MAX + 1]; /* grows: the conn actor enforces the cap */
    size_t nsessions, capsessions;
    /* HTTP */
    uint64_t req;
    pl_method_t method;
    pl_http_match_t match;
    char *body;
    size_t bodylen;
    bool body_too_big;
    bool body_pending; /* headers in, body still arriving: the deadline runs */
    bool close_after;  /* close the connection once the response is written */
    int waiting;       /* replies still expected from actors */
    pl_env_t acc;      /* gathered replies */
    int status;
    const char *allow;
    const char *ctype;
    unsigned char *resp; /* LWS_PRE headroom, then resplen bytes */
    size_t resplen;
    bool responding;
} pss_t;

/* Bytes of frames written in one lws_write() (edge_queue.c). */
#define PL_EDGE_BATCH (64 * 1024)

struct pl_edge {
    const pl_config_t *cfg;
    pl_runtime_t *rt;
    pthread_t thread;
    bool started;
    pthread_mutex_t ring_lock;
    atomic_bool rung;        /* the doorbell rang and the edge has not drained since */
    struct lws_context *ctx; /* published under ring_lock for the doorbell */
    pl_mailbox_t *box;
    pl_outbox_t *out;
    pl_map_t *conns; /* conn name → pss */
    pl_map_t *index; /* session id → s_members_t: who to fan out to */
    pl_map_t *http;  /* request id → pss awaiting replies */
    pl_map_t *peers; /* peer address → open WebSockets from it (as uintptr_t) */
    pl_tap_t *tap;   /* --tap, or NULL */
    lws_sorted_usec_list_t tap_sul;
    uint64_t next_req;
    bool stopping;
    int start_rc;
    pthread_mutex_t start_lock;
    pthread_cond_t start_cond;
    bool start_done;
    double started_at;
    pl_dialect_limits_t lim;
    unsigned char *batch;  /* LWS_PRE + PL_EDGE_BATCH: frames written in one go */
    pl_edge_stats_t stats; /* stats.conns_limit: the cap in force (edge_limits.c) */
    /* graceful stop (edge_drain.c) */
    bool draining, drain_interrupted;
    int64_t drain_deadline;
    int64_t drain_running[PL_SHARDS_MAX]; /* per session shard; -1: not heard */
    lws_sorted_usec_list_t drain_sul;
};

/* edge_drain.c: SIGTERM. begin: false when already draining; poll: true
   when it is time to close the clients. */
bool pl_edge_drain_begin(pl_edge_t *self, struct lws_context *ctx);
void pl_edge_drain_report(pl_edge_t *self, const pl_env_t *env);
bool pl_edge_drain_poll(pl_edge_t *self, struct lws_context *ctx);
void pl_edge_drain_end(pl_edge_t *self);

/* edge.c: the session index */
void pl_edge_index_remove(pl_edge_t *self, pss_t *pss, const char *session);

/* edge_ws.c: the WebSocket callbacks */
int pl_edge_ws_callback(pl_edge_t *self, struct lws *wsi, enum lws_callback_reasons reason, pss_t *pss, void *in,
                        size_t len);
void pl_edge_to_conn_actor(pl_edge_t *self, const pl_env_t *env);
/* Counts the error's code and queues it on the connection. */
void pl_edge_send_error(pl_edge_t *self, pss_t *pss, const pl_env_t *err);

/* edge_queue.c: frames and the per-connection outbound queue.
   A frame from pl_edge_frame_new() has one reference, the caller's. `env`
   (borrowed, may be NULL) is what it was rendered from: a session event's
   frame records its session. */
pl_edge_frame_t *pl_edge_frame_new(const char *json, size_t len, const pl_env_t *env);
void pl_edge_frame_unref(pl_edge_frame_t *f);
/* Queues `f` (takes a new reference) on a connection; `env` (borrowed, may
   be NULL) is the envelope `f` was rendered from, which a chunk past
   --out-soft is merged from instead. Past --out-queue frames or --out-bytes
   bytes the connection is closed with 1013. */
void pl_edge_enqueue(pl_edge_t *self, pss_t *pss, pl_edge_frame_t *f, const pl_env_t *env);
/* Renders `env` for one connection and queues it. */
void pl_edge_send_to(pl_edge_t *self, pss_t *pss, const pl_env_t *env);
/* Drops every queued frame and frees the ring. */
void pl_edge_queue_free(pl_edge_t *self, pss_t *pss);
/* Marks the connection for closing with `code` (the first code wins); its
   queue is dropped, except for 1001 (going away), where what is queued is
   sent first. A peer that does not take the close frame within a grace
   period is cut off. */
void pl_edge_close(pl_edge_t *self, pss_t *pss, int code);
/* SERVER_WRITEABLE: writes queued frames, or the close. */
int pl_edge_queue_write(pl_edge_t *self, struct lws *wsi, pss_t *pss);

/* edge_limits.c: admission and slow requests */
/* HTTP_CONFIRM_UPGRADE: 0 admits the upgrade; otherwise a 404 or 503 has
   been written and the connection is to be dropped (-1). */
int pl_edge_admit(pl_edge_t *self, struct lws *wsi);
/* Sets stats.conns_limit from --max-connections and the open-file limit, and
   says so in the log; once, when the server has opened what it needs. */
void pl_edge_conn_limit(pl_edge_t *self);
/* Counts an admitted WebSocket against its address (records pss->peer). */
void pl_edge_peer_add(pl_edge_t *self, struct lws *wsi, pss_t *pss);
void pl_edge_peer_remove(pl_edge_t *self, pss_t *pss);
/* Starts (or, with running false, stops) the deadline for a request body. */
void pl_edge_body_deadline(pl_edge_t *self, struct lws *wsi, pss_t *pss, bool running);

/* edge_http.c */
int pl_edge_http_callback(pl_edge_t *self, struct lws *wsi, enum lws_callback_reasons reason, pss_t *pss, void *in,
                          size_t len);
void pl_edge_http_reply(pl_edge_t *self, pl_env_t *env);
void pl_edge_stats_now(pl_edge_t *self);

#endif
