/*  pl_upstream — a model shard's HTTP streams to model APIs (libcurl multi).

    One per model shard, used only from that shard's worker thread. Driven
    by the worker's poll: pl_upstream_fds() lists curl's sockets,
    pl_upstream_on_fd() and pl_upstream_on_timer() run curl, and the sink
    gets each content delta and the end of each stream. The wire formats
    are protocol/pl_vendor; framing is pl_sse / pl_ndjson. */
#ifndef PL_UPSTREAM_H
#define PL_UPSTREAM_H

#include <stdint.h>

#include "../../protocol/pl_envelope.h"
#include "../../protocol/pl_models.h"
#include "../../transport/pl_runtime.h"

typedef struct pl_upstream pl_upstream_t;

/* Sink callbacks run inside curl's callbacks: they must not call any
   pl_upstream_* function (curl refuses recursive calls). */
typedef struct {
    /* A content delta of stream `tag` (text borrowed). */
    void (*chunk)(void *arg, uint64_t tag, const char *text);
    /* Stream `tag` ended: finish is a pl_finish_t; `error` (may be NULL) is
       shown to clients; `status` the upstream's HTTP status (0: none);
       `retry_after` its Retry-After in seconds (0: none); `malformed` the
       stream items that could not be read (skipped). */
    void (*done)(void *arg, uint64_t tag, int64_t finish, int64_t prompt_tokens, int64_t completion_tokens,
                 const char *error, long status, long retry_after, size_t malformed);
} pl_upstream_sink_t;

typedef struct {
    long connect_ms;    /* connection set-up */
    long first_byte_ms; /* request sent → first byte of the answer */
    long idle_ms;       /* silence between bytes once started */
    long total_ms;   /* whole answer */
    size_t max_event; /* one SSE event / NDJSON line */
} pl_upstream_limits_t;

pl_upstream_t *pl_upstream_new(const pl_upstream_sink_t *sink, void *arg, const pl_upstream_limits_t *lim);
/* Aborts every stream (no sink calls) and frees. */
void pl_upstream_destroy(pl_upstream_t **self_p);
/* Starts streaming the answer to `gen` from `model`. 0, or a negative
   pl_err (no sink call). */
int pl_upstream_start(pl_upstream_t *self, uint64_t tag, const pl_model_t *model, const pl_env_t *gen);
/* Aborts stream `tag` (its connection is closed; no sink call). */
void pl_upstream_cancel(pl_upstream_t *self, uint64_t tag);
int pl_upstream_fds(pl_upstream_t *self, pl_pollfd_t *fds, int max);
void pl_upstream_on_fd(pl_upstream_t *self, const pl_pollfd_t *fd);
/* The next deadline (pl_now_ms clock: curl's, or a transfer's idle limit)
   or -1. */
int64_t pl_upstream_deadline(const pl_upstream_t *self);
void pl_upstream_on_timer(pl_upstream_t *self, int64_t now);
size_t pl_upstream_active(const pl_upstream_t *self);

#endif
