/*  pl_envelope — msgpack codec for the envelope table.

    Wire form: a map {0: type, field+1: value, ...}. Histories are arrays of
    [id, role, text, conn, ts, ord, finish]; session lists arrays of
    [id, model, kind, name, messages, members, created]; blob lists arrays
    of msgpack bin. */
#include "pl_envelope.h"

#include <msgpack.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "pl_err.h"
#include "pl_limits.h"

typedef enum { K_U64, K_I64, K_F64, K_BOOL, K_STR, K_HIST, K_SESSV, K_I64V, K_BINV } s_kind_t;

static const s_kind_t s_field_kind[PL_F_COUNT_] = {
#define X(id, member, kind, doc) K_##kind,
    PL_ENV_FIELDS(X)
#undef X
};

static const uint64_t s_required[PL_MSG_COUNT_] = {0,
#define X(id, name, req) req,
                                                   PL_ENV_MSGS(X)
#undef X
};

static const char *const s_msg_names[PL_MSG_COUNT_] = {"none",
#define X(id, name, req) name,
                                                       PL_ENV_MSGS(X)
#undef X
};

static const char *const s_stat_paths[PL_STAT_COUNT_] = {
#define X(id, path) path,
    PL_STATS(X)
#undef X
};

const char *
pl_msg_name(pl_msg_t type)
{
    return (unsigned) type < PL_MSG_COUNT_ ? s_msg_names[type] : "invalid";
}

const char *
pl_finish_name(int64_t finish)
{
    static const char *const names[] = {"stop", "length", "cancelled", "error", "interrupted"};
    return finish >= 0 && finish < PL_FINISH_COUNT_ ? names[finish] : "error";
}

const char *
pl_mstat_key(pl_mstat_t stat)
{
    static const char *const keys[PL_MSTAT_COUNT_] = {
#define X(id, key) key,
        PL_MSTATS(X)
#undef X
    };
    return (unsigned) stat < PL_MSTAT_COUNT_ ? keys[stat] : "invalid";
}

const char *
pl_stat_path(pl_stat_t stat)
{
    return (unsigned) stat < PL_STAT_COUNT_ ? s_stat_paths[stat] : "invalid";
}

/* Field storage by index, for the generic codec. */
static void *
s_slot(pl_env_t *env, pl_field_t f)
{
    switch (f) {
#define X(id, member, kind, doc)                                                                                       \
    case PL_F_##id:                                                                                                    \
        return &env->member;
        PL_ENV_FIELDS(X)
#undef X
    default:
        return NULL;
    }
}

static const void *
s_cslot(const pl_env_t *env, pl_field_t f)
{
    return s_slot((pl_env_t *) env, f);
}

void
pl_env_init(pl_env_t *env, pl_msg_t type)
{
    memset(env, 0, sizeof *env);
    env->type = type;
}

static void
s_histent_free(pl_histent_t *e)
{
    free(e->id);
    free(e->role);
    free(e->text);
    free(e->conn);
}

static void
s_sessinfo_free(pl_sessinfo_t *s)
{
    free(s->id);
    free(s->model);
    free(s->kind);
    free(s->name);
}

void
pl_env_reset(pl_env_t *env)
{
    for (int f = 0; f < PL_F_COUNT_; f++) {
        void *slot = s_slot(env, (pl_field_t) f);
        switch (s_field_kind[f]) {
        case K_STR:
            free(*(char **) slot);
            break;
        case K_HIST: {
            pl_hist_t *h = slot;
            for (size_t i = 0; i < h->n; i++)
                s_histent_free(&h->v[i]);
            free(h->v);
            break;
        }
        case K_SESSV: {
            pl_sessv_t *s = slot;
            for (size_t i = 0; i < s->n; i++)
                s_sessinfo_free(&s->v[i]);
            free(s->v);
            break;
        }
        case K_BINV: {
            pl_binv_t *b = slot;
            for (size_t i = 0; i < b->n; i++)
                free(b->v[i].p);
            free(b->v);
            break;
        }
        case K_I64V:
            free(((pl_i64v_t *) slot)->v);
            break;
        default:
            break;
        }
    }
    pl_env_init(env, env->type);
}

void
pl_env_set_u64(pl_env_t *env, pl_field_t f, uint64_t v)
{
    *(uint64_t *) s_slot(env, f) = v;
    env->present |= 1ull << f;
}

void
pl_env_set_i64(pl_env_t *env, pl_field_t f, int64_t v)
{
    *(int64_t *) s_slot(env, f) = v;
    env->present |= 1ull << f;
}

void
pl_env_set_f64(pl_env_t *env, pl_field_t f, double v)
{
    *(double *) s_slot(env, f) = v;
    env->present |= 1ull << f;
}

void
pl_env_set_bool(pl_env_t *env, pl_field_t f, bool v)
{
    *(bool *) s_slot(env, f) = v;
    env->present |= 1ull << f;
}

static char *
s_strndup(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p) {
        if (n)
            memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

static char *
s_strdup0(const char *s)
{
    return s_strndup(s ? s : "", s ? strlen(s) : 0);
}

int
pl_env_set_strn(pl_env_t *env, pl_field_t f, const char *s, size_t n)
{
    char *p = s_strndup(s ? s : "", s ? n : 0);
    if (!p)
        return -PL_E_NOMEM;
    char **slot = s_slot(env, f);
    free(*slot);
    *slot = p;
    env->present |= 1ull << f;
    return 0;
}

int
pl_env_set_str(pl_env_t *env, pl_field_t f, const char *s)
{
    return pl_env_set_strn(env, f, s, s ? strlen(s) : 0);
}

static int
s_histent_copy(pl_histent_t *dst, const pl_histent_t *src)
{
    dst->id = s_strdup0(src->id);
    dst->role = s_strdup0(src->role);
    dst->text = s_strdup0(src->text);
    dst->conn = s_strdup0(src->conn);
    dst->ts = src->ts;
    dst->ord = src->ord;
    dst->finish = src->finish;
    if (dst->id && dst->role && dst->text && dst->conn)
        return 0;
    s_histent_free(dst);
    return -PL_E_NOMEM;
}

static int
s_sessinfo_copy(pl_sessinfo_t *dst, const pl_sessinfo_t *src)
{
    *dst = *src;
    dst->id = s_strdup0(src->id);
    dst->model = s_strdup0(src->model);
    dst->kind = s_strdup0(src->kind);
    dst->name = s_strdup0(src->name);
    if (dst->id && dst->model && dst->kind && dst->name)
        return 0;
    s_sessinfo_free(dst);
    return -PL_E_NOMEM;
}

/* Grows a list by one slot; returns the slot or NULL. */
static void *
s_grow(void **v, size_t *n, size_t size)
{
    if (*n >= PL_ENV_LIST_MAX)
        return NULL;
    void *p = realloc(*v, (*n + 1) * size);
    if (!p)
        return NULL;
    *v = p;
    return (char *) p + (*n) * size;
}

int
pl_env_hist_add(pl_env_t *env, const pl_histent_t *e)
{
    pl_histent_t *slot = s_grow((void **) &env->hist.v, &env->hist.n, sizeof *slot);
    if (!slot || s_histent_copy(slot, e) != 0)
        return -PL_E_NOMEM;
    env->hist.n++;
    env->present |= 1ull << PL_F_HIST;
    return 0;
}

int
pl_env_sessv_add(pl_env_t *env, const pl_sessinfo_t *s)
{
    pl_sessinfo_t *slot = s_grow((void **) &env->sessv.v, &env->sessv.n, sizeof *slot);
    if (!slot || s_sessinfo_copy(slot, s) != 0)
        return -PL_E_NOMEM;
    env->sessv.n++;
    env->present |= 1ull << PL_F_SESSV;
    return 0;
}

int
pl_env_set_i64v(pl_env_t *env, pl_field_t f, const int64_t *v, size_t n)
{
    int64_t *p = malloc((n ? n : 1) * sizeof *p);
    if (!p)
        return -PL_E_NOMEM;
    if (n)
        memcpy(p, v, n * sizeof *p);
    pl_i64v_t *slot = s_slot(env, f);
    free(slot->v);
    slot->v = p;
    slot->n = n;
    env->present |= 1ull << f;
    return 0;
}

int
pl_env_binv_add(pl_env_t *env, pl_field_t f, const void *p, size_t n)
{
    pl_binv_t *b = s_slot(env, f);
    if (n > PL_ENV_MAX)
        return -PL_E_TOO_LARGE;
    pl_bin_t *slot = s_grow((void **) &b->v, &b->n, sizeof *slot);
    if (!slot)
        return -PL_E_NOMEM;
    slot->p = malloc(n ? n : 1);
    if (!slot->p)
        return -PL_E_NOMEM;
    if (n)
        memcpy(slot->p, p, n);
    slot->n = n;
    b->n++;
    env->present |= 1ull << f;
    return 0;
}

static int s_decode(const char *buf, size_t len, pl_env_t *env, bool check_required);

int
pl_env_copy(pl_env_t *dst, const pl_env_t *src)
{
    char *buf = NULL;
    size_t len = 0;
    int rc = pl_env_encode(src, &buf, &len);
    if (rc == 0)
        rc = s_decode(buf, len, dst, false); /* a copy need not be complete yet */
    else
        pl_env_init(dst, src->type);
    free(buf);
    return rc;
}

/* ---- encode ---- */

static void
s_pack_str(msgpack_packer *pk, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s ? s : "", n);
}

static void
s_pack_field(msgpack_packer *pk, const pl_env_t *env, pl_field_t f)
{
    const void *slot = s_cslot(env, f);
    switch (s_field_kind[f]) {
    case K_U64:
        msgpack_pack_uint64(pk, *(const uint64_t *) slot);
        break;
    case K_I64:
        msgpack_pack_int64(pk, *(const int64_t *) slot);
        break;
    case K_F64:
        msgpack_pack_double(pk, *(const double *) slot);
        break;
    case K_BOOL:
        if (*(const bool *) slot)
            msgpack_pack_true(pk);
        else
            msgpack_pack_false(pk);
        break;
    case K_STR:
        s_pack_str(pk, *(char *const *) slot);
        break;
    case K_HIST: {
        const pl_hist_t *h = slot;
        msgpack_pack_array(pk, h->n);
        for (size_t i = 0; i < h->n; i++) {
            msgpack_pack_array(pk, 7);
            s_pack_str(pk, h->v[i].id);
            s_pack_str(pk, h->v[i].role);
            s_pack_str(pk, h->v[i].text);
            s_pack_str(pk, h->v[i].conn);
            msgpack_pack_double(pk, h->v[i].ts);
            msgpack_pack_int64(pk, h->v[i].ord);
            msgpack_pack_int64(pk, h->v[i].finish);
        }
        break;
    }
    case K_SESSV: {
        const pl_sessv_t *s = slot;
        msgpack_pack_array(pk, s->n);
        for (size_t i = 0; i < s->n; i++) {
            msgpack_pack_array(pk, 7);
            s_pack_str(pk, s->v[i].id);
            s_pack_str(pk, s->v[i].model);
            s_pack_str(pk, s->v[i].kind);
            s_pack_str(pk, s->v[i].name);
            msgpack_pack_int64(pk, s->v[i].messages);
            msgpack_pack_int64(pk, s->v[i].members);
            msgpack_pack_double(pk, s->v[i].created);
        }
        break;
    }
    case K_I64V: {
        const pl_i64v_t *v = slot;
        msgpack_pack_array(pk, v->n);
        for (size_t i = 0; i < v->n; i++)
            msgpack_pack_int64(pk, v->v[i]);
        break;
    }
    case K_BINV: {
        const pl_binv_t *b = slot;
        msgpack_pack_array(pk, b->n);
        for (size_t i = 0; i < b->n; i++) {
            msgpack_pack_bin(pk, b->v[i].n);
            msgpack_pack_bin_body(pk, b->v[i].p, b->v[i].n);
        }
        break;
    }
    }
}

int
pl_env_encode(const pl_env_t *env, char **out, size_t *len)
{
    msgpack_sbuffer sbuf;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sbuf);
    /* Start small and let msgpack double it: its first buffer is 8 KiB, and an
       8 KiB malloc and free per envelope grew and trimmed the worker threads'
       heaps (mprotect): 12 % of a worker's CPU in fan-out (perf). Most
       envelopes are a few hundred bytes. */
    sbuf.data = malloc(256);
    sbuf.alloc = sbuf.data ? 256 : 0;
    msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);

    size_t n = 1;
    for (int f = 0; f < PL_F_COUNT_; f++)
        n += pl_env_has(env, (pl_field_t) f);
    msgpack_pack_map(&pk, n);
    msgpack_pack_uint8(&pk, 0);
    msgpack_pack_uint32(&pk, (uint32_t) env->type);
    for (int f = 0; f < PL_F_COUNT_; f++) {
        if (!pl_env_has(env, (pl_field_t) f))
            continue;
        msgpack_pack_uint32(&pk, (uint32_t) f + 1);
        s_pack_field(&pk, env, (pl_field_t) f);
    }
    if (!sbuf.data) {
        msgpack_sbuffer_destroy(&sbuf);
        return -PL_E_NOMEM;
    }
    *len = sbuf.size; /* before release, which zeroes it */
    *out = msgpack_sbuffer_release(&sbuf);
    msgpack_sbuffer_destroy(&sbuf);
    return 0;
}

/* ---- decode ---- */

static int
s_get_str(const msgpack_object *o, char **out)
{
    if (o->type != MSGPACK_OBJECT_STR)
        return -PL_E_BAD_FRAME;
    /* msgpack-c gives a NULL ptr for "": memchr(NULL, ..., 0) is UB */
    if (o->via.str.size && memchr(o->via.str.ptr, '\0', o->via.str.size))
        return -PL_E_BAD_FRAME;
    *out = s_strndup(o->via.str.ptr, o->via.str.size);
    return *out ? 0 : -PL_E_NOMEM;
}

static int
s_get_i64(const msgpack_object *o, int64_t *out)
{
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (o->via.u64 > (uint64_t) INT64_MAX)
            return -PL_E_BAD_FRAME;
        *out = (int64_t) o->via.u64;
        return 0;
    }
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        *out = o->via.i64;
        return 0;
    }
    return -PL_E_BAD_FRAME;
}

static int
s_get_f64(const msgpack_object *o, double *out)
{
    if (o->type == MSGPACK_OBJECT_FLOAT64 || o->type == MSGPACK_OBJECT_FLOAT32) {
        *out = o->via.f64;
        return 0;
    }
    return -PL_E_BAD_FRAME;
}

static int
s_get_hist(const msgpack_object *o, pl_hist_t *h)
{
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size > PL_ENV_LIST_MAX)
        return -PL_E_BAD_FRAME;
    size_t n = o->via.array.size;
    h->v = calloc(n ? n : 1, sizeof *h->v);
    if (!h->v)
        return -PL_E_NOMEM;
    for (size_t i = 0; i < n; i++) {
        const msgpack_object *e = &o->via.array.ptr[i];
        if (e->type != MSGPACK_OBJECT_ARRAY || e->via.array.size != 7)
            return -PL_E_BAD_FRAME;
        const msgpack_object *a = e->via.array.ptr;
        h->n = i + 1; /* so a partial entry is freed on failure */
        int rc = s_get_str(&a[0], &h->v[i].id);
        if (rc == 0)
            rc = s_get_str(&a[1], &h->v[i].role);
        if (rc == 0)
            rc = s_get_str(&a[2], &h->v[i].text);
        if (rc == 0)
            rc = s_get_str(&a[3], &h->v[i].conn);
        if (rc == 0)
            rc = s_get_f64(&a[4], &h->v[i].ts);
        if (rc == 0)
            rc = s_get_i64(&a[5], &h->v[i].ord);
        if (rc == 0)
            rc = s_get_i64(&a[6], &h->v[i].finish);
        if (rc != 0)
            return rc;
    }
    h->n = n;
    return 0;
}

static int
s_get_sessv(const msgpack_object *o, pl_sessv_t *s)
{
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size > PL_ENV_LIST_MAX)
        return -PL_E_BAD_FRAME;
    size_t n = o->via.array.size;
    s->v = calloc(n ? n : 1, sizeof *s->v);
    if (!s->v)
        return -PL_E_NOMEM;
    for (size_t i = 0; i < n; i++) {
        const msgpack_object *e = &o->via.array.ptr[i];
        if (e->type != MSGPACK_OBJECT_ARRAY || e->via.array.size != 7)
            return -PL_E_BAD_FRAME;
        const msgpack_object *a = e->via.array.ptr;
        s->n = i + 1;
        int rc = s_get_str(&a[0], &s->v[i].id);
        if (rc == 0)
            rc = s_get_str(&a[1], &s->v[i].model);
        if (rc == 0)
            rc = s_get_str(&a[2], &s->v[i].kind);
        if (rc == 0)
            rc = s_get_str(&a[3], &s->v[i].name);
        if (rc == 0)
            rc = s_get_i64(&a[4], &s->v[i].messages);
        if (rc == 0)
            rc = s_get_i64(&a[5], &s->v[i].members);
        if (rc == 0)
            rc = s_get_f64(&a[6], &s->v[i].created);
        if (rc != 0)
            return rc;
    }
    s->n = n;
    return 0;
}

static int
s_get_i64v(const msgpack_object *o, pl_i64v_t *v)
{
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size > PL_ENV_LIST_MAX)
        return -PL_E_BAD_FRAME;
    size_t n = o->via.array.size;
    v->v = calloc(n ? n : 1, sizeof *v->v);
    if (!v->v)
        return -PL_E_NOMEM;
    v->n = n;
    for (size_t i = 0; i < n; i++)
        if (s_get_i64(&o->via.array.ptr[i], &v->v[i]) != 0)
            return -PL_E_BAD_FRAME;
    return 0;
}

static int
s_get_binv(const msgpack_object *o, pl_binv_t *b)
{
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size > PL_ENV_LIST_MAX)
        return -PL_E_BAD_FRAME;
    size_t n = o->via.array.size;
    b->v = calloc(n ? n : 1, sizeof *b->v);
    if (!b->v)
        return -PL_E_NOMEM;
    for (size_t i = 0; i < n; i++) {
        const msgpack_object *e = &o->via.array.ptr[i];
        if (e->type != MSGPACK_OBJECT_BIN)
            return -PL_E_BAD_FRAME;
        b->n = i + 1;
        b->v[i].p = malloc(e->via.bin.size ? e->via.bin.size : 1);
        if (!b->v[i].p)
            return -PL_E_NOMEM;
        if (e->via.bin.size)
            memcpy(b->v[i].p, e->via.bin.ptr, e->via.bin.size);
        b->v[i].n = e->via.bin.size;
    }
    b->n = n;
    return 0;
}

static int
s_get_field(pl_env_t *env, pl_field_t f, const msgpack_object *o)
{
    void *slot = s_slot(env, f);
    switch (s_field_kind[f]) {
    case K_U64:
        if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
            return -PL_E_BAD_FRAME;
        *(uint64_t *) slot = o->via.u64;
        return 0;
    case K_I64:
        return s_get_i64(o, slot);
    case K_F64:
        return s_get_f64(o, slot);
    case K_BOOL:
        if (o->type != MSGPACK_OBJECT_BOOLEAN)
            return -PL_E_BAD_FRAME;
        *(bool *) slot = o->via.boolean;
        return 0;
    case K_STR:
        return s_get_str(o, slot);
    case K_HIST:
        return s_get_hist(o, slot);
    case K_SESSV:
        return s_get_sessv(o, slot);
    case K_I64V:
        return s_get_i64v(o, slot);
    case K_BINV:
        return s_get_binv(o, slot);
    }
    return -PL_E_BAD_FRAME;
}

/* Big-endian unsigned of `n` bytes at p. */
static uint64_t
s_be(const unsigned char *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* msgpack-c allocates what a container's header declares before reading
   it: without this check, 7 bytes (a map "of 2^32 entries") ask for
   256 GiB. Checked first, objects number at most len, and so does what the
   unpacker allocates for them. */
int
pl_mp_check(const void *buf, size_t len, size_t *objlen)
{
    const unsigned char *p = buf;
    size_t at = 0;
    uint64_t pending = 1; /* objects still to read */
    while (pending > 0) {
        if (at >= len)
            return 0;
        unsigned c = p[at++];
        uint64_t items = 0, skip = 0; /* elements it adds; bytes after its header */
        size_t w = 0;                 /* width of a length field that follows */
        if (c == 0xC1) {
            return -1; /* never used */
        } else if (c >= 0x80 && c <= 0x8F) {
            items = 2 * (c & 0x0F);
        } else if (c >= 0x90 && c <= 0x9F) {
            items = c & 0x0F;
        } else if (c >= 0xA0 && c <= 0xBF) {
            skip = c & 0x1F;
        } else if (c >= 0xC4 && c <= 0xC6) {
            w = (size_t) 1 << (c - 0xC4); /* bin 8/16/32 */
        } else if (c >= 0xC7 && c <= 0xC9) {
            w = (size_t) 1 << (c - 0xC7); /* ext 8/16/32, then its type byte */
            skip = 1;
        } else if (c == 0xCA || c == 0xCB) {
            skip = c == 0xCA ? 4 : 8;
        } else if (c >= 0xCC && c <= 0xD3) {
            skip = (uint64_t) 1 << ((c - 0xCC) % 4); /* uint, int 8..64 */
        } else if (c >= 0xD4 && c <= 0xD8) {
            skip = 1 + ((uint64_t) 1 << (c - 0xD4)); /* fixext: type, 1..16 */
        } else if (c >= 0xD9 && c <= 0xDB) {
            w = (size_t) 1 << (c - 0xD9); /* str 8/16/32 */
        } else if (c >= 0xDC && c <= 0xDF) {
            w = c == 0xDC || c == 0xDE ? 2 : 4; /* array, map 16/32 */
        }                                       /* else fixint, nil, bool: the header is the whole object */
        if (w) {
            if (len - at < w)
                return 0;
            uint64_t n = s_be(p + at, w);
            at += w;
            if (c >= 0xDC)
                items = c >= 0xDE ? 2 * n : n;
            else
                skip += n;
        }
        if (skip > len - at || items > len - at)
            return 0;
        at += (size_t) skip;
        pending += items;
        pending--;
    }
    if (objlen)
        *objlen = at;
    return 1;
}

/* One msgpack zone per thread, cleared after every decode and kept: a zone
   per decode (msgpack_unpacked_init) meant an 8 KiB malloc per envelope,
   which grew and shrank the thread's heap with mprotect — 15 % of the edge
   thread's CPU in fan-out (perf). Freed when the thread exits. */
static pthread_key_t s_zone_key;
static bool s_zone_key_ok;
static pthread_once_t s_zone_once = PTHREAD_ONCE_INIT;

static void
s_zone_free(void *zone)
{
    msgpack_zone_free(zone);
}

static void
s_zone_key_init(void)
{
    s_zone_key_ok = pthread_key_create(&s_zone_key, s_zone_free) == 0;
}

/* The thread's zone; without a key (pthread_key_create failed) or a slot, a
   zone of the caller's own (*own: free it after the decode). */
static msgpack_zone *
s_zone(bool *own)
{
    pthread_once(&s_zone_once, s_zone_key_init);
    msgpack_zone *z = s_zone_key_ok ? pthread_getspecific(s_zone_key) : NULL;
    *own = false;
    if (z)
        return z;
    z = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    if (z && (!s_zone_key_ok || pthread_setspecific(s_zone_key, z) != 0))
        *own = true;
    return z;
}

static int
s_decode(const char *buf, size_t len, pl_env_t *env, bool check_required)
{
    pl_env_init(env, PL_MSG_NONE_);
    if (!buf || len == 0 || len > PL_ENV_MAX || pl_mp_check(buf, len, NULL) != 1)
        return -PL_E_BAD_FRAME;

    bool own;
    msgpack_zone *zone = s_zone(&own);
    if (!zone)
        return -PL_E_NOMEM;
    msgpack_object obj;
    size_t off = 0;
    int rc = -PL_E_BAD_FRAME;
    if (msgpack_unpack(buf, len, &off, zone, &obj) != MSGPACK_UNPACK_SUCCESS)
        goto out;
    if (off != len || obj.type != MSGPACK_OBJECT_MAP)
        goto out;

    const msgpack_object_map *map = &obj.via.map;
    bool have_type = false;
    for (uint32_t i = 0; i < map->size; i++) {
        const msgpack_object *k = &map->ptr[i].key;
        const msgpack_object *v = &map->ptr[i].val;
        if (k->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
            goto out;
        if (k->via.u64 == 0) {
            if (have_type || v->type != MSGPACK_OBJECT_POSITIVE_INTEGER || v->via.u64 == 0 ||
                v->via.u64 >= PL_MSG_COUNT_)
                goto out;
            env->type = (pl_msg_t) v->via.u64;
            have_type = true;
            continue;
        }
        if (k->via.u64 > PL_F_COUNT_)
            goto out;
        pl_field_t f = (pl_field_t) (k->via.u64 - 1);
        if (pl_env_has(env, f))
            goto out;
        env->present |= 1ull << f; /* before parsing: partial values get freed */
        rc = s_get_field(env, f, v);
        if (rc != 0)
            goto out;
        rc = -PL_E_BAD_FRAME;
    }
    if (have_type && (!check_required || (env->present & s_required[env->type]) == s_required[env->type]))
        rc = 0;
out:
    if (own)
        msgpack_zone_free(zone);
    else
        msgpack_zone_clear(zone); /* the fields were copied out */
    if (rc != 0) {
        pl_env_reset(env);
        env->type = PL_MSG_NONE_;
    }
    return rc;
}

int
pl_env_decode(const char *buf, size_t len, pl_env_t *env)
{
    return s_decode(buf, len, env, true);
}
