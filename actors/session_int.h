/*  session_int — what the session actor's three files share (session.c:
    lifecycle and membership; session_turn.c: turns; session_http.c: the
    HTTP requests). Internal to the session actor: one shard's state, used
    only from its worker thread. */
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

typedef struct {
    char id[PL_ID_MAX + 1];
    char *model, *kind, *name, *system;
    double created;
    int64_t seq;
    s_member_t *members;
    size_t nmembers;
    pl_histent_t *hist;
    size_t nhist;
    /* the running turn */
    bool running;
    char respid[24];
    char turn_msgid[24]; /* the user message being answered */
    char *turn_model;
    int64_t chunks;
    double started;
    char *answer;
    size_t answer_len;
    /* turns waiting for it, FIFO */
    s_turn_t *pending;
    size_t npending;
} s_session_t;

typedef struct {
    const pl_actor_t *actor;
    const pl_config_t *cfg;
    pl_map_t *sessions;
    size_t max_sessions; /* this shard's share */
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
void session_handle_chat(self_t *self, s_session_t *s, pl_env_t *env);
void session_handle_chunk(self_t *self, s_session_t *s, pl_env_t *env);
void session_handle_done(self_t *self, s_session_t *s, pl_env_t *env);
void session_cancel_turn(self_t *self, s_session_t *s);
void session_handle_cancel(self_t *self, s_session_t *s, pl_env_t *env);
void session_handle_http(self_t *self, pl_env_t *env);

#endif
