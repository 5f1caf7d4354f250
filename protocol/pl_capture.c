/*  pl_capture — the capture format: packing and the pure reader. */
#include "pl_capture.h"

#include "pl_envelope.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *const s_kinds[PL_CAP_KIND_COUNT_] = {"open", "frame", "close", "lost"};
/* Elements of each kind's array. */
static const uint32_t s_arity[PL_CAP_KIND_COUNT_] = {6, 7, 6, 5};

const char *
pl_cap_kind_name(int kind)
{
    return kind >= 0 && kind < PL_CAP_KIND_COUNT_ ? s_kinds[kind] : "?";
}

static void
s_pack_str(msgpack_packer *pk, const char *s, size_t n)
{
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

void
pl_cap_pack_header(msgpack_packer *pk, const pl_cap_header_t *h)
{
    msgpack_pack_map(pk, 4);
    s_pack_str(pk, "format", 6);
    s_pack_str(pk, PL_CAP_MAGIC, strlen(PL_CAP_MAGIC));
    s_pack_str(pk, "version", 7);
    msgpack_pack_int(pk, h->version);
    s_pack_str(pk, "created_us", 10);
    msgpack_pack_int64(pk, h->created_us);
    s_pack_str(pk, "source", 6);
    s_pack_str(pk, h->source, strnlen(h->source, PL_CAP_NAME_MAX));
}

void
pl_cap_pack_rec(msgpack_packer *pk, const pl_cap_rec_t *r)
{
    msgpack_pack_array(pk, s_arity[r->kind]);
    msgpack_pack_int(pk, r->kind);
    msgpack_pack_uint64(pk, r->seq);
    msgpack_pack_int64(pk, r->t_us);
    msgpack_pack_uint64(pk, r->conn);
    switch (r->kind) {
    case PL_CAP_OPEN:
        s_pack_str(pk, r->path, r->path_len);
        s_pack_str(pk, r->dialect, r->dialect_len);
        break;
    case PL_CAP_FRAME:
        msgpack_pack_int(pk, r->dir);
        msgpack_pack_int(pk, r->opcode);
        msgpack_pack_bin(pk, r->len);
        msgpack_pack_bin_body(pk, r->data, r->len);
        break;
    case PL_CAP_CLOSE:
        msgpack_pack_int(pk, r->code);
        msgpack_pack_int(pk, r->by);
        break;
    default: /* LOST */
        msgpack_pack_uint64(pk, r->count);
        break;
    }
}

static int
s_fail(char *err, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, size, fmt, ap);
    va_end(ap);
    return -1;
}

/* An unsigned integer element, at most `max`. */
static bool
s_uint(const msgpack_object *o, uint64_t max, uint64_t *out)
{
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 > max)
        return false;
    *out = o->via.u64;
    return true;
}

static bool
s_name(const msgpack_object *o, const char **s, size_t *n)
{
    if (o->type != MSGPACK_OBJECT_STR || o->via.str.size > PL_CAP_NAME_MAX)
        return false;
    *s = o->via.str.ptr;
    *n = o->via.str.size;
    return true;
}

int
pl_cap_rec_from(const msgpack_object *o, pl_cap_rec_t *r, char *err, size_t errsize)
{
    memset(r, 0, sizeof *r);
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size < 4)
        return s_fail(err, errsize, "a record is an array of at least 4 elements");
    const msgpack_object *e = o->via.array.ptr;
    uint64_t kind, t;
    if (!s_uint(&e[0], PL_CAP_KIND_COUNT_ - 1, &kind))
        return s_fail(err, errsize, "unknown record kind");
    r->kind = (pl_cap_kind_t) kind;
    if (o->via.array.size != s_arity[kind])
        return s_fail(err, errsize, "a %s record has %u elements, not %u", s_kinds[kind], s_arity[kind],
                      o->via.array.size);
    if (!s_uint(&e[1], UINT64_MAX, &r->seq))
        return s_fail(err, errsize, "seq is not an unsigned integer");
    if (!s_uint(&e[2], INT64_MAX, &t))
        return s_fail(err, errsize, "time is not a non-negative integer");
    r->t_us = (int64_t) t;
    if (!s_uint(&e[3], UINT64_MAX, &r->conn))
        return s_fail(err, errsize, "conn is not an unsigned integer");
    uint64_t v, op;
    switch (r->kind) {
    case PL_CAP_OPEN:
        if (!s_name(&e[4], &r->path, &r->path_len) || !s_name(&e[5], &r->dialect, &r->dialect_len))
            return s_fail(err, errsize, "path and dialect are strings of at most %d bytes", PL_CAP_NAME_MAX);
        return 0;
    case PL_CAP_FRAME:
        if (!s_uint(&e[4], PL_CAP_OUT, &v))
            return s_fail(err, errsize, "direction is 0 (in) or 1 (out)");
        if (!s_uint(&e[5], PL_CAP_BINARY, &op) || op < PL_CAP_TEXT)
            return s_fail(err, errsize, "opcode is 1 (text) or 2 (binary)");
        if (e[6].type != MSGPACK_OBJECT_BIN || e[6].via.bin.size > PL_CAP_PAYLOAD_MAX)
            return s_fail(err, errsize, "payload is binary of at most %u bytes", PL_CAP_PAYLOAD_MAX);
        r->dir = (pl_cap_dir_t) v;
        r->opcode = (int) op;
        r->data = e[6].via.bin.ptr;
        r->len = e[6].via.bin.size;
        return 0;
    case PL_CAP_CLOSE:
        if (!s_uint(&e[4], 4999, &v))
            return s_fail(err, errsize, "close code is 0..4999");
        r->code = (int) v;
        if (!s_uint(&e[5], PL_CAP_OUT, &v))
            return s_fail(err, errsize, "closed by is 0 (client) or 1 (server)");
        r->by = (pl_cap_dir_t) v;
        return 0;
    default:
        if (!s_uint(&e[4], UINT64_MAX, &r->count))
            return s_fail(err, errsize, "lost count is not an unsigned integer");
        return 0;
    }
}

/* Unpacks the object at r->off into r->u: 1, 0 at the end of the buffer,
   or PL_CAP_CORRUPT / PL_CAP_TRUNCATED with r->err. */
static int
s_unpack(pl_cap_reader_t *r, const char *what)
{
    if (r->off >= r->len)
        return 0;
    size_t at = r->off;
    int shape = pl_mp_check(r->buf + at, r->len - at, NULL);
    msgpack_unpack_return rc = shape == 1   ? msgpack_unpack_next(&r->u, r->buf, r->len, &r->off)
                               : shape == 0 ? MSGPACK_UNPACK_CONTINUE
                                            : MSGPACK_UNPACK_PARSE_ERROR;
    if (rc == MSGPACK_UNPACK_SUCCESS || rc == MSGPACK_UNPACK_EXTRA_BYTES)
        return 1;
    r->off = r->len; /* nothing after a bad object is trusted */
    if (rc == MSGPACK_UNPACK_CONTINUE) {
        snprintf(r->err, sizeof r->err, "%s at byte %zu is cut short (the capture ends mid-record)", what, at);
        return PL_CAP_TRUNCATED;
    }
    snprintf(r->err, sizeof r->err, "%s at byte %zu is not msgpack%s", what, at,
             rc == MSGPACK_UNPACK_NOMEM_ERROR ? " (or too deep)" : "");
    return PL_CAP_CORRUPT;
}

static bool
s_key(const msgpack_object_kv *kv, const char *key)
{
    size_t n = strlen(key);
    return kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == n && memcmp(kv->key.via.str.ptr, key, n) == 0;
}

int
pl_cap_reader_open(pl_cap_reader_t *r, const char *buf, size_t len)
{
    memset(r, 0, sizeof *r);
    r->buf = buf;
    r->len = len;
    msgpack_unpacked_init(&r->u);
    int rc = s_unpack(r, "the header");
    if (rc == 0)
        snprintf(r->err, sizeof r->err, "empty file: not a capture");
    if (rc <= 0)
        return -1;
    const msgpack_object *o = &r->u.data;
    bool magic = false, version = false;
    if (o->type == MSGPACK_OBJECT_MAP) {
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object_kv *kv = &o->via.map.ptr[i];
            const msgpack_object *v = &kv->val;
            if (s_key(kv, "format"))
                magic = v->type == MSGPACK_OBJECT_STR && v->via.str.size == strlen(PL_CAP_MAGIC) &&
                        memcmp(v->via.str.ptr, PL_CAP_MAGIC, v->via.str.size) == 0;
            else if (s_key(kv, "version") && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER && v->via.u64 <= 1000000) {
                r->header.version = (int) v->via.u64;
                version = true;
            } else if (s_key(kv, "created_us") && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
                       v->via.u64 <= INT64_MAX)
                r->header.created_us = (int64_t) v->via.u64;
            else if (s_key(kv, "source") && v->type == MSGPACK_OBJECT_STR) {
                size_t n = v->via.str.size < PL_CAP_NAME_MAX ? v->via.str.size : PL_CAP_NAME_MAX;
                memcpy(r->header.source, v->via.str.ptr, n);
                r->header.source[n] = '\0';
            }
        }
    }
    if (!magic || !version)
        return s_fail(r->err, sizeof r->err, "not a Parley capture (no \"format\":\"%s\" header)", PL_CAP_MAGIC);
    if (r->header.version != PL_CAP_VERSION)
        return s_fail(r->err, sizeof r->err, "capture version %d; this build reads version %d",
                      r->header.version, PL_CAP_VERSION);
    return 0;
}

int
pl_cap_reader_next(pl_cap_reader_t *r, pl_cap_rec_t *rec)
{
    size_t at = r->off;
    int rc = s_unpack(r, "a record");
    if (rc <= 0)
        return rc;
    char why[120];
    if (pl_cap_rec_from(&r->u.data, rec, why, sizeof why) != 0) {
        snprintf(r->err, sizeof r->err, "record %llu at byte %zu: %s", (unsigned long long) r->records + 1, at, why);
        r->off = r->len;
        return PL_CAP_CORRUPT;
    }
    r->records++;
    return 1;
}

void
pl_cap_reader_close(pl_cap_reader_t *r)
{
    msgpack_unpacked_destroy(&r->u);
}
