/*  pl_ndjson — NDJSON framing, parsed incrementally.

    Bytes up to each LF are gathered in `line`; at the LF one trailing CR is
    cut, then the line is checked (length, whitespace) and delivered. As the
    CR is only known to be the line end's once the LF comes, `line` may hold
    max + 1 bytes; a line that passes that is dropped on the spot
    (`skipping`): the rest of it is counted out, not stored, up to its LF.
    The buffer grows by doubling from S_BUF_MIN, never past max + 1. */
#include "pl_ndjson.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pl_err.h"

/* First allocation of the buffer: one short Ollama chunk fits. */
#define S_BUF_MIN 512

struct pl_ndjson {
    size_t max;
    char *line;
    size_t len, cap; /* cap > len whenever line is set: room for the NUL */
    bool skipping;   /* dropping the current line up to its LF */
    size_t dropped;
};

pl_ndjson_t *
pl_ndjson_new(size_t max_line)
{
    if (max_line == 0 || max_line >= SIZE_MAX / 4)
        return NULL;
    pl_ndjson_t *self = calloc(1, sizeof *self);
    if (self)
        self->max = max_line;
    return self;
}

void
pl_ndjson_destroy(pl_ndjson_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    free((*self_p)->line);
    free(*self_p);
    *self_p = NULL;
}

/* `n` bytes of the current line (no LF among them). */
static int
s_bytes(pl_ndjson_t *self, const char *s, size_t n)
{
    if (n == 0 || self->skipping)
        return 0;
    if (self->len + n > self->max + 1) {
        self->skipping = true;
        self->dropped++;
        self->len = 0;
        return 0;
    }
    if (self->len + n + 1 > self->cap) {
        size_t cap = self->cap ? self->cap : S_BUF_MIN;
        while (cap < self->len + n + 1)
            cap *= 2;
        if (cap > self->max + 2)
            cap = self->max + 2;
        char *p = realloc(self->line, cap);
        if (!p) {
            self->skipping = true;
            self->len = 0;
            return -PL_E_NOMEM;
        }
        self->line = p;
        self->cap = cap;
    }
    memcpy(self->line + self->len, s, n);
    self->len += n;
    return 0;
}

static bool
s_blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
            return false;
    return true;
}

/* The current line is complete: deliver it, or skip or drop it. */
static int
s_line_end(pl_ndjson_t *self, pl_ndjson_fn fn, void *arg)
{
    size_t n = self->len;
    bool skipping = self->skipping;
    self->len = 0;
    self->skipping = false;
    if (skipping)
        return 0;
    if (n > 0 && self->line[n - 1] == '\r')
        n--;
    if (n > self->max) {
        self->dropped++;
        return 0;
    }
    if (s_blank(self->line, n))
        return 0;
    self->line[n] = '\0';
    return fn ? fn(arg, self->line, n) : 0;
}

int
pl_ndjson_feed(pl_ndjson_t *self, const char *buf, size_t len, pl_ndjson_fn fn, void *arg)
{
    size_t i = 0;
    while (i < len) {
        const char *lf = memchr(buf + i, '\n', len - i);
        size_t n = lf ? (size_t) (lf - (buf + i)) : len - i;
        int rc = s_bytes(self, buf + i, n);
        if (rc == 0 && lf)
            rc = s_line_end(self, fn, arg);
        if (rc != 0)
            return rc;
        i += n + (lf != NULL);
    }
    return 0;
}

int
pl_ndjson_finish(pl_ndjson_t *self, pl_ndjson_fn fn, void *arg)
{
    return s_line_end(self, fn, arg);
}

size_t
pl_ndjson_dropped(const pl_ndjson_t *self)
{
    return self->dropped;
}
