/*  edge_int — what edge.c and edge_http.c share. Only the edge thread
    touches any of it ("service thread only"), except `ctx` under `ring_lock`. */
#ifndef EDGE_INT_H
#define EDGE_INT_H

#include <libwebsockets.h>
#include <pthread.h>
#include <stdbool.h>

#include "../protocol/pl_dialect.h"
#include "../protocol/pl_http.h"
#include "../protocol/pl_limits.h"
#include "../transport/pl_map.h"
#include "edge.h"

/* A serialised outbound frame, shared by every connection it is queued on. */
typedef struct {
    int refs;
    size_t len;
    unsigned char buf[]; /* LWS_PRE headroom, then len bytes of JSON */
} s_frame_t;

typedef struct pss {
    struct lws *wsi;
    bool is_ws;
    /* WebSocket */
    uint64_t conn;
    s_frame_t **q; /* ring of cfg->out_queue frames */
    size_t qhead, qlen;
    char *rx;
    size_t rxlen, rxtotal;
    bool rx_binary;
    bool discarding; /* over the hard limit: reading to the end, then 1009 */
    int close_code; /* nonzero: close with it at the next writeable */
    char (*sessions)[PL_ID_MAX + 1]; /* grows: the conn actor enforces the cap */
    size_t nsessions, capsessions;
    /* HTTP */
    uint64_t req;
    pl_method_t method;
    pl_http_match_t match;
    char *body;
    size_t bodylen;
    bool body_too_big;
    int waiting; /* replies still expected from actors */
    pl_env_t acc; /* gathered replies */
    int status;
    const char *allow;
    const char *ctype;
    unsigned char *resp; /* LWS_PRE headroom, then resplen bytes */
    size_t resplen;
    bool responding;
} pss_t;

struct pl_edge {
    const pl_config_t *cfg;
    pl_runtime_t *rt;
    pthread_t thread;
    bool started;
    pthread_mutex_t ring_lock;
    struct lws_context *ctx; /* published under ring_lock for the doorbell */
    pl_mailbox_t *box;
    pl_outbox_t *out;
    pl_map_t *conns; /* conn name → pss */
    pl_map_t *index; /* session id → s_members_t: who to fan out to */
    pl_map_t *http;  /* request id → pss awaiting replies */
    uint64_t next_req;
    bool stopping;
    int start_rc;
    pthread_mutex_t start_lock;
    pthread_cond_t start_cond;
    bool start_done;
    double started_at;
    pl_dialect_limits_t lim;
    pl_edge_stats_t stats;
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

/* edge_http.c */
int pl_edge_http_callback(pl_edge_t *self, struct lws *wsi, enum lws_callback_reasons reason, pss_t *pss,
                          void *in, size_t len);
void pl_edge_http_reply(pl_edge_t *self, pl_env_t *env);
void pl_edge_stats_now(pl_edge_t *self);

#endif
