/*  pl_backend — what the model actor needs of a model backend.

    A backend turns one GENERATE (the whole history, system prompt and
    parameters) into a stream of chunks. The model actor owns the streams and
    steps them when their deadline comes; a backend never sends envelopes
    itself. Today: `echo` (built in, offline). Network backends (issue 3)
    plug in here and add socket readiness to the deadline. */
#ifndef PL_BACKEND_H
#define PL_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

#include "../../protocol/pl_envelope.h"

typedef enum { PL_STEP_CHUNK = 0, PL_STEP_DONE, PL_STEP_WAIT } pl_step_t;

typedef struct {
    const char *name;
    /* Starts a stream for `gen` (borrowed). NULL on out-of-memory. */
    void *(*start)(const pl_env_t *gen, long delay_ms, int64_t now);
    /* When the stream next wants a step (pl_now_ms clock). */
    int64_t (*next)(const void *st);
    /* PL_STEP_CHUNK: *text (caller frees) and *final are set.
       PL_STEP_DONE: *finish is set; the stream is over.
       PL_STEP_WAIT: nothing yet. */
    pl_step_t (*step)(void *st, int64_t now, char **text, bool *final, int64_t *finish);
    void (*usage)(const void *st, int64_t *prompt_tokens, int64_t *completion_tokens);
    void (*free)(void *st);
} pl_backend_ops_t;

extern const pl_backend_ops_t pl_backend_echo;

#endif
