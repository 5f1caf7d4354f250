/*  scan — reads the few top-level fields of a server frame that the bench
    needs, without building a tree: the receive path must cost far less
    than the server's send path, or the bench measures itself.

    One pass over the frame, left to right: keys at the top level are
    compared with the handful the bench wants (type, seq, chunk_number,
    total_chunks, is_final, session_id, code, id); every other value is
    skipped, nested objects and arrays included (strings inside them are
    honoured, nesting is bounded by PB_SCAN_DEPTH). Nothing is allocated
    and nothing past `len` is read. Rare control frames that need more
    (session ids to keep, error messages) are parsed with cJSON by the
    caller. */
#define _GNU_SOURCE /* memmem */
#include <string.h>

#include "bench.h"

static const char *
s_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* `p` at an opening quote: the string's raw contents in *s, *n; returns
   the byte after the closing quote, NULL if there is none. */
static const char *
s_string(const char *p, const char *end, const char **s, size_t *n)
{
    const char *start = ++p;
    while (p < end) {
        if (*p == '\\') {
            p += 2;
            continue;
        }
        if (*p == '"') {
            *s = start;
            *n = (size_t) (p - start);
            return p + 1;
        }
        p++;
    }
    return NULL;
}

/* Skips one value of any kind; NULL if it is cut short or too deep. */
static const char *
s_skip(const char *p, const char *end)
{
    const char *s;
    size_t n;
    if (p >= end)
        return NULL;
    if (*p == '"')
        return s_string(p, end, &s, &n);
    if (*p == '{' || *p == '[') {
        int depth = 0;
        while (p < end) {
            char c = *p;
            if (c == '"') {
                p = s_string(p, end, &s, &n);
                if (!p)
                    return NULL;
                continue;
            }
            if (c == '{' || c == '[') {
                if (++depth > PB_SCAN_DEPTH)
                    return NULL;
            } else if (c == '}' || c == ']') {
                if (--depth == 0)
                    return p + 1;
            }
            p++;
        }
        return NULL;
    }
    while (p < end && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\n' && *p != '\r' && *p != '\t')
        p++;
    return p;
}

/* An integer value (no fraction, no exponent); -1 if it is not one. */
static const char *
s_int(const char *p, const char *end, int64_t *out)
{
    const char *q = p;
    bool neg = q < end && *q == '-';
    if (neg)
        q++;
    int64_t v = 0;
    const char *digits = q;
    while (q < end && *q >= '0' && *q <= '9' && q - digits < 18)
        v = v * 10 + (*q++ - '0');
    bool whole = q > digits && (q == end || (*q != '.' && *q != 'e' && *q != 'E' && !(*q >= '0' && *q <= '9')));
    *out = whole ? (neg ? -v : v) : -1;
    return s_skip(p, end);
}

static bool
s_is(const char *s, size_t n, const char *lit, size_t litn)
{
    return n == litn && memcmp(s, lit, n) == 0;
}
#define S_IS(s, n, lit) s_is((s), (n), lit, sizeof lit - 1)

static pb_ftype_t
s_type(const char *s, size_t n, const char *upd, size_t updn)
{
    if (S_IS(s, n, "chunk"))
        return PB_F_CHUNK;
    if (S_IS(s, n, "session_update"))
        return S_IS(upd, updn, "message_added") ? PB_F_MESSAGE_ADDED : PB_F_UPDATE;
    if (S_IS(s, n, "status"))
        return PB_F_STATUS;
    if (S_IS(s, n, "response_start"))
        return PB_F_RESPONSE_START;
    if (S_IS(s, n, "response_complete"))
        return PB_F_RESPONSE_COMPLETE;
    if (S_IS(s, n, "delivery_confirmation"))
        return PB_F_DELIVERY;
    if (S_IS(s, n, "pong"))
        return PB_F_PONG;
    if (S_IS(s, n, "connected"))
        return PB_F_CONNECTED;
    if (S_IS(s, n, "session_created"))
        return PB_F_SESSION_CREATED;
    if (S_IS(s, n, "session_joined"))
        return PB_F_SESSION_JOINED;
    if (S_IS(s, n, "error"))
        return PB_F_ERROR;
    return PB_F_OTHER;
}

void
pb_scan(const char *buf, size_t len, pb_frame_t *f)
{
    const char *p = buf, *end = buf + len;
    const char *type = NULL, *upd = NULL;
    size_t typen = 0, updn = 0;
    memset(f, 0, sizeof *f);
    f->seq = f->chunk_number = f->total_chunks = f->id = -1;
    p = s_ws(p, end);
    if (p >= end || *p != '{')
        return;
    p++;
    for (;;) {
        p = s_ws(p, end);
        if (p < end && *p == '}')
            break;
        const char *key;
        size_t keyn;
        if (p >= end || *p != '"' || !(p = s_string(p, end, &key, &keyn)))
            return;
        p = s_ws(p, end);
        if (p >= end || *p != ':')
            return;
        p = s_ws(p + 1, end);
        if (p >= end)
            return;
        bool str = *p == '"';
        const char *sv = NULL;
        size_t svn = 0;
        if (str && (S_IS(key, keyn, "type") || S_IS(key, keyn, "session_id") || S_IS(key, keyn, "code") ||
                    S_IS(key, keyn, "update_type"))) {
            p = s_string(p, end, &sv, &svn);
            if (S_IS(key, keyn, "type"))
                type = sv, typen = svn;
            else if (S_IS(key, keyn, "session_id"))
                f->sid = sv, f->sid_len = svn;
            else if (S_IS(key, keyn, "code"))
                f->code = sv, f->code_len = svn;
            else
                upd = sv, updn = svn;
        } else if (S_IS(key, keyn, "seq")) {
            p = s_int(p, end, &f->seq);
        } else if (S_IS(key, keyn, "chunk_number")) {
            p = s_int(p, end, &f->chunk_number);
        } else if (S_IS(key, keyn, "total_chunks")) {
            p = s_int(p, end, &f->total_chunks);
        } else if (S_IS(key, keyn, "id") && !str) {
            p = s_int(p, end, &f->id);
        } else if (S_IS(key, keyn, "is_final")) {
            f->is_final = end - p >= 4 && memcmp(p, "true", 4) == 0;
            p = s_skip(p, end);
        } else {
            p = s_skip(p, end);
        }
        if (!p)
            return;
        p = s_ws(p, end);
        if (p < end && *p == ',') {
            p++;
            continue;
        }
        if (p < end && *p == '}')
            break;
        return;
    }
    f->ok = type != NULL;
    f->type = type ? s_type(type, typen, upd, updn) : PB_F_OTHER;
}

uint32_t
pb_scan_turn_tag(const char *buf, size_t len)
{
    static const char key[] = "\"content\":\"t";
    const char *p = memmem(buf, len, key, sizeof key - 1);
    if (!p)
        return 0;
    const char *end = buf + len;
    p += sizeof key - 1;
    uint32_t k = 0;
    while (p < end && *p >= '0' && *p <= '9' && k < 100000000u)
        k = k * 10 + (uint32_t) (*p++ - '0');
    return k;
}
