/*  pl_ndjson — newline-delimited JSON framing (one JSON value per line), for
    the model backends that stream NDJSON (Ollama). Only framing: JSON
    parsing is the caller's.

    Pure and incremental, like pl_sse: the stream may be cut anywhere between
    feeds and the lines delivered are the same. Lines end at LF; one CR
    before the LF is stripped; lines that are empty or only JSON whitespace
    (space, tab, CR) are skipped. A line longer than max_line is dropped
    whole, counted, and parsing resumes after its LF; memory stays bounded by
    ~max_line. Any bytes are accepted and passed through unchecked. One
    parser per stream, used by one thread. */
#ifndef PL_NDJSON_H
#define PL_NDJSON_H

#include <stddef.h>

typedef struct pl_ndjson pl_ndjson_t;

/* One line, borrowed and valid only during the call: NUL-terminated, no line
   end, `len` bytes (it may hold NULs). Return 0 to go on, nonzero to stop. */
typedef int (*pl_ndjson_fn)(void *arg, const char *line, size_t len);

/* A parser for lines of at most `max_line` bytes (without the line end).
   NULL when max_line is 0 or absurd (≥ SIZE_MAX / 4), or out of memory.
   The buffer grows on demand up to ~max_line. The parser is the caller's. */
pl_ndjson_t *pl_ndjson_new(size_t max_line);
/* Frees the parser and sets *self_p to NULL. NULL or *self_p NULL: no-op. */
void pl_ndjson_destroy(pl_ndjson_t **self_p);

/* Parses `len` bytes (borrowed), calling `fn` (may be NULL) once per line.
   0; or the callback's nonzero value, and the rest of `buf` is not parsed;
   or -PL_E_NOMEM, the line being built is lost and the rest of `buf` is not
   parsed. Either way the parser stays usable. */
int pl_ndjson_feed(pl_ndjson_t *self, const char *buf, size_t len, pl_ndjson_fn fn, void *arg);
/* End of stream: a last line without '\n' is delivered (a trailing CR
   stripped, as before an LF). Returns 0 or the callback's nonzero value.
   The parser is then ready for a new stream. */
int pl_ndjson_finish(pl_ndjson_t *self, pl_ndjson_fn fn, void *arg);
/* Lines over max_line, dropped. */
size_t pl_ndjson_dropped(const pl_ndjson_t *self);

#endif
