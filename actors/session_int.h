/*  session_int — what the session actor's files share (session.c:
    lifecycle and membership; session_turn.c: turns; session_http.c: the
    HTTP requests; session_store.c: the store — loading, eviction, the
    recent-event ring and resuming by seq). Internal to the session actor:
    one shard's state, used only from its worker thread. */
#ifndef SESSION_INT_H
#define SESSION_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "../protocol/pl_envelope.h"
#include "../protocol/pl_limits.h"
#include "../transport/pl_map.h"
#include "pl_actors.h"
#include "pl_config.h"

typedef struct {
    uint64_t conn;
    bool typing;
} s_member_t;

typedef struct {
    pl_env_t chat; /* the CHAT envelope (its MSGID set), kept for its parameters */
} s_turn_t;

/* One recent persistent event, encoded as it was broadcast. */
typedef struct {
    int64_t seq;
    char *buf;
    size_t len;
} s_recent_t;

/* A connection resuming from `last`, waiting for events from the store. */
typedef struct {
    uint64_t conn;
    int64_t last; /* the newest seq it has been sent */
    int64_t replayed;
} s_joiner_t;

typedef struct {
    char id[PL_ID_MAX + 1];
    char *model, *kind, *name, *system;
    double created;
    int64_t seq;
    int64_t nmessages; /* in the store; hist holds the newest --max-history */
    int64_t last_active; /* pl_now_ms: idle sessions are evicted */
    s_member_t *members;
    size_t nmembers;
    pl_histent_t *hist;
    size_t nhist;
    /* the newest --replay-ring persistent events (contiguous seqs) */
    s_recent_t *ring;
    size_t ring_cap, ring_head, ring_len, ring_bytes;
    /* chunk events not yet sent to the store (one row per PL_CHUNKS_PER_ROW) */
    pl_env_t chunks_out;
    /* connections resuming through the store */
    s_joiner_t *joiners;
    size_t njoiners;
    /* the running turn */
    bool running;
    char respid[24];
    char turn_msgid[24]; /* the user message being answered */
    int64_t turn_ord;    /* its order key: the answer's is one more */
    int64_t start_seq;   /* seq of response_start */
    int64_t chunk_seq;   /* seq of the newest chunk */
    char *turn_model;
    int64_t chunks;
    double started;
    char *answer;
    size_t answer_len;
    /* turns waiting for it, FIFO */
    s_turn_t *pending;
    size_t npending;
} s_session_t;

/* Envelopes waiting for a session to load from the store. */
typedef struct {
    pl_env_t *v;
    size_t n;
} s_parked_t;

typedef struct {
    const pl_actor_t *actor;
    const pl_config_t *cfg;
    pl_map_t *sessions;
    pl_map_t *loading; /* session id → s_parked_t */
    bool missing;      /* re-dispatching for a session the store lacks */
    size_t max_sessions; /* this shard's share */
    int64_t next_sweep;  /* pl_now_ms of the next eviction sweep */
    bool draining;       /* SIGTERM: no new turns */
    int64_t stats[PL_STAT_COUNT_];
} self_t;

void session_hist_free(pl_histent_t *e);
void session_free(void *p);
void session_to_edge(self_t *self, const pl_env_t *env);
void session_error(self_t *self, const pl_env_t *req, int code, const char *text);
void session_member_gone(self_t *self, uint64_t conn, const char *session);
void session_broadcast(self_t *self, s_session_t *s, pl_env_t *ev);
s_member_t *session_member(s_session_t *s, uint64_t conn);
void session_typing(self_t *self, s_session_t *s, s_member_t *m, bool typing);
bool session_model_ok(self_t *self, const char *model);
char *session_dup(const char *s);
s_session_t *session_create(self_t *self, const pl_env_t *req, int *code, const char **why);
/* Where the newest messages before history index `end` start, when their
   texts together fit `budget` bytes (the newest one always, with
   `at_least_one`). Turns (--max-context) and GET replies use it. */
size_t session_hist_window(const s_session_t *s, size_t end, size_t budget, bool at_least_one);
/* Puts the newest messages (PL_HTTP_HISTORY_MAX bytes of them) in env's
   HIST, and FLAG: truncated (older ones left out, here or in the store). */
void session_hist_newest(const s_session_t *s, pl_env_t *env);
void session_handle_chat(self_t *self, s_session_t *s, pl_env_t *env);
void session_handle_chunk(self_t *self, s_session_t *s, pl_env_t *env);
void session_handle_done(self_t *self, s_session_t *s, pl_env_t *env);
void session_cancel_turn(self_t *self, s_session_t *s, int64_t finish);
void session_handle_cancel(self_t *self, s_session_t *s, pl_env_t *env);
void session_handle_http(self_t *self, pl_env_t *env);
void session_finish_turn(self_t *self, s_session_t *s, int64_t finish, const pl_env_t *done, const char *error);
int64_t session_running(self_t *self);
void session_drained(self_t *self);
void session_send_joined(self_t *self, s_session_t *s, pl_msg_t type, uint64_t conn, const pl_env_t *extra);
bool session_add_member(self_t *self, s_session_t *s, uint64_t conn);
void session_member_event(self_t *self, s_session_t *s, uint64_t conn, bool joined);

/* session_store.c */
/* Sends `env` to the store actor; 0 or < 0 (counted by the runtime). */
int session_to_store(self_t *self, const pl_env_t *env);
void session_store_new(self_t *self, s_session_t *s);
void session_ring_free(s_session_t *s);
/* Sends a persistent event to the store: chunks are gathered into one row
   per PL_CHUNKS_PER_ROW; any other event sends the gathered ones first, so
   rows never interleave. */
void session_store_event(self_t *self, s_session_t *s, pl_msg_t type, int64_t seq, const char *buf, size_t len);
void session_flush_chunks(self_t *self, s_session_t *s);
/* Keeps an encoded persistent event (malloc'd: the ring takes it) in the
   session's recent ring. */
void session_ring_push(self_t *self, s_session_t *s, int64_t seq, char *buf, size_t len);
/* True when `env` was parked (or answered) because its session is being,
   or must be, loaded from the store. */
bool session_park(self_t *self, pl_env_t *env);
void session_handle_loaded(self_t *self, pl_env_t *env);
void session_handle_events(self_t *self, pl_env_t *env);
/* join_session with last_seq: replays what the connection missed. */
void session_resume(self_t *self, s_session_t *s, pl_env_t *env);
void session_forget_joiner(s_session_t *s, uint64_t conn);
/* Frees sessions idle (no members, no turns) for --cleanup-interval. */
void session_sweep(self_t *self, int64_t now);
/* Makes room for one more session in memory (evicting the longest-idle
   one); false when every session is busy. */
bool session_room(self_t *self);

#endif
