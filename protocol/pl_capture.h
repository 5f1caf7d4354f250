/*  pl_capture — Parley's capture format, version 1 (docs/capture.md).

    A capture is a stream of msgpack objects: one header (a map), then
    records (arrays), back to back, no framing of our own. The tap
    (parleyd --tap) publishes one record per ZeroMQ message; parley-replay
    record writes the header and appends the records as they come. Because
    each object delimits itself, a capture cut short loses at most its last,
    incomplete record, and the reader says so.

    Records:
      [0 OPEN,  seq, t_us, conn, path, dialect]
      [1 FRAME, seq, t_us, conn, dir, opcode, payload (bin)]
      [2 CLOSE, seq, t_us, conn, code, by]   by: 0 the client, 1 the server
      [3 LOST,  seq, t_us, 0,    count]

    The reader is pure (bytes in, records out, borrowed from the buffer) and
    fuzzed: any bytes give records or a clear error, never a crash. */
#ifndef PL_CAPTURE_H
#define PL_CAPTURE_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PL_CAP_MAGIC "parley-capture"
#define PL_CAP_VERSION 1
/* The tap's first message to each recorder, once it is subscribed (text,
   not a record: records are msgpack arrays). */
#define PL_CAP_TAP_WELCOME "parley-tap 1"
/* Longest path, dialect and source strings a capture may hold. */
#define PL_CAP_NAME_MAX 256
/* Largest payload of one FRAME record: the largest frame parleyd can be
   configured to take (--max-frame-hard's ceiling). */
#define PL_CAP_PAYLOAD_MAX (64u * 1024u * 1024u)

typedef enum { PL_CAP_OPEN = 0, PL_CAP_FRAME, PL_CAP_CLOSE, PL_CAP_LOST, PL_CAP_KIND_COUNT_ } pl_cap_kind_t;

/* A frame's direction, as the server sees it. */
typedef enum { PL_CAP_IN = 0 /* client → server */, PL_CAP_OUT = 1 /* server → client */ } pl_cap_dir_t;

/* RFC 6455 opcodes a FRAME carries. */
#define PL_CAP_TEXT 1
#define PL_CAP_BINARY 2

/* One record. Strings and payload point into the buffer decoded (not into
   the reader), so they live as long as it; path and dialect are not
   NUL-terminated (use the lengths). */
typedef struct {
    pl_cap_kind_t kind;
    uint64_t seq;  /* the writer's record number: +1 per record; a jump is a loss */
    int64_t t_us;  /* wall clock (CLOCK_REALTIME), microseconds */
    uint64_t conn; /* connection id, unique within one writer's run; 0 for LOST */
    const char *path;    /* OPEN: request path, without the query string */
    size_t path_len;
    const char *dialect; /* OPEN: "session", ... */
    size_t dialect_len;
    pl_cap_dir_t dir;    /* FRAME */
    int opcode;          /* FRAME: PL_CAP_TEXT or PL_CAP_BINARY */
    const char *data;    /* FRAME: payload */
    size_t len;
    int code;       /* CLOSE: close code (0: none, the peer vanished) */
    pl_cap_dir_t by; /* CLOSE: who closed: PL_CAP_IN the client, PL_CAP_OUT the server */
    uint64_t count; /* LOST: records dropped here */
} pl_cap_rec_t;

typedef struct {
    int version;
    int64_t created_us;
    char source[PL_CAP_NAME_MAX + 1]; /* who wrote it, e.g. "parleyd tap ipc:///tmp/t" */
} pl_cap_header_t;

/* Writing: appends one object to `pk` (a packer on any writer). */
void pl_cap_pack_header(msgpack_packer *pk, const pl_cap_header_t *h);
void pl_cap_pack_rec(msgpack_packer *pk, const pl_cap_rec_t *r);

/* Checks one decoded object as a record and fills `r` (borrowing from it).
   0, or -1 with `err` saying what is wrong. */
int pl_cap_rec_from(const msgpack_object *o, pl_cap_rec_t *r, char *err, size_t errsize);

/* Reading a whole capture held in memory (`buf` is borrowed and must outlive
   the reader and every record it gives). */
typedef struct {
    const char *buf;
    size_t len, off;
    uint64_t records; /* records read so far */
    msgpack_unpacked u;
    pl_cap_header_t header;
    char err[200];
} pl_cap_reader_t;

/* Reads the header. 0, or -1 with r->err (not a capture, a newer version,
   ...). Either way pl_cap_reader_close() must be called. */
int pl_cap_reader_open(pl_cap_reader_t *r, const char *buf, size_t len);
/* The next record: 1 (in *rec), 0 at the clean
   end, PL_CAP_CORRUPT or PL_CAP_TRUNCATED with r->err saying where (the
   reader then stays at its end). */
#define PL_CAP_CORRUPT (-1)
#define PL_CAP_TRUNCATED (-2)
int pl_cap_reader_next(pl_cap_reader_t *r, pl_cap_rec_t *rec);
void pl_cap_reader_close(pl_cap_reader_t *r);

/* "open", "frame", "close", "lost"; "?" when out of range. */
const char *pl_cap_kind_name(int kind);

#endif
