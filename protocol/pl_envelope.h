/*  pl_envelope — the message actors exchange, and its msgpack codec.

    The schema is pl_envelope.def; this is the only module that calls msgpack.
    An envelope is a flat struct: every field of the table, plus a bitmask of
    the ones present. Strings, histories and lists are owned by the envelope
    and freed by pl_env_reset(). Nothing in an envelope points outside it, so
    it can be encoded and sent to any actor. */
#ifndef PL_ENVELOPE_H
#define PL_ENVELOPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pl_envelope.def"
#include "pl_stats.def"

typedef enum {
#define X(id, member, kind, doc) PL_F_##id,
    PL_ENV_FIELDS(X)
#undef X
    PL_F_COUNT_
} pl_field_t;

typedef enum {
    PL_MSG_NONE_ = 0, /* never on the wire: field 0 value 0 is refused */
#define X(id, name, req) PL_MSG_##id,
    PL_ENV_MSGS(X)
#undef X
    PL_MSG_COUNT_
} pl_msg_t;

typedef enum {
#define X(id, path) PL_STAT_##id,
    PL_STATS(X)
#undef X
    PL_STAT_COUNT_
} pl_stat_t;

typedef enum {
#define X(id, key) PL_MSTAT_##id,
    PL_MSTATS(X)
#undef X
    PL_MSTAT_COUNT_
} pl_mstat_t;

typedef enum {
    PL_FINISH_STOP = 0,
    PL_FINISH_LENGTH,
    PL_FINISH_CANCELLED,
    PL_FINISH_ERROR,
    PL_FINISH_INTERRUPTED, /* the server stopped before the answer ended */
    PL_FINISH_COUNT_
} pl_finish_t;

/* One message of a conversation. */
typedef struct {
    char *id;   /* message id */
    char *role; /* "user" | "assistant" | "system" */
    char *text;
    char *conn; /* the sender's connection_id, "" for the model */
    double ts;
    int64_t ord;    /* order key: 2 x its message_added seq; an answer +1 */
    int64_t finish; /* an answer's pl_finish_t (user messages: 0, unused) */
} pl_histent_t;

/* One session, as listed. */
typedef struct {
    char *id;
    char *model;
    char *kind;
    char *name;
    int64_t messages;
    int64_t members;
    double created;
} pl_sessinfo_t;

typedef struct { pl_histent_t *v; size_t n; } pl_hist_t;
typedef struct { pl_sessinfo_t *v; size_t n; } pl_sessv_t;
typedef struct { int64_t *v; size_t n; } pl_i64v_t;
typedef struct { char *p; size_t n; } pl_bin_t;
typedef struct { pl_bin_t *v; size_t n; } pl_binv_t;

#define PL_CTYPE_U64 uint64_t
#define PL_CTYPE_I64 int64_t
#define PL_CTYPE_F64 double
#define PL_CTYPE_BOOL bool
#define PL_CTYPE_STR char *
#define PL_CTYPE_HIST pl_hist_t
#define PL_CTYPE_SESSV pl_sessv_t
#define PL_CTYPE_I64V pl_i64v_t
#define PL_CTYPE_BINV pl_binv_t

typedef struct {
    pl_msg_t type;
    uint64_t present; /* bit PL_F_x set when the field is present */
#define X(id, member, kind, doc) PL_CTYPE_##kind member;
    PL_ENV_FIELDS(X)
#undef X
} pl_env_t;

/* Starts an empty envelope of `type`. */
void pl_env_init(pl_env_t *env, pl_msg_t type);
/* Frees everything the envelope owns and empties it (type kept). */
void pl_env_reset(pl_env_t *env);

static inline bool
pl_env_has(const pl_env_t *env, pl_field_t f)
{
    return (env->present >> f) & 1u;
}

/* Setters mark the field present. Strings are copied (NULL → ""). */
void pl_env_set_u64(pl_env_t *env, pl_field_t f, uint64_t v);
void pl_env_set_i64(pl_env_t *env, pl_field_t f, int64_t v);
void pl_env_set_f64(pl_env_t *env, pl_field_t f, double v);
void pl_env_set_bool(pl_env_t *env, pl_field_t f, bool v);
/* Returns 0 or -PL_E_NOMEM. */
int pl_env_set_str(pl_env_t *env, pl_field_t f, const char *s);
int pl_env_set_strn(pl_env_t *env, pl_field_t f, const char *s, size_t n);
/* Appends a copy of `e` to the HIST field. 0 or -PL_E_NOMEM. */
int pl_env_hist_add(pl_env_t *env, const pl_histent_t *e);
int pl_env_sessv_add(pl_env_t *env, const pl_sessinfo_t *s);
/* Sets I64V field `f` to `n` counters copied from `v`. */
int pl_env_set_i64v(pl_env_t *env, pl_field_t f, const int64_t *v, size_t n);

/* Appends a copy of `n` bytes to BINV field `f`. 0 or -PL_E_x. */
int pl_env_binv_add(pl_env_t *env, pl_field_t f, const void *p, size_t n);

/* Deep-copies `src` into `dst` (uninitialised). 0 or -PL_E_NOMEM. */
int pl_env_copy(pl_env_t *dst, const pl_env_t *src);

/* Encodes to msgpack. *out is the caller's (free()). 0 or -PL_E_NOMEM. */
int pl_env_encode(const pl_env_t *env, char **out, size_t *len);
/* Decodes `len` bytes into `env` (uninitialised). Refuses unknown types,
   unknown fields, wrong kinds, duplicates, missing required fields, oversize
   lists and trailing bytes. 0, -PL_E_BAD_FRAME, or -PL_E_NOMEM; on failure
   env is empty. Thread-safe: each thread decodes in a msgpack zone of its own. */
int pl_env_decode(const char *buf, size_t len, pl_env_t *env);

/* Checks, before msgpack-c sees them, the bytes of the msgpack object at
   `buf`: 1 when a whole object is there and every container's declared
   elements could be (*objlen, if not NULL, its length); 0 when the bytes
   end first (or a header declares more elements than bytes remain); -1 for
   a byte msgpack never uses. Every decoder of outside msgpack calls this
   first: msgpack-c allocates what a header declares. */
int pl_mp_check(const void *buf, size_t len, size_t *objlen);

const char *pl_msg_name(pl_msg_t type);
const char *pl_finish_name(int64_t finish);
const char *pl_stat_path(pl_stat_t stat);
const char *pl_mstat_key(pl_mstat_t stat);

#endif
