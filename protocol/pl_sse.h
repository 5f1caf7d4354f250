/*  pl_sse — an incremental Server-Sent Events parser (WHATWG HTML, "event
    stream interpretation"), for the model backends that stream SSE
    (OpenAI-compatible chat.completions, Gemini alt=sse).

    Pure: bytes in, events out through a callback; no I/O, no global state.
    The stream may be cut anywhere between feeds (even inside a CRLF or the
    BOM): the events are the same as for one feed of the whole. Memory is
    bounded by max_event: an event whose data, or any line, would exceed it
    is dropped whole and counted, and the parser resyncs at the next blank
    line. Any bytes are accepted (NULs, invalid UTF-8): they are passed
    through, never checked. One parser per stream, used by one thread. */
#ifndef PL_SSE_H
#define PL_SSE_H

#include <stddef.h>

typedef struct pl_sse pl_sse_t;

/* One dispatched event. All three strings are borrowed from the parser and
   valid only during the callback; all are NUL-terminated. */
typedef struct {
    const char *event; /* "" when no event: field → "message" semantics left to caller */
    const char *data;  /* data lines joined with '\n', no trailing '\n'; NUL-terminated */
    size_t data_len;   /* data may hold NULs: use this, not strlen */
    const char *id;    /* last event id seen ("" if none) */
} pl_sse_event_t;

/* Called per dispatched event; return 0 to go on, nonzero to stop
   (pl_sse_feed then returns that value). */
typedef int (*pl_sse_fn)(void *arg, const pl_sse_event_t *ev);

/* A parser whose events (their data) and lines are at most `max_event`
   bytes (a line counts its field name, not its line end). NULL when
   max_event is 0 or absurd (≥ SIZE_MAX / 4), or out of memory. Buffers grow
   on demand up to ~max_event each. The parser is the caller's. */
pl_sse_t *pl_sse_new(size_t max_event);
/* Frees the parser and sets *self_p to NULL. NULL or *self_p NULL: no-op. */
void pl_sse_destroy(pl_sse_t **self_p);

/* Parses `len` bytes (borrowed), calling `fn` (may be NULL) once per event.
   0; or the callback's nonzero value, and the rest of `buf` is not parsed;
   or -PL_E_NOMEM, the event being built is lost and the rest of `buf` is not
   parsed. Either way the parser stays usable. */
int pl_sse_feed(pl_sse_t *self, const char *buf, size_t len, pl_sse_fn fn, void *arg);
/* End of stream: per spec an unterminated event is discarded; returns 0.
   The parser is then ready for a new stream (a BOM is skipped again); the
   last event id is kept, as EventSource keeps it across reconnections. */
int pl_sse_finish(pl_sse_t *self, pl_sse_fn fn, void *arg);
/* Events dropped for exceeding max_event (an over-long line counts as one
   dropped event, with whatever event it was part of). */
size_t pl_sse_dropped(const pl_sse_t *self);

#endif
