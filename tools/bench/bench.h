/*  bench — what the files of parley-bench share (internal).

    main.c     the parent: forks the workers, drives the phases, progress
    options.c  the option table, parsing, --help
    report.c   /proc readings, merging the workers' results, the summary
    hist.c     the latency histogram (log-linear, mergeable)
    scan.c     the bounded scanner that reads a server frame's few fields
    worker.c   one worker process: its loop, lws context and phases
    conn.c     one connection: opening, frames in and out, closing
    turns.c    the fanout and stream scenarios: sessions, turns, accounting

    Processes: the parent parses the options and forks --procs workers. A
    worker owns a slice of the connections (a session's members are always
    in one worker), one lws context and one thread. Parent and worker talk
    over two pipes: pb_cmd_t down (start a phase), pb_report_t up (progress
    every S_PROGRESS_MS, "phase done", the final result). Times are
    CLOCK_MONOTONIC microseconds, which every process shares. */
#ifndef PB_BENCH_H
#define PB_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ------------------------------------------------------------ options -- */

typedef enum { PB_CONNECT, PB_FANOUT, PB_STREAM, PB_NSCENARIOS } pb_scenario_t;

typedef struct {
    /* common */
    char url[256];
    char host[128]; /* from --url */
    int port;
    char path[128];
    bool spread; /* the host is IPv4 loopback: connections spread over 127.x source addresses */
    long pid;    /* 0: none */
    bool json, quiet;
    long procs; /* 0 before the default is applied */
    long per_address;
    double timeout; /* seconds; 0 before the default is applied */
    pb_scenario_t scenario;
    /* connect */
    long connections;
    double conn_rate; /* connections/s, 0: as fast as possible */
    double hold;      /* s */
    /* fanout */
    long sessions, members;
    double chat_rate; /* chats/s per session */
    long words;
    /* stream */
    long chats, chunks, idle;
    double chunk_interval_ms;
    /* fanout and stream */
    double duration, warmup; /* s */
    double drain;            /* s: how long answers in flight may take after the window */
} pb_opts_t;

/* Parses argv into `o`. Returns 0, 1 after --help (exit 0) or -1 after a
   usage error it has printed (exit 2). */
int pb_opts_parse(pb_opts_t *o, int argc, char **argv);
const char *pb_scenario_name(pb_scenario_t s);
/* Every connection the scenario opens. */
long pb_opts_connections(const pb_opts_t *o);
/* Writes the options as members of the JSON object `obj` (a cJSON *). */
void pb_opts_json(const pb_opts_t *o, void *obj);

/* --------------------------------------------------------- histogram -- */

/* Microseconds: exact below PB_HIST_LINEAR, then PB_HIST_SUB buckets per
   power of two (relative error <= 1/256 at the bucket's middle), up to
   2^PB_HIST_TOP_EXP µs (67 s); larger values land in the last bucket (the
   max stays exact). */
#define PB_HIST_LINEAR 1024
#define PB_HIST_SUB_BITS 7
#define PB_HIST_SUB (1 << PB_HIST_SUB_BITS)
#define PB_HIST_TOP_EXP 26
#define PB_HIST_BUCKETS (PB_HIST_LINEAR + (PB_HIST_TOP_EXP - 10) * PB_HIST_SUB)

typedef struct {
    uint64_t count;
    int64_t max;
    uint64_t n[PB_HIST_BUCKETS];
} pb_hist_t;

void pb_hist_add(pb_hist_t *h, int64_t us);
void pb_hist_merge(pb_hist_t *into, const pb_hist_t *from);
/* The value at quantile q (0..1]: the middle of its bucket, at most max;
   0 when empty. */
int64_t pb_hist_quantile(const pb_hist_t *h, double q);

/* ----------------------------------------------------------- scanner -- */

typedef enum {
    PB_F_OTHER,
    PB_F_CONNECTED,
    PB_F_SESSION_CREATED,
    PB_F_SESSION_JOINED,
    PB_F_MESSAGE_ADDED, /* session_update/message_added */
    PB_F_UPDATE,        /* another session_update (presence, typing: seq does not advance) */
    PB_F_STATUS,
    PB_F_RESPONSE_START,
    PB_F_CHUNK,
    PB_F_RESPONSE_COMPLETE,
    PB_F_DELIVERY,
    PB_F_PONG,
    PB_F_ERROR,
} pb_ftype_t;

/* The top-level fields of a server frame the bench needs. Integers are -1
   when absent; strings point into the frame (raw JSON, escapes left). */
typedef struct {
    pb_ftype_t type;
    bool ok; /* the frame is one well-formed JSON object (as far as scanned) */
    bool is_final;
    int64_t seq, chunk_number, total_chunks, id;
    const char *sid;
    size_t sid_len;
    const char *code;
    size_t code_len;
} pb_frame_t;

/* Scans one frame: a single pass over at most `len` bytes, nesting at
   most PB_SCAN_DEPTH deep; nested objects are skipped. */
#define PB_SCAN_DEPTH 16
void pb_scan(const char *buf, size_t len, pb_frame_t *f);
/* The turn number a chat message carries ("t<k> ..."), read from a
   message_added frame's message.content; 0 if none. */
uint32_t pb_scan_turn_tag(const char *buf, size_t len);

/* --------------------------------------------------- counts, reports -- */

/* Distinct error texts kept per process (more are only counted). */
#define PB_ERRS_MAX 16
#define PB_ERR_TEXT 160

typedef struct {
    unsigned n;
    struct {
        char text[PB_ERR_TEXT];
        uint64_t count;
    } e[PB_ERRS_MAX];
    uint64_t other; /* errors whose text did not fit */
} pb_errs_t;

void pb_errs_add(pb_errs_t *e, uint64_t count, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void pb_errs_merge(pb_errs_t *into, const pb_errs_t *from);
uint64_t pb_errs_total(const pb_errs_t *e);

/* A worker's counters; the parent sums them (times: min/max). */
typedef struct {
    uint64_t planned;            /* connections to open */
    uint64_t opened;             /* `connected` arrived */
    uint64_t refused;            /* HTTP 503 to the upgrade */
    uint64_t failed;             /* any other failure to connect */
    uint64_t dropped;            /* closed before the bench closed it */
    uint64_t open_now;           /* open at the time of the report */
    uint64_t pings, pongs;       /* the final ping on every connection */
    uint64_t sessions_ready;     /* fanout/stream: set up */
    uint64_t frames_sent;        /* every frame the bench sent */
    uint64_t frames_total;       /* every frame received */
    uint64_t frames_window;      /* received during the measured window */
    uint64_t chunks_window;      /* chunks received during the window (merged ones count each) */
    uint64_t received, expected; /* frames of measured turns */
    uint64_t chunks_received;    /* chunks of measured turns (a merged frame counts for each) */
    uint64_t chunks_expected;    /* their response_completes' total_chunks, every member */
    uint64_t lost, coalesced;
    uint64_t turns_sent, turns_completed, turns_behind, turns_refused; /* measured turns */
    /* measured turns still unfinished when the drain ended */
    uint64_t turns_unfinished;
    uint64_t early;           /* stream: chunks more than 1 ms before their ideal time */
    int64_t early_us;         /* the earliest (most negative lateness) */
    int64_t first_connect_us; /* 0: none */
    int64_t last_connected_us;
    double cpu_s; /* the worker's user+system CPU (in the result) */
} pb_counts_t;

void pb_counts_merge(pb_counts_t *into, const pb_counts_t *from);

typedef enum { PB_PH_OPEN = 1, PB_PH_RUN, PB_PH_PING, PB_PH_CLOSE, PB_PH_DONE } pb_phase_t;
const char *pb_phase_name(int phase);

typedef enum { PB_MSG_PROGRESS = 1, PB_MSG_PHASE_DONE, PB_MSG_RESULT, PB_MSG_FATAL } pb_msg_t;

/* Worker → parent, always whole (a blocking write; the parent reads it
   whole). */
typedef struct {
    uint32_t msg;   /* pb_msg_t */
    uint32_t phase; /* the worker's phase */
    pb_counts_t c;
    pb_errs_t errs;
    char fatal[PB_ERR_TEXT]; /* PB_MSG_FATAL: why the run must stop */
    pb_hist_t lat, ttfc;
} pb_report_t;

/* Parent → worker. */
typedef struct {
    uint32_t phase;     /* start it */
    int64_t t_start_us; /* PB_PH_RUN: when sending starts */
} pb_cmd_t;

/* ------------------------------------------------------------ worker -- */

/* What one worker owns: connections [gbase, gbase + nconns) of the global
   numbering (fanout: sessions [s0, s0 + nsess), `members` connections
   each; stream: `nsess` streamers from global connection gbase, then
   `nidle` idle connections from global connection idle_gbase). */
typedef struct {
    unsigned no;
    size_t gbase, nconns;
    size_t s0, nsess;
    size_t idle_gbase, nidle;
    double conn_rate; /* this worker's share of --rate (connect) */
} pb_slice_t;

/* Runs a worker to its end; returns the process's exit status. */
int pb_worker_main(const pb_opts_t *o, const pb_slice_t *s, int cmd_fd, int rep_fd);

/* ------------------------------------------------------------ report -- */

typedef struct {
    long rss_kib; /* -1: unknown */
    double cpu_s; /* utime + stime; -1: unknown */
} pb_proc_t;

/* Reads /proc/PID/status (VmRSS) and /proc/PID/stat (utime, stime). */
int pb_proc_read(long pid, pb_proc_t *out);

/* Everything the summary says. */
typedef struct {
    const pb_opts_t *o;
    pb_counts_t c;
    pb_errs_t errs;
    pb_hist_t lat, ttfc;
    pb_proc_t before, after;
    double bench_cpu_s;
    double window_s; /* fanout/stream: the measured window */
    bool timed_out;
} pb_result_t;

/* Whether the run passed; `why` gets the failures in words. */
bool pb_result_ok(const pb_result_t *r, char *why, size_t size);
void pb_report_human(const pb_result_t *r, FILE *out);
void pb_report_json(const pb_result_t *r, FILE *out);

/* Monotonic microseconds (CLOCK_MONOTONIC: the same clock in every process). */
int64_t pb_now_us(void);

#endif
