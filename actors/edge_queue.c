/*  edge_queue — every WebSocket's outbound queue: bounded, coalescing.

    A connection has a ring of frames (it grows by doubling up to
    --out-queue). Broadcast frames are shared and refcounted; each queue is
    charged a frame's whole `size`, so what one queue is charged bounds what
    it can keep alive even if every other sharer has gone. Two bounds, as in
    Redis's client output buffer limits:

    - Soft (--out-soft frames): a connection with this many frames queued
      whose socket is refusing data is a slow consumer. Its stream chunks
      stop being queued one by one: the first becomes a merged chunk frame,
      private to the connection, and the next chunks of the same answer are
      appended to it while it waits. It stands for all of them: their texts
      concatenated, the newest chunk's seq, chunk_number and is_final. It is
      rendered to JSON only when it leaves the queue, so a merge costs a copy
      of the new text, never a re-render of what has accumulated.
    - Hard (--out-queue frames, --out-bytes bytes): past either, the queue is
      dropped and the connection closed with 1013; the client may rejoin
      with last_seq.

    A chunk is merged only into its session's newest queued frame (frames of
    other sessions may be passed over), so a session's events stay in seq
    order. lws_write() copies whatever part of a frame the socket does not
    take, so a frame in the queue is never partly written: the one lws holds
    is outside the queue and not ours to change.

    Writing: one WRITEABLE callback sends what is queued, up to S_WRITE_BURST
    frames and PL_EDGE_BATCH bytes, in ONE lws_write() — the frames put back to back
    in the edge's batch buffer, each behind its RFC 6455 header, written with
    LWS_WRITE_RAW. lws has no call that writes several frames at once, and a
    send() per frame was most of the server's CPU in fan-out (perf, see
    docs/benchmarks.md): the kernel's loopback path costs per call, not per
    byte. Server frames are unmasked and we negotiate no extension, so the
    header is all there is to a frame; lws still buffers what the socket does
    not take, and sends its own control frames between our writes.

    Edge thread only. */
#include <stdlib.h>
#include <string.h>

#include "../protocol/pl_util.h"
#include "../transport/pl_log.h"
#include "edge_int.h"

/* Frames and bytes written per writeable callback, in one lws_write(). */
#define S_WRITE_BURST 64
/* First ring size: most connections never queue more. */
#define S_RING_MIN 16
/* Queued frames looked at, newest first, for a chunk to merge into: past
   this many other sessions' events the chunk is appended. */
#define S_MERGE_SCAN 32
/* Seconds a closing connection has to take its close frame: a slow
   consumer's socket may never become writeable again. Past it lws still
   queues the close frame and waits a few seconds for the client's answer. */
#define S_CLOSE_GRACE_S 5

/* What a merged frame costs: itself, its envelope, its text and ids. */
static size_t
s_merged_size(size_t textcap)
{
    return sizeof(pl_edge_frame_t) + sizeof(pl_env_t) + textcap + 2 * (PL_ID_MAX + 1);
}

pl_edge_frame_t *
pl_edge_frame_new(const char *json, size_t len, const pl_env_t *env)
{
    pl_edge_frame_t *f = malloc(sizeof *f + LWS_PRE + len);
    if (!f)
        return NULL;
    memset(f, 0, sizeof *f);
    f->refs = 1;
    f->len = len;
    f->size = sizeof *f + LWS_PRE + len;
    memcpy(f->buf + LWS_PRE, json, len);
    if (env && env->type >= PL_MSG_EV_MESSAGE_ADDED && env->type <= PL_MSG_EV_DELETED &&
        pl_env_has(env, PL_F_SESSION) && env->session)
        snprintf(f->session, sizeof f->session, "%s", env->session);
    return f;
}

void
pl_edge_frame_unref(pl_edge_frame_t *f)
{
    if (!f || --f->refs > 0)
        return;
    if (f->chunk) {
        pl_env_reset(f->chunk);
        free(f->chunk);
    }
    free(f);
}

/* ---- the ring ---- */

static pl_edge_frame_t **
s_slot(pss_t *pss, size_t i)
{
    return &pss->q[(pss->qhead + i) % pss->qcap];
}

static void
s_charge(pl_edge_t *self, pss_t *pss, size_t add, size_t remove)
{
    pss->qbytes = pss->qbytes + add - remove;
    self->stats.queued_bytes += (int64_t) add - (int64_t) remove;
}

static int
s_ring_grow(pl_edge_t *self, pss_t *pss)
{
    size_t max = (size_t) self->cfg->out_queue;
    size_t cap = pss->qcap ? pss->qcap * 2 : S_RING_MIN;
    if (cap > max)
        cap = max;
    if (cap <= pss->qcap)
        return -1;
    pl_edge_frame_t **q = malloc(cap * sizeof *q);
    if (!q)
        return -1;
    for (size_t i = 0; i < pss->qlen; i++)
        q[i] = *s_slot(pss, i);
    free(pss->q);
    pss->q = q;
    pss->qcap = cap;
    pss->qhead = 0;
    return 0;
}

static pl_edge_frame_t *
s_pop(pl_edge_t *self, pss_t *pss)
{
    pl_edge_frame_t *f = pss->q[pss->qhead];
    pss->qhead = (pss->qhead + 1) % pss->qcap;
    pss->qlen--;
    s_charge(self, pss, 0, f->size);
    return f;
}

static void
s_queue_clear(pl_edge_t *self, pss_t *pss)
{
    while (pss->qlen > 0)
        pl_edge_frame_unref(s_pop(self, pss));
}

void
pl_edge_queue_free(pl_edge_t *self, pss_t *pss)
{
    s_queue_clear(self, pss);
    free(pss->q);
    pss->q = NULL;
    pss->qcap = pss->qhead = 0;
}

/* Records the close frame's code and reason with lws, so that it is sent
   (after whatever the socket still holds) however the connection ends. */
static void
s_close_reason(pss_t *pss)
{
    const char *reason = pss->close_code == 1001   ? "server shutting down"
                         : pss->close_code == 1009 ? "frame too large"
                                                   : "slow consumer: resume with last_seq";
    lws_close_reason(pss->wsi, (enum lws_close_status) pss->close_code, (unsigned char *) reason, strlen(reason));
}

void
pl_edge_close(pl_edge_t *self, pss_t *pss, int code)
{
    if (pss->close_code)
        return;
    pss->close_code = code;
    if (code != LWS_CLOSE_STATUS_GOINGAWAY) { /* going away: what is queued goes first */
        s_queue_clear(self, pss);
        s_close_reason(pss);
    }
    lws_callback_on_writable(pss->wsi);
    lws_set_timeout(pss->wsi, PENDING_TIMEOUT_USER_OK, S_CLOSE_GRACE_S);
}

static void
s_slow_close(pl_edge_t *self, pss_t *pss, const char *bound)
{
    self->stats.slow_closed++;
    pl_log_warn("slow", "conn=c%016llx queued=%zu bytes=%zu bound=%s action=close-1013", (unsigned long long) pss->conn,
                pss->qlen, pss->qbytes, bound);
    pl_edge_close(self, pss, 1013);
}

/* ---- coalescing ---- */

/* Is the socket refusing data? Looked up once per WRITEABLE either way
   (nothing is written in between), so a burst costs one poll(), not one per
   frame: a poll per frame was 5 % of the edge's CPU in fan-out (perf). */
static bool
s_choked(pss_t *pss)
{
    if (!pss->choke_known) {
        pss->choked = lws_send_pipe_choked(pss->wsi);
        pss->choke_known = true;
    }
    return pss->choked;
}

/* A merged frame holding chunk `e` alone so far. `len` of a merged frame
   counts the bytes of its text; it has no JSON until it is written. */
static pl_edge_frame_t *
s_merged_new(const pl_env_t *e)
{
    pl_edge_frame_t *n = calloc(1, sizeof *n);
    if (!n)
        return NULL;
    n->refs = 1;
    n->merged = true;
    snprintf(n->session, sizeof n->session, "%s", e->session);
    n->chunk = malloc(sizeof *n->chunk);
    if (!n->chunk || pl_env_copy(n->chunk, e) != 0 ||
        (!n->chunk->text && pl_env_set_str(n->chunk, PL_F_TEXT, "") != 0)) {
        if (n->chunk)
            pl_env_reset(n->chunk);
        free(n->chunk);
        free(n);
        return NULL;
    }
    n->len = strlen(n->chunk->text);
    n->textcap = n->len + 1;
    n->size = s_merged_size(n->textcap);
    return n;
}

/* Appends chunk `e` to merged frame `m`: its text, and its seq,
   chunk_number and is_final (the newer ones). */
static int
s_merged_append(pl_edge_t *self, pss_t *pss, pl_edge_frame_t *m, const pl_env_t *e)
{
    const char *add = e->text ? e->text : "";
    size_t n = strlen(add);
    if (m->len + n + 1 > m->textcap) {
        size_t cap = m->textcap * 2 > m->len + n + 1 ? m->textcap * 2 : m->len + n + 1;
        char *text = realloc(m->chunk->text, cap);
        if (!text)
            return -1;
        m->chunk->text = text;
        m->textcap = cap;
    }
    memcpy(m->chunk->text + m->len, add, n + 1);
    m->len += n;
    pl_env_set_i64(m->chunk, PL_F_SEQ, e->seq);
    pl_env_set_i64(m->chunk, PL_F_NUMBER, e->number);
    pl_env_set_bool(m->chunk, PL_F_FLAG, pl_env_has(e, PL_F_FLAG) && e->flag);
    size_t old = m->size;
    m->size = s_merged_size(m->textcap);
    s_charge(self, pss, m->size, old);
    return 0;
}

/* The merged frame chunk `e` may be appended to: its session's newest
   queued frame, if that is a merged chunk of the same answer. */
static pl_edge_frame_t *
s_merge_target(pss_t *pss, const pl_env_t *e)
{
    for (size_t k = 0; k < pss->qlen && k < S_MERGE_SCAN; k++) {
        pl_edge_frame_t *m = *s_slot(pss, pss->qlen - 1 - k);
        if (m->session[0] && strcmp(m->session, e->session) != 0)
            continue; /* another session's event: order across sessions is free */
        if (m->merged && strcmp(m->chunk->respid, e->respid) == 0)
            return m;
        return NULL;
    }
    return NULL;
}

/* ---- enqueue and write ---- */

/* Appends `f` (taking a reference) within the hard bounds. */
static void
s_push(pl_edge_t *self, pss_t *pss, pl_edge_frame_t *f)
{
    if (pss->qlen >= (size_t) self->cfg->out_queue) {
        s_slow_close(self, pss, "out-queue");
        return;
    }
    /* One frame larger than the whole bound still goes to an empty queue. */
    if (pss->qlen > 0 && pss->qbytes + f->size > (size_t) self->cfg->out_bytes) {
        s_slow_close(self, pss, "out-bytes");
        return;
    }
    if (pss->qlen == pss->qcap && s_ring_grow(self, pss) != 0) {
        s_slow_close(self, pss, "memory");
        return;
    }
    f->refs++;
    *s_slot(pss, pss->qlen) = f;
    pss->qlen++;
    s_charge(self, pss, f->size, 0);
    lws_callback_on_writable(pss->wsi);
}

/* Coalesces chunk `e` if the connection is past its soft bound: 0 when it
   is taken care of (merged, or queued as a new merged frame). */
static int
s_coalesce(pl_edge_t *self, pss_t *pss, const pl_env_t *e)
{
    size_t hard = (size_t) self->cfg->out_queue;
    size_t soft = (size_t) self->cfg->out_soft < hard ? (size_t) self->cfg->out_soft : hard;
    /* Past the soft bound a chunk is merged if the socket is full. Past half
       the frame bound it is merged anyway: that is a burst the edge queued
       faster than any socket could take it (a model that answers at once),
       and what follows the chunks (response_complete) must still fit. */
    if (pss->qlen < soft || (pss->qlen < hard / 2 && !s_choked(pss)) || !e->respid)
        return -1;
    pl_edge_frame_t *m = s_merge_target(pss, e);
    if (m) {
        if (s_merged_append(self, pss, m, e) != 0)
            return -1;
        self->stats.coalesced++;
        if (pss->qbytes > (size_t) self->cfg->out_bytes)
            s_slow_close(self, pss, "out-bytes");
        return 0;
    }
    m = s_merged_new(e);
    if (!m)
        return -1;
    s_push(self, pss, m);
    pl_edge_frame_unref(m);
    return 0;
}

void
pl_edge_enqueue(pl_edge_t *self, pss_t *pss, pl_edge_frame_t *f, const pl_env_t *env)
{
    if (pss->close_code)
        return;
    if (env && env->type == PL_MSG_EV_CHUNK && f->session[0] && s_coalesce(self, pss, env) == 0)
        return;
    s_push(self, pss, f);
}

void
pl_edge_send_to(pl_edge_t *self, pss_t *pss, const pl_env_t *env)
{
    size_t len = 0;
    char *json = pl_session_render(env, &len);
    if (!json)
        return;
    pl_edge_frame_t *f = pl_edge_frame_new(json, len, NULL);
    free(json);
    if (f) {
        pl_edge_enqueue(self, pss, f, NULL);
        pl_edge_frame_unref(f);
    }
}

/* The frame's JSON, rendered now if it is a merged chunk (into *tmp, which
   the caller frees); NULL when out of memory. */
static const unsigned char *
s_frame_json(pl_edge_frame_t *f, size_t *len, char **tmp)
{
    *tmp = NULL;
    if (!f->merged) {
        *len = f->len;
        return f->buf + LWS_PRE;
    }
    *tmp = pl_session_render(f->chunk, len);
    return (const unsigned char *) *tmp;
}

/* RFC 6455 5.2: FIN + text opcode, then the length; unmasked (server to
   client). Returns the header's size. */
static size_t
s_ws_header(unsigned char *h, size_t len)
{
    h[0] = 0x81;
    if (len < 126) {
        h[1] = (unsigned char) len;
        return 2;
    }
    if (len < 65536) {
        h[1] = 126;
        h[2] = (unsigned char) (len >> 8);
        h[3] = (unsigned char) len;
        return 4;
    }
    h[1] = 127;
    for (int i = 0; i < 8; i++)
        h[2 + i] = (unsigned char) ((uint64_t) len >> (56 - 8 * i));
    return 10;
}

/* One frame that does not fit the batch: lws frames and writes it, from the
   LWS_PRE headroom a shared frame has (`json` is its buffer), or from a copy
   of a merged chunk's rendering, which has none. */
static int
s_write_alone(pl_edge_t *self, struct lws *wsi, const pss_t *pss, const pl_edge_frame_t *f, const unsigned char *json,
              size_t len)
{
    unsigned char *copy = NULL;
    if (f->merged && !(copy = malloc(LWS_PRE + len)))
        return -1;
    if (copy)
        memcpy(copy + LWS_PRE, json, len);
    int n = lws_write(wsi, copy ? copy + LWS_PRE : (unsigned char *) json, len, LWS_WRITE_TEXT);
    if (n >= 0 && self->tap)
        pl_tap_frame(self->tap, pss->conn, PL_CAP_OUT, PL_CAP_TEXT, json, len);
    free(copy);
    return n < 0 ? -1 : 0;
}

int
pl_edge_queue_write(pl_edge_t *self, struct lws *wsi, pss_t *pss)
{
    if (pss->close_code && (pss->close_code != LWS_CLOSE_STATUS_GOINGAWAY || pss->qlen == 0)) {
        s_close_reason(pss);
        return -1;
    }
    pss->choked = pss->choke_known = false;
    unsigned char *batch = self->batch + LWS_PRE;
    size_t used = 0, n = 0;
    struct {
        size_t at, len;
    } put[S_WRITE_BURST]; /* the batch's frames, tapped and counted once written */
    while (n < S_WRITE_BURST && pss->qlen > 0) {
        pl_edge_frame_t *f = pss->q[pss->qhead];
        size_t len = 0;
        char *tmp = NULL;
        const unsigned char *json = s_frame_json(f, &len, &tmp);
        if (!json && !used)
            return -1; /* the client would miss text: close; it may resume */
        if (!json || (used && used + 10 + len > PL_EDGE_BATCH)) {
            free(tmp); /* stays queued, rendered again next time: merged frames are rare */
            break;
        }
        f = s_pop(self, pss);
        if (10 + len > PL_EDGE_BATCH) { /* only ever the first: written alone */
            int rc = s_write_alone(self, wsi, pss, f, json, len);
            free(tmp);
            pl_edge_frame_unref(f);
            if (rc < 0)
                return -1;
            self->stats.frames_out++;
            break;
        }
        used += s_ws_header(batch + used, len);
        put[n].at = used;
        put[n++].len = len;
        memcpy(batch + used, json, len);
        used += len;
        free(tmp);
        pl_edge_frame_unref(f);
    }
    if (used && lws_write(wsi, batch, used, LWS_WRITE_RAW) < 0)
        return -1;
    self->stats.frames_out += (int64_t) n;
    for (size_t i = 0; self->tap && i < n; i++)
        pl_tap_frame(self->tap, pss->conn, PL_CAP_OUT, PL_CAP_TEXT, batch + put[i].at, put[i].len);
    if (lws_partial_buffered(wsi)) /* the socket did not take it all: lws holds the rest */
        pss->choked = pss->choke_known = true;
    if (pss->qlen > 0 || pss->close_code)
        lws_callback_on_writable(wsi);
    return 0;
}
