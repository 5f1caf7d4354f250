/*  pl_sse — Server-Sent Events, parsed incrementally.

    Bytes are cut into lines at CR, LF or CRLF; `cr` remembers a CR that
    ended the last feed, so an LF opening the next one is not read as a
    second (blank) line. A line is gathered whole in `line`, then split into
    field and value into the `data`, `event` and `id` buffers; a blank line
    dispatches. BOM bytes are matched one at a time (a BOM may be split too);
    a partial match that fails is replayed as line bytes.

    Limits: `line` ≤ max bytes; `data` ≤ max + 1 (its last '\n' goes at
    dispatch); `event` and `id` come from one line. Past a limit the event is
    dropped (`skipping`): bytes are seen, not stored, until a blank line.
    Buffers double from S_BUF_MIN, never past their limit. */
#include "pl_sse.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pl_err.h"

/* First allocation of a buffer: one short OpenAI delta fits. */
#define S_BUF_MIN 256

typedef struct {
    char *p;
    size_t len, cap; /* cap > len whenever p is set: room for the NUL */
} s_buf_t;

struct pl_sse {
    size_t max;
    s_buf_t line, data, event, id;
    unsigned bom;    /* BOM bytes matched at stream start; 3 once past it */
    bool cr;         /* the last line ended at a CR: an LF next is its tail */
    bool skipping;   /* dropping the current event until a blank line */
    bool skip_blank; /* skipping, and the current line has no bytes yet */
    size_t dropped;
};

static const unsigned char s_bom[3] = {0xEF, 0xBB, 0xBF};

/* Appends `n` bytes; the caller has checked len + n ≤ limit. */
static int
s_buf_put(s_buf_t *b, const char *s, size_t n, size_t limit)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : S_BUF_MIN;
        while (cap < b->len + n + 1)
            cap *= 2;
        if (cap > limit + 1)
            cap = limit + 1;
        char *p = realloc(b->p, cap);
        if (!p)
            return -PL_E_NOMEM;
        b->p = p;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, s, n);
    b->len += n;
    return 0;
}

static const char *
s_str(s_buf_t *b)
{
    if (!b->p)
        return "";
    b->p[b->len] = '\0';
    return b->p;
}

static bool
s_is(const char *field, size_t n, const char *name)
{
    return n == strlen(name) && memcmp(field, name, n) == 0;
}

pl_sse_t *
pl_sse_new(size_t max_event)
{
    if (max_event == 0 || max_event >= SIZE_MAX / 4)
        return NULL;
    pl_sse_t *self = calloc(1, sizeof *self);
    if (self)
        self->max = max_event;
    return self;
}

void
pl_sse_destroy(pl_sse_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    pl_sse_t *self = *self_p;
    free(self->line.p);
    free(self->data.p);
    free(self->event.p);
    free(self->id.p);
    free(self);
    *self_p = NULL;
}

/* Drops the event being built; bytes are ignored until a blank line. */
static void
s_skip(pl_sse_t *self, bool counted)
{
    self->line.len = self->data.len = self->event.len = 0;
    self->skipping = true;
    self->skip_blank = true;
    self->dropped += counted;
}

static int
s_dispatch(pl_sse_t *self, pl_sse_fn fn, void *arg)
{
    int rc = 0;
    if (self->data.len > 0) {
        self->data.len--; /* the last data line's '\n' */
        pl_sse_event_t ev = {s_str(&self->event), s_str(&self->data), self->data.len, s_str(&self->id)};
        rc = fn ? fn(arg, &ev) : 0;
    }
    self->data.len = self->event.len = 0;
    return rc;
}

/* Interprets the complete line in `line`. */
static int
s_line(pl_sse_t *self, pl_sse_fn fn, void *arg)
{
    const char *line = self->line.p;
    size_t n = self->line.len;
    if (n == 0)
        return s_dispatch(self, fn, arg);
    if (line[0] == ':')
        return 0; /* comment */
    const char *colon = memchr(line, ':', n);
    size_t flen = colon ? (size_t) (colon - line) : n;
    const char *v = colon ? colon + 1 : line + n;
    size_t vlen = colon ? n - flen - 1 : 0;
    if (vlen > 0 && v[0] == ' ') {
        v++;
        vlen--;
    }
    int rc = 0;
    if (s_is(line, flen, "data")) {
        if (self->data.len + vlen > self->max) {
            s_skip(self, true);
            return 0;
        }
        rc = s_buf_put(&self->data, v, vlen, self->max + 1);
        if (rc == 0)
            rc = s_buf_put(&self->data, "\n", 1, self->max + 1);
    } else if (s_is(line, flen, "event")) {
        self->event.len = 0;
        rc = s_buf_put(&self->event, v, vlen, self->max);
    } else if (s_is(line, flen, "id") && !memchr(v, '\0', vlen)) {
        self->id.len = 0;
        rc = s_buf_put(&self->id, v, vlen, self->max);
    } /* retry and unknown fields are ignored */
    if (rc != 0)
        s_skip(self, false);
    return rc;
}

static int
s_line_end(pl_sse_t *self, pl_sse_fn fn, void *arg)
{
    if (self->skipping) {
        if (self->skip_blank)
            self->skipping = false; /* resynced */
        self->skip_blank = true;
        return 0;
    }
    int rc = s_line(self, fn, arg);
    self->line.len = 0;
    return rc;
}

/* `n` bytes of the current line (no line end among them). */
static int
s_bytes(pl_sse_t *self, const char *s, size_t n)
{
    if (n == 0)
        return 0;
    int rc = 0;
    if (!self->skipping) {
        if (self->line.len + n > self->max)
            s_skip(self, true);
        else
            rc = s_buf_put(&self->line, s, n, self->max);
        if (rc != 0)
            s_skip(self, false);
    }
    if (self->skipping)
        self->skip_blank = false; /* this line has bytes: its end is no resync */
    return rc;
}

static int
s_scan(pl_sse_t *self, const char *buf, size_t len, pl_sse_fn fn, void *arg)
{
    size_t i = 0;
    while (i < len) {
        if (self->cr) {
            self->cr = false;
            if (buf[i] == '\n') {
                i++;
                continue;
            }
        }
        size_t j = i;
        while (j < len && buf[j] != '\n' && buf[j] != '\r')
            j++;
        int rc = s_bytes(self, buf + i, j - i);
        if (rc != 0 || j == len)
            return rc;
        self->cr = buf[j] == '\r';
        rc = s_line_end(self, fn, arg);
        if (rc != 0)
            return rc;
        i = j + 1;
    }
    return 0;
}

int
pl_sse_feed(pl_sse_t *self, const char *buf, size_t len, pl_sse_fn fn, void *arg)
{
    size_t i = 0;
    while (self->bom < sizeof s_bom && i < len) {
        if ((unsigned char) buf[i] == s_bom[self->bom]) {
            self->bom++;
            i++;
            continue;
        }
        size_t matched = self->bom; /* not a BOM: those bytes begin a line */
        self->bom = sizeof s_bom;
        int rc = s_bytes(self, (const char *) s_bom, matched);
        if (rc != 0)
            return rc;
    }
    if (i == len)
        return 0;
    return s_scan(self, buf + i, len - i, fn, arg);
}

int
pl_sse_finish(pl_sse_t *self, pl_sse_fn fn, void *arg)
{
    (void) fn;
    (void) arg;
    self->line.len = self->data.len = self->event.len = 0;
    self->bom = 0;
    self->cr = self->skipping = self->skip_blank = false;
    return 0;
}

size_t
pl_sse_dropped(const pl_sse_t *self)
{
    return self->dropped;
}
