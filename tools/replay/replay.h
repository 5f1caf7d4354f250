/*  parley-replay — record, play, diff and summarise captures
    (docs/capture.md, README "parley-replay"). What the commands share:
    loading a capture file, writing one, and the command entry points. */
#ifndef RP_REPLAY_H
#define RP_REPLAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "pl_capture.h"

/* One connection of a loaded capture: its records, in file order. */
typedef struct {
    uint64_t id;
    const pl_cap_rec_t *open;  /* NULL when the capture began after it opened */
    const pl_cap_rec_t *close; /* NULL when it was still open at the end */
    const pl_cap_rec_t **recs; /* its FRAME records */
    size_t n, cap;
} rp_conn_t;

/* A whole capture file, mapped read-only; records point into the map. */
typedef struct {
    void *map;
    size_t size;
    pl_cap_header_t header;
    pl_cap_rec_t *recs; /* every record, file order */
    size_t n;
    rp_conn_t *conns; /* in order of first appearance */
    size_t nconns;
    uint64_t lost;        /* records the tap dropped (LOST records) */
    char warning[256];    /* "" or why the file ended early (truncated) */
} rp_capture_t;

/* Loads `path`. 0; or -1 with `err` (unreadable, not a capture, corrupt).
   A capture cut short mid-record loads what came before, with `warning`
   set: a recorder killed hard loses only its last record. */
int rp_capture_load(const char *path, rp_capture_t *cap, char *err, size_t errsize);
void rp_capture_free(rp_capture_t *cap);

/* Writing a capture: header first, then records appended. Each record is
   on disk (fflush) when rp_writer_add returns, if `flush` is set. */
typedef struct {
    FILE *f;
    char *path;
    uint64_t records;
} rp_writer_t;

int rp_writer_open(rp_writer_t *w, const char *path, const char *source, char *err, size_t errsize);
/* Appends `r` as is (its seq too). 0, or -1 on a write error (errno). */
int rp_writer_add(rp_writer_t *w, const pl_cap_rec_t *r, bool flush);
/* Flushes and closes. 0, or -1 on a write error (errno). */
int rp_writer_close(rp_writer_t *w);

/* Whether a JSON object key names an id the server mints: "id", or one
   ending in "_id" (session_id, message_id, ...). The one rule play (id
   rewriting) and diff (id masking) share; NULL is not one. */
bool rp_is_id_key(const char *key);

/* The commands: argv[0] is the command name. Each returns the exit code:
   0 success, 1 a difference (diff) or a failed replay, 2 bad usage or an
   unreadable input. */
int rp_record(int argc, char **argv);
int rp_play(int argc, char **argv);
int rp_diff(int argc, char **argv);
int rp_stats(int argc, char **argv);

/* Prints "parley-replay CMD: ..." on stderr; returns 2. */
int rp_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
