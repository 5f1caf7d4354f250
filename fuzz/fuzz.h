/*  fuzz.h — what every harness in fuzz/ shares.

    A harness is one LLVMFuzzerTestOneInput: it must never leak, and it
    aborts (FUZZ_CHECK) when a parser breaks a promise its header makes, so
    libFuzzer and the replayers (replay_main.c) report it as a crash. The
    parsers themselves never assert: only harnesses do. */
#ifndef PL_FUZZ_H
#define PL_FUZZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond)                                                                   \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "%s:%d: fuzz check failed: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                       \
        }                                                                                  \
    } while (0)

/* A cursor over the input: the harness takes its parameters from the
   front, and the rest is the bytes under test. Past the end, bytes are 0. */
typedef struct {
    const uint8_t *p;
    size_t n;
} fuzz_in_t;

static inline uint8_t
fuzz_u8(fuzz_in_t *in)
{
    if (in->n == 0)
        return 0;
    in->n--;
    return *in->p++;
}

static inline uint16_t
fuzz_u16(fuzz_in_t *in)
{
    uint16_t hi = fuzz_u8(in);
    return (uint16_t) (hi << 8 | fuzz_u8(in));
}

/* A malloc'd copy of `n` bytes with a NUL after them (never NULL). */
static inline char *
fuzz_dup(const uint8_t *p, size_t n)
{
    char *s = malloc(n + 1);
    if (!s)
        abort();
    for (size_t i = 0; i < n; i++)
        s[i] = (char) p[i];
    s[n] = '\0';
    return s;
}

/* Length of the well-formed UTF-8 sequence at p (n bytes left), or 0:
   RFC 3629, no overlongs, no surrogates, nothing past U+10FFFF. */
static inline size_t
fuzz_utf8_len(const unsigned char *p, size_t n)
{
    unsigned c = p[0];
    size_t len = c < 0x80 ? 1 : c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
    if (len == 0 || len > n)
        return 0;
    unsigned cp = len == 1 ? c : c & (0x7Fu >> len);
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3Fu);
    }
    static const unsigned min[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (len > 1 && (cp < min[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)))
        return 0;
    return len;
}

/* True when n bytes at s are well-formed UTF-8 (NULs included). */
static inline bool
fuzz_utf8_valid(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t len = fuzz_utf8_len((const unsigned char *) s + i, n - i);
        if (len == 0)
            return false;
        i += len;
    }
    return true;
}

/* A growable byte log: what a parser delivered, to compare two runs. */
typedef struct {
    uint8_t *p;
    size_t n, cap;
} fuzz_log_t;

static inline void
fuzz_log(fuzz_log_t *log, const void *p, size_t n)
{
    if (log->n + n > log->cap) {
        size_t cap = log->cap ? log->cap : 256;
        while (cap < log->n + n)
            cap *= 2;
        uint8_t *q = realloc(log->p, cap);
        if (!q)
            abort();
        log->p = q;
        log->cap = cap;
    }
    for (size_t i = 0; i < n; i++)
        log->p[log->n + i] = ((const uint8_t *) p)[i];
    log->n += n;
}

/* Logs a length, then the bytes: a record no two inputs share. */
static inline void
fuzz_log_rec(fuzz_log_t *log, const void *p, size_t n)
{
    fuzz_log(log, &n, sizeof n);
    fuzz_log(log, p, n);
}

static inline int
fuzz_log_equal(const fuzz_log_t *a, const fuzz_log_t *b)
{
    if (a->n != b->n)
        return 0;
    for (size_t i = 0; i < a->n; i++)
        if (a->p[i] != b->p[i])
            return 0;
    return 1;
}

/* Cut points for a differential run: the input gives their count k
   (0..7) and k 16-bit offsets (fuzz_cuts_read), taken modulo the stream's
   length + 1 and sorted once the stream is known (fuzz_cuts_fit). */
typedef struct {
    size_t k;
    size_t at[7];
} fuzz_cuts_t;

static inline void
fuzz_cuts_read(fuzz_in_t *in, fuzz_cuts_t *c)
{
    c->k = fuzz_u8(in) % 8;
    for (size_t i = 0; i < c->k; i++)
        c->at[i] = fuzz_u16(in);
}

static inline void
fuzz_cuts_fit(fuzz_cuts_t *c, size_t len)
{
    for (size_t i = 0; i < c->k; i++)
        c->at[i] %= len + 1;
    for (size_t i = 1; i < c->k; i++) /* insertion sort: k ≤ 7 */
        for (size_t j = i; j > 0 && c->at[j - 1] > c->at[j]; j--) {
            size_t t = c->at[j];
            c->at[j] = c->at[j - 1];
            c->at[j - 1] = t;
        }
}

/* A stream parser (SSE, NDJSON) under a differential run: the harness's
   adapters over it. The parser's callback gets the run: it checks each
   item and logs it. */
typedef struct {
    fuzz_log_t log;
    size_t max; /* the parser's limit */
} fuzz_run_t;

typedef struct {
    void *(*make)(size_t max);
    int (*feed)(void *parser, const char *buf, size_t len, fuzz_run_t *run);
    int (*finish)(void *parser, fuzz_run_t *run);
    size_t (*dropped)(const void *parser);
    void (*destroy)(void *parser); /* also checks the handle was cleared */
} fuzz_stream_t;

/* Streams up to this long are also fed one byte at a time. */
#define FUZZ_BYTEWISE_MAX 1024

/* Parses the stream twice on one parser, cut at cuts->at[0..k) each time
   (NULL: every byte), logging the dropped count after each pass. */
static inline void
fuzz_stream_run(const fuzz_stream_t *ops, fuzz_run_t *run, const uint8_t *p, size_t len, const fuzz_cuts_t *cuts)
{
    void *parser = ops->make(run->max);
    FUZZ_CHECK(parser);
    for (int pass = 0; pass < 2; pass++) {
        size_t at = 0, k = cuts ? cuts->k : len;
        for (size_t i = 0; i <= k; i++) {
            size_t end = i == k ? len : cuts ? cuts->at[i] : i;
            FUZZ_CHECK(ops->feed(parser, (const char *) p + at, end - at, run) == 0);
            at = end;
        }
        FUZZ_CHECK(ops->finish(parser, run) == 0);
        size_t dropped = ops->dropped(parser);
        fuzz_log(&run->log, &dropped, sizeof dropped);
    }
    ops->destroy(parser);
}

/* The whole differential harness. Input: 2 bytes of the limit (1..4096),
   1 byte of cut count k (0..7) and 2 bytes per cut, then the stream. The
   stream is parsed whole, cut at the k points, and (when short) one byte
   at a time: the logs must be identical. */
static inline int
fuzz_stream_differential(const fuzz_stream_t *ops, const uint8_t *data, size_t size)
{
    fuzz_in_t in = {data, size};
    size_t max = 1 + fuzz_u16(&in) % 4096;
    fuzz_cuts_t cuts;
    fuzz_cuts_read(&in, &cuts);
    fuzz_cuts_fit(&cuts, in.n);

    fuzz_run_t whole = {.max = max}, cut = {.max = max}, bytes = {.max = max};
    fuzz_cuts_t none = {0};
    fuzz_stream_run(ops, &whole, in.p, in.n, &none);
    fuzz_stream_run(ops, &cut, in.p, in.n, &cuts);
    FUZZ_CHECK(fuzz_log_equal(&whole.log, &cut.log));
    if (in.n <= FUZZ_BYTEWISE_MAX) {
        fuzz_stream_run(ops, &bytes, in.p, in.n, NULL);
        FUZZ_CHECK(fuzz_log_equal(&whole.log, &bytes.log));
    }
    free(whole.log.p);
    free(cut.log.p);
    free(bytes.log.p);
    return 0;
}

#endif
