/*  pl_util — ids, hashing and clocks shared by every layer. Thread-safe. */
#ifndef PL_UTIL_H
#define PL_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A random 64-bit value from the kernel (never 0). */
uint64_t pl_random_u64(void);
/* Writes `prefix` + 16 lowercase hex digits of a fresh random value into
   `out` (at least 18 bytes). */
void pl_id_new(char prefix, char *out, size_t size);
/* Formats a connection id as the client sees it ("c" + 16 hex). */
void pl_conn_name(uint64_t conn, char *out, size_t size);
/* True when `s` is a plausible id a client may name: 1..PL_ID_MAX chars of
   [A-Za-z0-9_.:-]. */
bool pl_id_valid(const char *s);
/* FNV-1a over a string; the shard of an id is pl_hash(id) % shards. */
uint64_t pl_hash(const char *s);

/* Replaces, in place, every byte of `s` that is not part of a well-formed
   UTF-8 sequence (RFC 3629: no overlongs, no surrogates, <= U+10FFFF) with
   '?'. Returns how many bytes it replaced. Text from outside (model APIs)
   goes through this before it reaches a WebSocket text frame. */
size_t pl_utf8_scrub(char *s);

/* True when the `n` bytes at `s` are well-formed UTF-8 (the same rules;
   NULs are valid). Text from outside that is not checked elsewhere (HTTP
   bodies: lws checks WebSocket text frames) goes through this. */
bool pl_utf8_valid(const char *s, size_t n);

/* Monotonic milliseconds, for timers. */
int64_t pl_now_ms(void);
/* The same clock, in microseconds. */
int64_t pl_now_us(void);
/* Wall-clock microseconds since the epoch (capture records' times). */
int64_t pl_wall_us(void);
/* The same, in seconds. */
double pl_wall_s(void);

#endif
