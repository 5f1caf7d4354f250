/*  worker_int — what worker.c (connections, phases) and turns.c (sessions,
    turns, accounting) share. One worker per process, one thread: all of
    it runs on the lws service loop. */
#ifndef PB_WORKER_INT_H
#define PB_WORKER_INT_H

#include <libwebsockets.h>

#include "bench.h"

/* Unfinished turns a session may have (sent, and not yet answered to every
   member and confirmed): past it a chat is skipped and counted `behind`. */
#define PB_TURNS_MAX 64
/* Longest session id kept (parleyd's are 17 characters). */
#define PB_SID_MAX 64
/* Longest chat frame the bench renders (words, the id, the JSON). */
#define PB_TX_MAX (48 * 1024)

typedef enum {
    PB_C_IDLE,       /* not yet connected */
    PB_C_CONNECTING, /* TCP and the upgrade */
    PB_C_HELLO,      /* upgraded; waiting for `connected` */
    PB_C_OPEN,
    PB_C_CLOSING, /* the bench closed it */
    PB_C_CLOSED,
    PB_C_FAILED,
} pb_cstate_t;

/* Frames a connection has waiting for WRITEABLE (besides chats). */
enum { PB_TX_CREATE = 1, PB_TX_JOIN = 2, PB_TX_PING = 4, PB_TX_CLOSE = 8 };

struct pb_worker;
typedef struct pb_sess pb_sess_t;

typedef struct {
    struct pb_worker *w;
    struct lws *wsi;
    pb_sess_t *sess; /* NULL: a plain connection (connect, stream --idle) */
    uint32_t gidx;   /* global number: decides the source address */
    uint16_t member; /* its index in the session */
    uint8_t state;   /* pb_cstate_t */
    uint8_t tx;      /* PB_TX_* */
    uint16_t chats;  /* chats waiting for WRITEABLE (member 0) */
    bool pinged, ponged;
    int close_code; /* the server's close frame, 0 if none */
    char *rx;       /* a message arriving in pieces */
    uint32_t rx_len, rx_cap;
    /* members: where this member is in the session's event stream */
    int64_t last_seq;           /* -1: not known yet */
    uint32_t ann[PB_TURNS_MAX]; /* turns announced (message_added) and not yet started */
    uint8_t ann_head, ann_len;
    bool cur_first;     /* the current answer's first chunk is still to come */
    uint32_t cur;       /* turn being answered; 0: none */
    int64_t cur_chunks; /* its last chunk_number */
} pb_conn_t;

/* A turn's frames are counted here as they arrive and added to the
   worker's totals (received, expected, chunks, coalesced) only when the
   turn is accounted for, once: so the totals always cover the same turns. */
typedef struct {
    int64_t sent_us;      /* 0: assigned, not yet written */
    int64_t total_chunks; /* from response_complete; -1 until then */
    uint64_t chunks;      /* chunks received, every member (a merged frame counts for each) */
    uint64_t coalesced;   /* chunks the server merged, every member */
    uint32_t received;    /* frames received, every member */
    uint32_t max_chunk;   /* the highest chunk_number any member saw */
    uint32_t completes;   /* members that got its response_complete */
    bool measured;        /* sent in the measured window */
    bool refused;         /* the server answered the chat with an error */
    bool confirmed;       /* the sender got delivery_confirmation */
} pb_turn_t;

struct pb_sess {
    struct pb_worker *w;
    pb_conn_t *m; /* members m[0 .. members) */
    uint32_t gno; /* global session number */
    uint32_t members, joined;
    bool created, ready, broken, settled;
    char id[PB_SID_MAX];
    uint32_t base, next, wnext; /* turns [base, next) unfinished; wnext: the next to write */
    pb_turn_t turns[PB_TURNS_MAX];
    lws_sorted_usec_list_t sul; /* the chatter's timer */
    int64_t slot0;
    uint64_t slot;
};

typedef struct pb_worker {
    const pb_opts_t *o;
    pb_slice_t sl;
    struct lws_context *ctx;
    pb_conn_t *conns;
    size_t nconns;
    pb_sess_t *sess;
    size_t nsess;
    /* opening */
    size_t next_connect, connecting, settled, sessions_settled, open_now;
    size_t live;                /* connections with a wsi: connecting, open or closing */
    size_t ping_waiting;        /* pinged, no pong yet, still open */
    size_t close_next, closing; /* CLOSE: the next to close; closes in flight */
    int64_t connect_t0;
    lws_sorted_usec_list_t connect_sul;
    bool pumping, again;
    /* phases */
    int phase;
    bool phase_reported, finished, tearing_down;
    int64_t t_start, t_measure, t_stop, t_deadline; /* µs, monotonic */
    int64_t interval_us;                            /* stream: --chunk-interval-ms */
    uint64_t outstanding;                           /* unfinished turns, all sessions */
    bool turns_finished;                            /* pb_turns_finish ran: the accounting is closed */
    lws_sorted_usec_list_t tick;
    /* results */
    pb_counts_t c;
    pb_errs_t errs;
    pb_hist_t lat, ttfc;
    pb_report_t rep;
    int cmd_fd, rep_fd;
    /* the chat's words after the turn tag: " w2 w3 ... wW" */
    char *tail;
    size_t tail_len;
    unsigned char txbuf[LWS_PRE + PB_TX_MAX];
} pb_worker_t;

/* worker.c */
/* Checks whether the worker's phase is done (deadlines included). */
void pb_worker_check(pb_worker_t *w);
/* Reports a reason the whole run must stop; the worker ends. */
void pb_worker_fatal(pb_worker_t *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* conn.c */
/* Queues frames (PB_TX_*; 0: a chat was queued) for the next WRITEABLE. */
void pb_worker_send(pb_conn_t *k, unsigned tx);
/* Opens the connections that are due. */
void pb_conn_pump(pb_worker_t *w);
/* Closes open connections, a bounded number at once. */
void pb_conn_close_pump(pb_worker_t *w);
/* Counts an error frame (its code and message) among the errors. */
void pb_conn_error_frame(pb_worker_t *w, const char *buf, size_t len);
int pb_conn_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len);

/* turns.c */
int pb_turns_init(pb_worker_t *w);
void pb_turns_free(pb_worker_t *w);
/* A member's `connected` arrived. */
void pb_turns_open(pb_conn_t *k);
/* A member failed or was dropped: its session can no longer complete. */
void pb_turns_lost_member(pb_conn_t *k);
/* A frame for a member (anything but connected and pong). */
void pb_turns_frame(pb_conn_t *k, const pb_frame_t *f, const char *buf, size_t len, int64_t now);
/* Member 0 may write a chat: renders it into w->txbuf + LWS_PRE, returns
   its length (0: nothing to send). */
size_t pb_turns_render_chat(pb_conn_t *k, int64_t now);
size_t pb_turns_render_setup(pb_conn_t *k, unsigned what);
void pb_turns_run(pb_worker_t *w);
/* The measured run is over (drained or out of time): account for what
   never finished, and close the accounting (frames after it count only
   in frames_total). */
void pb_turns_finish(pb_worker_t *w);
bool pb_turns_drained(const pb_worker_t *w);

#endif
