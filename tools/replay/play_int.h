/*  play_int — what the files of parley-replay play share (internal).

    play.c       the command: options, URL, checks, --out, summary
    play_run.c   the lws runtime: copies, connections, callbacks, signals
    play_plan.c  a capture turned into the causal event plan
    play_ids.c   the id map: original → replayed ids, learned and applied

    Everything here runs on the one lws service thread. */
#ifndef RP_PLAY_INT_H
#define RP_PLAY_INT_H

#include <libwebsockets.h>

#include "replay.h"

/* ---------------------------------------------------------------- plan -- */

typedef enum { RP_EV_OPEN, RP_EV_FRAME, RP_EV_CLOSE } rp_ev_kind_t;

/* One client event of the capture, in file order. */
typedef struct {
    rp_ev_kind_t kind;
    size_t conn;             /* index into the capture's conns */
    const pl_cap_rec_t *rec; /* OPEN/FRAME/CLOSE record; NULL for an implied open or close */
    int64_t at_us;           /* offset from the capture's start (never decreasing) */
    size_t gate;             /* OUT frames (file order) whose counterparts must have arrived */
    size_t frame_no;         /* FRAME: its number among the connection's IN frames, from 1 */
} rp_event_t;

/* One OUT (server) frame of the capture, in file order. */
typedef struct {
    size_t conn; /* index into the capture's conns */
    size_t nth;  /* it is that connection's nth OUT frame, from 1 */
} rp_out_t;

/* What the plan knows of one connection of the capture. */
typedef struct {
    char *path;                /* NUL-terminated request path */
    const pl_cap_rec_t **outs; /* its OUT frames, in order */
    size_t nout;
    size_t nin;         /* its IN frames */
    bool server_closes; /* the capture's CLOSE says the server closed it */
    bool seen, closed;  /* while building */
} rp_pconn_t;

typedef struct {
    const rp_capture_t *cap; /* borrowed: records point into it */
    rp_pconn_t *conns;       /* parallel to cap->conns */
    rp_event_t *ev;
    size_t nev;
    rp_out_t *out;
    size_t nout;
    int64_t duration_us;
} rp_plan_t;

/* Builds the plan of `cap`, which must outlive it. 0; or -1 with `err`. */
int rp_plan_build(rp_plan_t *pl, const rp_capture_t *cap, char *err, size_t errsize);
void rp_plan_free(rp_plan_t *pl);

/* -------------------------------------------------------------- id map -- */

/* Ids one copy learns, at most: a bound well above any real capture's. */
#define RP_IDS_MAX (1u << 20)

typedef struct {
    char *from, *to;
} rp_idpair_t;

/* Open addressing, first mapping wins: an id is learned from the first
   frame that shows it, the one least likely to be misaligned. */
typedef struct {
    rp_idpair_t *slot;
    size_t cap, n;
    bool full; /* RP_IDS_MAX reached: said once */
} rp_idmap_t;

/* Learns from one aligned pair of server frames: `orig` from the capture,
   `data` as received. 0; -1 when the map is full (or out of memory). */
int rp_ids_learn(rp_idmap_t *m, const pl_cap_rec_t *orig, const char *data, size_t len, bool binary);
/* The text to send for a captured client frame: NULL when it goes as
   captured, else a string the caller frees with cJSON_free. */
char *rp_ids_apply(const rp_idmap_t *m, const pl_cap_rec_t *r);
void rp_ids_free(rp_idmap_t *m);

/* ------------------------------------------------------------- runtime -- */

struct rp_copy; /* play_run.c */

typedef struct rp_play {
    /* options */
    double speed;
    bool fast;
    unsigned multiply;
    int64_t timeout_us;
    const char *out_path, *file, *url;
    char host[256];    /* address to connect to (no brackets) */
    char hosthdr[300]; /* Host header: host:port */
    int port;
    /* state */
    rp_capture_t cap;
    rp_plan_t plan;
    struct lws_context *ctx;
    struct rp_copy *copies;
    unsigned copies_left;
    bool done;
    bool tearing_down;           /* the lws context is being destroyed: callbacks only record */
    lws_sorted_usec_list_t tick; /* wakes the service loop, so a signal is seen */
    rp_writer_t out;
    bool out_open, out_failed;
    uint64_t out_seq;
    int64_t start_us; /* monotonic */
    /* results */
    uint64_t connected, failed_conns, sent, received, bytes_sent, bytes_received, failures, warnings;
    uint64_t greetings; /* frames received before a mid-way connection's first event */
    int64_t wall_us;    /* how long the replay ran */
    int interrupted;    /* the signal (SIGINT, SIGTERM) that stopped it; 0 if none */
    uint64_t unsent;    /* events of the plan (all copies) the interruption left unsent */
} rp_play_t;

/* Makes the copies and the lws context. 0, or -1 (out of memory, no
   context). */
int rp_play_start(rp_play_t *p);
/* Runs every copy to its end, or until SIGINT/SIGTERM (caught for the
   duration): then the copies stop issuing events, close their connections
   (1001) and the run returns once they are closed, or after a short wait. */
void rp_play_run(rp_play_t *p);
/* Destroys the lws context (connections still open are dropped, and
   recorded closed in --out) and the copies. --out stays open. */
void rp_play_stop(rp_play_t *p);

#endif
