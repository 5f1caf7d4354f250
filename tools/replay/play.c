/*  play — replays the client side of a capture against a server
    (parley-replay play; its --help says what a user needs to know).

    Design. The capture is turned once into a plan: its client events (each
    connection's open, each IN frame, a client-initiated close) in file
    order, each with its offset from the capture's start and its gate: how
    many of the capture's OUT frames, in file order, had been sent before it.
    K copies of the plan run at once on one lws context and one thread. A
    copy walks the plan with one cursor and at most one action in flight (a
    connect, a write or a close): the next event is issued when it is due,
    when the previous one is done, and when the copy's watermark covers its
    gate. The watermark is the longest prefix of the capture's OUT frames
    whose counterparts have arrived: the n-th OUT frame of original
    connection X has its counterpart once replayed connection X has received
    n frames (or has closed). Since gates and watermarks only grow, the
    per-connection count vectors of the specification reduce to two
    integers, and the plan is the only queue: nothing grows with time.

    Ids the server mints differ between runs. A copy learns original →
    replayed ids by aligning the k-th OUT frame of an original connection
    with the k-th frame its replayed connection received (string values
    under "id" or "*_id" keys), and rewrites the client frames it sends with
    that map.

    Everything runs on the lws service thread: the callbacks and each copy's
    timer (an lws sorted-usec-list entry). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <libwebsockets.h>
#include <math.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "replay.h"

/* Most copies --multiply takes: beyond it a second machine is the tool. */
#define S_MULTIPLY_MAX 1000
/* Descriptors kept aside from the connections: lws's own (the cancel pipe),
   stdio, the capture and --out files. */
#define S_FD_SPARE 64
#define S_TIMEOUT_DEFAULT 10.0
#define S_TIMEOUT_MAX 86400.0
/* Warnings printed; past this they are only counted (50 copies of a broken
   capture must not bury the summary). */
#define S_WARN_MAX 20
/* A receive buffer grown past this is freed after its frame, so a rare huge
   frame does not pin memory on each of thousands of connections. */
#define S_RX_KEEP (1u << 20)
/* Ids one copy learns, at most: a bound well above any real capture's. */
#define S_IDS_MAX (1u << 20)
#define S_DEFAULT_PATH "/ws"
/* How long the open of a connection the capture joined mid-way waits for
   the server's greeting (its first frame) before the cursor goes on. */
#define S_GREETING_WAIT_US 250000

static const char *const s_cmd = "play";

/* ---------------------------------------------------------------- plan -- */

typedef enum { S_EV_OPEN, S_EV_FRAME, S_EV_CLOSE } s_ev_kind_t;

typedef struct {
    s_ev_kind_t kind;
    size_t conn;             /* index into the capture's conns */
    const pl_cap_rec_t *rec; /* OPEN/FRAME/CLOSE record; NULL for an implied open or close */
    int64_t at_us;           /* offset from the capture's start (never decreasing) */
    size_t gate;             /* OUT frames (file order) whose counterparts must have arrived */
    size_t frame_no;         /* FRAME: its number among the connection's IN frames, from 1 */
} s_event_t;

typedef struct {
    size_t conn; /* index into the capture's conns */
    size_t nth;  /* it is that connection's nth OUT frame, from 1 */
} s_out_t;

typedef struct {
    char *path;                /* NUL-terminated request path */
    const pl_cap_rec_t **outs; /* its OUT frames, in order */
    size_t nout;
    size_t nin;         /* its IN frames */
    bool server_closes; /* the capture's CLOSE says the server closed it */
    bool seen, closed;  /* while building */
} s_pconn_t;

typedef struct {
    const rp_capture_t *cap;
    s_pconn_t *conns; /* parallel to cap->conns */
    s_event_t *ev;
    size_t nev;
    s_out_t *out;
    size_t nout;
    int64_t duration_us;
} s_plan_t;

typedef struct {
    uint64_t id;
    size_t idx;
} s_idx_t;

static int
s_idx_cmp(const void *a, const void *b)
{
    const s_idx_t *x = a, *y = b;
    return x->id < y->id ? -1 : x->id > y->id;
}

static void
s_plan_free(s_plan_t *pl)
{
    if (pl->conns && pl->cap)
        for (size_t i = 0; i < pl->cap->nconns; i++) {
            free(pl->conns[i].path);
            free(pl->conns[i].outs);
        }
    free(pl->conns);
    free(pl->ev);
    free(pl->out);
    memset(pl, 0, sizeof *pl);
}

static void
s_plan_event(s_plan_t *pl, s_ev_kind_t kind, size_t conn, const pl_cap_rec_t *rec, int64_t at_us)
{
    s_event_t *e = &pl->ev[pl->nev++];
    *e = (s_event_t){.kind = kind, .conn = conn, .rec = rec, .at_us = at_us, .gate = pl->nout};
    if (kind == S_EV_FRAME)
        e->frame_no = ++pl->conns[conn].nin;
}

/* One pass over the records in file order: the events, the OUT frames. */
static void
s_plan_walk(s_plan_t *pl, const s_idx_t *index)
{
    const rp_capture_t *cap = pl->cap;
    int64_t t0 = 0, at = 0;
    bool started = false;
    for (size_t i = 0; i < cap->n; i++) {
        const pl_cap_rec_t *r = &cap->recs[i];
        if (r->kind == PL_CAP_LOST)
            continue;
        if (!started) {
            t0 = r->t_us;
            started = true;
        }
        if (r->t_us - t0 > at)
            at = r->t_us - t0;
        s_idx_t key = {.id = r->conn};
        const s_idx_t *hit = bsearch(&key, index, cap->nconns, sizeof *index, s_idx_cmp);
        size_t ci = hit->idx; /* every record's connection is indexed */
        s_pconn_t *pc = &pl->conns[ci];
        if (pc->closed)
            continue;
        if (!pc->seen) {
            pc->seen = true;
            s_plan_event(pl, S_EV_OPEN, ci, r->kind == PL_CAP_OPEN ? r : NULL, at);
            if (r->kind == PL_CAP_OPEN)
                continue;
        }
        if (r->kind == PL_CAP_FRAME && r->dir == PL_CAP_IN) {
            s_plan_event(pl, S_EV_FRAME, ci, r, at);
        } else if (r->kind == PL_CAP_FRAME) {
            pc->outs[pc->nout++] = r;
            pl->out[pl->nout++] = (s_out_t){.conn = ci, .nth = pc->nout};
        } else if (r->kind == PL_CAP_CLOSE) {
            pc->closed = true;
            if (r->by == PL_CAP_IN)
                s_plan_event(pl, S_EV_CLOSE, ci, r, at);
            else
                pc->server_closes = true;
        }
    }
    /* Connections still open when the capture ended are closed by the
       client once every server frame has come (or --timeout passed). */
    for (size_t ci = 0; ci < cap->nconns; ci++)
        if (pl->conns[ci].seen && !pl->conns[ci].closed)
            s_plan_event(pl, S_EV_CLOSE, ci, NULL, at);
    pl->duration_us = at;
}

static int
s_plan_build(s_plan_t *pl, const rp_capture_t *cap, char *err, size_t errsize)
{
    memset(pl, 0, sizeof *pl);
    pl->cap = cap;
    size_t nouts = 0;
    for (size_t i = 0; i < cap->n; i++)
        if (cap->recs[i].kind == PL_CAP_FRAME && cap->recs[i].dir == PL_CAP_OUT)
            nouts++;
    s_idx_t *index = calloc(cap->nconns ? cap->nconns : 1, sizeof *index);
    pl->conns = calloc(cap->nconns ? cap->nconns : 1, sizeof *pl->conns);
    pl->ev = calloc(cap->n + 2 * cap->nconns + 1, sizeof *pl->ev);
    pl->out = calloc(nouts + 1, sizeof *pl->out);
    if (!index || !pl->conns || !pl->ev || !pl->out)
        goto out_nomem;
    for (size_t ci = 0; ci < cap->nconns; ci++) {
        const rp_conn_t *c = &cap->conns[ci];
        s_pconn_t *pc = &pl->conns[ci];
        index[ci] = (s_idx_t){.id = c->id, .idx = ci};
        size_t n = 0;
        for (size_t j = 0; j < c->n; j++)
            n += c->recs[j]->dir == PL_CAP_OUT;
        pc->outs = calloc(n + 1, sizeof *pc->outs);
        if (c->open && c->open->path_len > 0 && c->open->path[0] == '/')
            pc->path = strndup(c->open->path, c->open->path_len);
        else
            pc->path = strdup(S_DEFAULT_PATH);
        if (!pc->outs || !pc->path)
            goto out_nomem;
    }
    qsort(index, cap->nconns, sizeof *index, s_idx_cmp);
    s_plan_walk(pl, index);
    free(index);
    return 0;
out_nomem:
    free(index);
    s_plan_free(pl);
    snprintf(err, errsize, "out of memory");
    return -1;
}

/* -------------------------------------------------------------- id map -- */

typedef struct {
    char *from, *to;
} s_idpair_t;

/* Open addressing, first mapping wins: an id is learned from the first
   frame that shows it, the one least likely to be misaligned. */
typedef struct {
    s_idpair_t *slot;
    size_t cap, n;
    bool full; /* S_IDS_MAX reached: said once */
} s_idmap_t;

static size_t
s_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char) *s) * 1099511628211ull;
    return (size_t) h;
}

static const char *
s_ids_get(const s_idmap_t *m, const char *from)
{
    if (m->n == 0)
        return NULL;
    for (size_t i = s_hash(from) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        if (!m->slot[i].from)
            return NULL;
        if (strcmp(m->slot[i].from, from) == 0)
            return m->slot[i].to;
    }
}

static void
s_ids_insert(s_idpair_t *slot, size_t cap, s_idpair_t pair)
{
    size_t i = s_hash(pair.from) & (cap - 1);
    while (slot[i].from)
        i = (i + 1) & (cap - 1);
    slot[i] = pair;
}

/* 0 (added, or known already), -1 out of memory or full. */
static int
s_ids_put(s_idmap_t *m, const char *from, const char *to)
{
    if (s_ids_get(m, from))
        return 0;
    if (m->n >= S_IDS_MAX)
        return -1;
    if (2 * (m->n + 1) > m->cap) {
        size_t ncap = m->cap ? 2 * m->cap : 64;
        s_idpair_t *v = calloc(ncap, sizeof *v);
        if (!v)
            return -1;
        for (size_t i = 0; i < m->cap; i++)
            if (m->slot[i].from)
                s_ids_insert(v, ncap, m->slot[i]);
        free(m->slot);
        m->slot = v;
        m->cap = ncap;
    }
    s_idpair_t pair = {.from = strdup(from), .to = strdup(to)};
    if (!pair.from || !pair.to) {
        free(pair.from);
        free(pair.to);
        return -1;
    }
    s_ids_insert(m->slot, m->cap, pair);
    m->n++;
    return 0;
}

static void
s_ids_free(s_idmap_t *m)
{
    for (size_t i = 0; i < m->cap; i++) {
        free(m->slot[i].from);
        free(m->slot[i].to);
    }
    free(m->slot);
    memset(m, 0, sizeof *m);
}

static bool
s_is_id_key(const char *key)
{
    size_t n = key ? strlen(key) : 0;
    return (n == 2 && strcmp(key, "id") == 0) || (n > 3 && strcmp(key + n - 3, "_id") == 0);
}

/* Walks an original frame and its replayed counterpart side by side; -1
   when the map refused an id. cJSON's nesting limit bounds the recursion. */
static int
s_ids_walk(s_idmap_t *m, const cJSON *o, const cJSON *r)
{
    int rc = 0;
    if (cJSON_IsObject(o) && cJSON_IsObject(r)) {
        const cJSON *c;
        cJSON_ArrayForEach(c, o)
        {
            const cJSON *rc_item = cJSON_GetObjectItemCaseSensitive(r, c->string);
            if (!rc_item)
                continue;
            if (cJSON_IsString(c) && cJSON_IsString(rc_item)) {
                if (s_is_id_key(c->string) && strcmp(c->valuestring, rc_item->valuestring) != 0 &&
                    s_ids_put(m, c->valuestring, rc_item->valuestring) != 0)
                    rc = -1;
            } else if (s_ids_walk(m, c, rc_item) != 0) {
                rc = -1;
            }
        }
    } else if (cJSON_IsArray(o) && cJSON_IsArray(r)) {
        const cJSON *c = o->child, *d = r->child;
        for (; c && d; c = c->next, d = d->next)
            if (s_ids_walk(m, c, d) != 0)
                rc = -1;
    }
    return rc;
}

/* Learns from one aligned pair of server frames; -1 when the map is full. */
static int
s_ids_learn(s_idmap_t *m, const pl_cap_rec_t *orig, const char *data, size_t len, bool binary)
{
    if (binary || orig->opcode != PL_CAP_TEXT || (orig->len == len && memcmp(orig->data, data, len) == 0))
        return 0;
    cJSON *o = cJSON_ParseWithLength(orig->data, orig->len);
    cJSON *r = o ? cJSON_ParseWithLength(data, len) : NULL;
    int rc = o && r ? s_ids_walk(m, o, r) : 0;
    cJSON_Delete(o);
    cJSON_Delete(r);
    return rc;
}

static bool
s_ids_rewrite(const s_idmap_t *m, cJSON *j)
{
    bool changed = false;
    if (cJSON_IsString(j)) {
        const char *to = s_ids_get(m, j->valuestring);
        changed = to && cJSON_SetValuestring(j, to);
    } else {
        for (cJSON *c = j->child; c; c = c->next)
            changed |= s_ids_rewrite(m, c);
    }
    return changed;
}

/* The text to send for a captured client frame: NULL when it goes as
   captured, else a string the caller frees with cJSON_free. */
static char *
s_ids_apply(const s_idmap_t *m, const pl_cap_rec_t *r)
{
    if (m->n == 0 || r->opcode != PL_CAP_TEXT)
        return NULL;
    cJSON *j = cJSON_ParseWithLength(r->data, r->len);
    char *s = j && s_ids_rewrite(m, j) ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    return s;
}

/* ------------------------------------------------------------ runtime -- */

typedef enum { S_IDLE, S_CONNECTING, S_OPEN, S_CLOSING, S_CLOSED, S_FAILED } s_state_t;

struct s_copy;

typedef struct {
    struct s_copy *copy;
    size_t idx; /* its connection in the capture */
    struct lws *wsi;
    s_state_t state;
    size_t recv;         /* whole server frames received */
    const s_event_t *tx; /* the frame or close waiting for WRITEABLE */
    int close_now;       /* nonzero: close with this code at WRITEABLE (end of the replay) */
    char *rx;            /* the message being reassembled */
    size_t rx_len, rx_cap;
    bool rx_binary;
    int close_code;
    pl_cap_dir_t close_by;
    bool close_known; /* close_code/close_by were set (by us or the peer's close frame) */
    bool reported;    /* its unsent frames were reported */
    int64_t open_at;  /* monotonic µs it was established */
    bool greeting;    /* the capture joined it mid-way and nothing was sent yet: frames now stand for the part
                         the capture missed (the "connected" greeting), and are neither counted nor recorded */
} s_conn_t;

typedef struct s_copy {
    lws_sorted_usec_list_t sul;
    struct s_play *play;
    unsigned no;
    s_conn_t *conns;
    size_t next;        /* the cursor: next event of the plan */
    size_t water;       /* OUT frames (file order) whose counterparts arrived */
    bool busy;          /* the event before `next` is in flight */
    int64_t busy_since; /* monotonic µs */
    int64_t wait_since; /* monotonic µs the cursor's gate began to hold it; 0 if not */
    int64_t sul_at;     /* when the timer is set for; 0 if not set */
    int64_t end_at;     /* when the cursor reached the end; 0 before */
    int end_stage;      /* 0 waiting; 1 closing what is left; 2 killing it */
    size_t live;        /* connections connecting or open */
    bool running, again, finished;
    bool abandoned; /* a connection failed to connect: the rest would only diverge */
    s_idmap_t ids;
} s_copy_t;

typedef struct s_play {
    /* options */
    double speed;
    bool fast;
    unsigned multiply;
    int64_t timeout_us;
    const char *out_path, *file, *url;
    char host[256];    /* address to connect to (no brackets) */
    char hosthdr[300]; /* Host header: host:port */
    int port;
    /* state */
    rp_capture_t cap;
    s_plan_t plan;
    struct lws_context *ctx;
    s_copy_t *copies;
    unsigned copies_left;
    bool done;
    rp_writer_t out;
    bool out_open, out_failed;
    uint64_t out_seq;
    int64_t start_us; /* monotonic */
    /* results */
    uint64_t connected, failed_conns, sent, received, bytes_sent, bytes_received, failures, warnings;
    uint64_t greetings; /* frames received before a mid-way connection's first event (s_conn_t.greeting) */
} s_play_t;

static int64_t
s_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void s_warn(s_play_t *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
s_warn(s_play_t *p, const char *fmt, ...)
{
    if (p->warnings++ < S_WARN_MAX) {
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "parley-replay play: ");
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
    } else if (p->warnings == S_WARN_MAX + 1) {
        fprintf(stderr, "parley-replay play: more warnings: counted in the summary, not shown\n");
    }
}

/* "copy 3 conn #2 (id 17)": a replayed connection, as warnings name it. */
static const char *
s_name(const s_conn_t *k, char *buf, size_t size)
{
    snprintf(buf, size, "copy %u conn #%zu (id %llu)", k->copy->no, k->idx,
             (unsigned long long) k->copy->play->cap.conns[k->idx].id);
    return buf;
}

/* A frame's "type", for warnings: "chat", "binary", "non-JSON". */
static const char *
s_frame_type(const pl_cap_rec_t *r, char *buf, size_t size)
{
    snprintf(buf, size, "%s", r->opcode == PL_CAP_TEXT ? "non-JSON" : "binary");
    cJSON *j = r->opcode == PL_CAP_TEXT ? cJSON_ParseWithLength(r->data, r->len) : NULL;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "type");
    if (cJSON_IsString(t))
        snprintf(buf, size, "%s", t->valuestring);
    else if (j)
        snprintf(buf, size, "JSON without a type");
    cJSON_Delete(j);
    return buf;
}

static void
s_out_add(s_play_t *p, pl_cap_rec_t *r)
{
    if (!p->out_open || p->out_failed)
        return;
    r->seq = ++p->out_seq;
    r->t_us = rp_now_us();
    if (rp_writer_add(&p->out, r, false) != 0) {
        p->out_failed = true;
        p->failures++;
        s_warn(p, "%s: %s; --out stops here", p->out_path, strerror(errno));
    }
}

static void
s_out_close(s_conn_t *k)
{
    if (k->copy->no != 0)
        return;
    pl_cap_rec_t r = {.kind = PL_CAP_CLOSE, .conn = k->copy->play->cap.conns[k->idx].id};
    r.code = k->close_known ? k->close_code : 0;
    r.by = k->close_known ? k->close_by : PL_CAP_OUT;
    s_out_add(k->copy->play, &r);
}

static void s_copy_run(s_copy_t *c);

static void
s_copy_timer(lws_sorted_usec_list_t *sul)
{
    s_copy_t *c = lws_container_of(sul, s_copy_t, sul);
    c->sul_at = 0;
    s_copy_run(c);
}

static void
s_copy_wake(s_copy_t *c, int64_t at, int64_t now)
{
    if (c->sul_at == at)
        return;
    c->sul_at = at;
    lws_sul_schedule(c->play->ctx, 0, &c->sul, s_copy_timer, at > now ? at - now : 0);
}

/* Moves the watermark over every OUT frame whose counterpart has arrived;
   a connection that closed or failed will send nothing more, so its frames
   no longer hold anyone. */
static void
s_copy_advance(s_copy_t *c)
{
    const s_plan_t *pl = &c->play->plan;
    while (c->water < pl->nout) {
        const s_out_t *o = &pl->out[c->water];
        const s_conn_t *k = &c->conns[o->conn];
        if (k->recv < o->nth && k->state != S_CLOSED && k->state != S_FAILED)
            break;
        c->water++;
    }
}

static void
s_copy_settled(s_copy_t *c)
{
    c->busy = false;
    s_copy_run(c);
}

/* The cursor's gate did not open within --timeout: say which server frame
   is missing, count a failure and go on as if it had come. */
static void
s_copy_give_up(s_copy_t *c, const s_event_t *e)
{
    s_play_t *p = c->play;
    const s_out_t *o = &p->plan.out[c->water];
    const s_conn_t *k = &c->conns[e->conn], *src = &c->conns[o->conn];
    char a[96], b[96], what[64], ta[64], tb[64];
    if (e->kind == S_EV_FRAME)
        snprintf(what, sizeof what, "frame %zu (%s)", e->frame_no, s_frame_type(e->rec, ta, sizeof ta));
    else
        snprintf(what, sizeof what, "%s", e->kind == S_EV_OPEN ? "its open" : "its close");
    snprintf(b, sizeof b, "conn #%zu (id %llu)", o->conn, (unsigned long long) p->cap.conns[o->conn].id);
    s_warn(p,
           "%s: %s waited %.1f s for server frame %zu (%s) on %s, which has had %zu; sent without waiting "
           "for %zu frame(s)",
           s_name(k, a, sizeof a), what, (double) p->timeout_us / 1e6, o->nth,
           s_frame_type(p->plan.conns[o->conn].outs[o->nth - 1], tb, sizeof tb), b, src->recv, e->gate - c->water);
    p->failures++;
    c->water = e->gate;
    s_copy_advance(c);
}

/* An event whose connection is gone. The server closing it before the
   capture's client did (a frame left unsent, or the client's close) is a
   failure, said once per connection; one that failed to connect or that we
   closed was counted already. */
static void
s_copy_skip(s_copy_t *c, const s_event_t *e, s_conn_t *k)
{
    if (k->reported || k->state == S_FAILED || (k->close_known && k->close_by == PL_CAP_IN))
        return;
    k->reported = true;
    c->play->failures++;
    char a[96], t[64];
    if (e->kind == S_EV_FRAME)
        s_warn(c->play, "%s: the server closed it (code %d) before frame %zu (%s) of %zu could be sent",
               s_name(k, a, sizeof a), k->close_code, e->frame_no, s_frame_type(e->rec, t, sizeof t),
               c->play->plan.conns[k->idx].nin);
    else
        s_warn(c->play, "%s: the server closed it (code %d) where the capture's %s", s_name(k, a, sizeof a),
               k->close_code, e->rec ? "client closed it" : "connection was still open at the end");
}

/* A copy that lost a connection would only diverge from the capture (and
   wait --timeout at every gate its missing frames hold): its other events
   are dropped and its connections closed. */
static void
s_copy_abandon(s_copy_t *c)
{
    c->abandoned = true;
    c->next = c->play->plan.nev;
    c->wait_since = 0;
    for (size_t i = 0; i < c->play->cap.nconns; i++) {
        s_conn_t *k = &c->conns[i];
        if (k->state == S_OPEN && !k->close_now) {
            k->close_now = LWS_CLOSE_STATUS_NORMAL;
            lws_callback_on_writable(k->wsi);
        }
    }
}

static void
s_conn_failed(s_conn_t *k, const char *why)
{
    s_copy_t *c = k->copy;
    s_play_t *p = c->play;
    if (k->state != S_CONNECTING)
        return;
    char a[96];
    s_warn(p, "%s: cannot connect to %s%s: %s; the copy stops here", s_name(k, a, sizeof a), p->hosthdr,
           p->plan.conns[k->idx].path, why);
    k->state = S_FAILED;
    k->wsi = NULL;
    p->failed_conns++;
    p->failures++;
    c->live--;
    s_copy_abandon(c);
    s_copy_settled(c);
}

static void
s_copy_open(s_copy_t *c, const s_event_t *e, s_conn_t *k)
{
    s_play_t *p = c->play;
    struct lws_client_connect_info i;
    memset(&i, 0, sizeof i);
    i.context = p->ctx;
    i.address = p->host;
    i.port = p->port;
    i.path = p->plan.conns[e->conn].path;
    i.host = p->hosthdr;
    i.origin = p->hosthdr;
    i.ietf_version_or_minus_one = -1;
    i.userdata = k;
    i.pwsi = &k->wsi;
    k->state = S_CONNECTING;
    c->live++;
    if (!lws_client_connect_via_info(&i))
        s_conn_failed(k, "the connection could not be started");
}

static void
s_copy_issue(s_copy_t *c, const s_event_t *e, s_conn_t *k, int64_t now)
{
    c->busy = true;
    c->busy_since = now;
    if (e->kind == S_EV_OPEN) {
        s_copy_open(c, e, k);
    } else {
        k->tx = e;
        lws_callback_on_writable(k->wsi);
    }
}

/* The cursor is at the end: wait for the connections to close; past
   --timeout close what is left, past twice that drop it. */
static void
s_copy_end(s_copy_t *c, int64_t now)
{
    s_play_t *p = c->play;
    if (c->live == 0) {
        if (!c->finished) {
            c->finished = true;
            if (c->sul_at)
                lws_sul_cancel(&c->sul);
            c->sul_at = 0;
            p->done = --p->copies_left == 0;
            if (p->done) /* we may be in a timer, before lws's poll: wake it */
                lws_cancel_service(p->ctx);
        }
        return;
    }
    if (!c->end_at)
        c->end_at = now;
    int64_t deadline = c->end_at + (c->end_stage + 1) * p->timeout_us;
    if (now < deadline) {
        s_copy_wake(c, deadline, now);
        return;
    }
    for (size_t i = 0; i < p->cap.nconns; i++) {
        s_conn_t *k = &c->conns[i];
        char a[96];
        if (k->state != S_OPEN && k->state != S_CONNECTING && k->state != S_CLOSING)
            continue;
        if (c->end_stage == 0 && k->state == S_OPEN) {
            if (p->plan.conns[i].server_closes) {
                s_warn(p, "%s: the server closed it in the capture but not within %.1f s here; closing it",
                       s_name(k, a, sizeof a), (double) p->timeout_us / 1e6);
                p->failures++;
            }
            k->close_now = LWS_CLOSE_STATUS_NORMAL;
            lws_callback_on_writable(k->wsi);
        } else if (c->end_stage == 1 && k->wsi) {
            s_warn(p, "%s: still not closed; dropping it", s_name(k, a, sizeof a));
            p->failures++;
            lws_set_timeout(k->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
        }
    }
    if (c->end_stage < 2)
        c->end_stage++;
    s_copy_wake(c, c->end_at + (c->end_stage + 1) * p->timeout_us, now);
}

/* Whether the action in flight is the open of `k`. */
static bool
s_copy_opening(const s_copy_t *c, const s_conn_t *k)
{
    const s_event_t *e = c->busy ? &c->play->plan.ev[c->next - 1] : NULL;
    return e && e->kind == S_EV_OPEN && e->conn == k->idx;
}

/* An action in flight past --timeout (a write the server does not take, a
   connect lws has not timed out): the connection is dropped. */
static void
s_copy_stalled(s_copy_t *c, int64_t now)
{
    s_play_t *p = c->play;
    const s_event_t *e = &p->plan.ev[c->next - 1];
    s_conn_t *k = &c->conns[e->conn];
    if (e->kind == S_EV_OPEN && k->state == S_OPEN) { /* waiting for a greeting */
        if (now - k->open_at < S_GREETING_WAIT_US) {
            s_copy_wake(c, k->open_at + S_GREETING_WAIT_US, now);
        } else {
            c->busy = false;
            c->again = true;
        }
        return;
    }
    if (now - c->busy_since < p->timeout_us + 1000000) {
        s_copy_wake(c, c->busy_since + p->timeout_us + 1000000, now);
        return;
    }
    char a[96];
    s_warn(p, "%s: %s did not complete within %.1f s; dropping the connection", s_name(k, a, sizeof a),
           e->kind == S_EV_OPEN ? "connecting" : "a write", (double) p->timeout_us / 1e6);
    p->failures++;
    c->busy_since = now; /* once per timeout, until lws reports it closed */
    if (k->wsi)
        lws_set_timeout(k->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
}

static void
s_copy_step(s_copy_t *c)
{
    s_play_t *p = c->play;
    int64_t now = s_mono_us();
    while (!c->busy && c->next < p->plan.nev) {
        const s_event_t *e = &p->plan.ev[c->next];
        s_conn_t *k = &c->conns[e->conn];
        if (e->kind != S_EV_OPEN && k->state != S_OPEN) {
            s_copy_skip(c, e, k);
            c->next++;
            continue;
        }
        int64_t due = p->fast ? 0 : p->start_us + (int64_t) ((double) e->at_us / p->speed);
        if (now < due) {
            s_copy_wake(c, due, now);
            return;
        }
        if (c->water < e->gate) {
            if (!c->wait_since)
                c->wait_since = now;
            if (now - c->wait_since < p->timeout_us) {
                s_copy_wake(c, c->wait_since + p->timeout_us, now);
                return;
            }
            s_copy_give_up(c, e);
        }
        c->wait_since = 0;
        c->next++;
        s_copy_issue(c, e, k, now);
        now = s_mono_us();
    }
    if (c->busy)
        s_copy_stalled(c, now);
    else
        s_copy_end(c, now);
}

/* Runs the copy until it must wait; a call from inside (a callback the run
   itself caused) makes the outer run go round again instead. */
static void
s_copy_run(s_copy_t *c)
{
    if (c->running) {
        c->again = true;
        return;
    }
    c->running = true;
    do {
        c->again = false;
        if (!c->finished)
            s_copy_step(c);
    } while (c->again);
    c->running = false;
}

/* ----------------------------------------------------------- callbacks -- */

static void
s_conn_established(s_conn_t *k)
{
    s_copy_t *c = k->copy;
    s_play_t *p = c->play;
    if (k->state != S_CONNECTING)
        return;
    k->state = S_OPEN;
    k->greeting = !p->cap.conns[k->idx].open;
    k->open_at = s_mono_us();
    p->connected++;
    if (c->no == 0) {
        const rp_conn_t *rc = &p->cap.conns[k->idx];
        const char *path = p->plan.conns[k->idx].path;
        pl_cap_rec_t r = {.kind = PL_CAP_OPEN, .conn = rc->id, .path = path, .path_len = strlen(path)};
        if (rc->open) {
            r.dialect = rc->open->dialect;
            r.dialect_len = rc->open->dialect_len;
        }
        s_out_add(p, &r);
    }
    if (c->abandoned) {
        k->close_now = LWS_CLOSE_STATUS_NORMAL;
        lws_callback_on_writable(k->wsi);
    }
    if (k->greeting) /* the open is done with the greeting (s_conn_message) or S_GREETING_WAIT_US */
        s_copy_run(c);
    else
        s_copy_settled(c);
}

/* One whole message has been reassembled in k->rx. */
static void
s_conn_message(s_conn_t *k)
{
    s_copy_t *c = k->copy;
    s_play_t *p = c->play;
    const s_pconn_t *pc = &p->plan.conns[k->idx];
    p->received++;
    p->bytes_received += k->rx_len;
    if (k->greeting) {
        p->greetings++;
        k->rx_len = 0;
        if (s_copy_opening(c, k))
            s_copy_settled(c);
        return;
    }
    k->recv++;
    if (k->recv <= pc->nout && s_ids_learn(&c->ids, pc->outs[k->recv - 1], k->rx, k->rx_len, k->rx_binary) != 0 &&
        !c->ids.full) {
        c->ids.full = true;
        s_warn(p, "copy %u: the id map is full (%u ids); ids seen from now on are not rewritten", c->no,
               (unsigned) S_IDS_MAX);
    }
    if (c->no == 0) {
        pl_cap_rec_t r = {.kind = PL_CAP_FRAME, .conn = p->cap.conns[k->idx].id, .dir = PL_CAP_OUT};
        r.opcode = k->rx_binary ? PL_CAP_BINARY : PL_CAP_TEXT;
        r.data = k->rx;
        r.len = k->rx_len;
        s_out_add(p, &r);
    }
    k->rx_len = 0;
    if (k->rx_cap > S_RX_KEEP) {
        free(k->rx);
        k->rx = NULL;
        k->rx_cap = 0;
    }
    size_t water = c->water;
    s_copy_advance(c);
    if (c->water != water)
        s_copy_run(c);
}

static int
s_conn_receive(s_conn_t *k, struct lws *wsi, const char *in, size_t len)
{
    if (k->rx_len == 0)
        k->rx_binary = lws_frame_is_binary(wsi);
    if (len > PL_CAP_PAYLOAD_MAX - k->rx_len) {
        char a[96];
        s_warn(k->copy->play, "%s: a server message over %u bytes; closing with 1009", s_name(k, a, sizeof a),
               PL_CAP_PAYLOAD_MAX);
        k->copy->play->failures++;
        k->close_code = LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE;
        k->close_by = PL_CAP_IN;
        k->close_known = true;
        k->state = S_CLOSING;
        lws_close_reason(wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE, NULL, 0);
        return -1;
    }
    if (k->rx_len + len > k->rx_cap) {
        size_t ncap = k->rx_cap ? k->rx_cap : 4096;
        while (ncap < k->rx_len + len)
            ncap *= 2;
        char *v = realloc(k->rx, ncap);
        if (!v)
            return -1;
        k->rx = v;
        k->rx_cap = ncap;
    }
    if (len)
        memcpy(k->rx + k->rx_len, in, len);
    k->rx_len += len;
    if (lws_is_final_fragment(wsi) && lws_remaining_packet_payload(wsi) == 0)
        s_conn_message(k);
    return 0;
}

/* A close code a client may send (RFC 6455 §7.4): others become 1000. */
static int
s_close_code(int code)
{
    bool ok = (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999);
    return ok ? code : LWS_CLOSE_STATUS_NORMAL;
}

static int
s_conn_send_close(s_conn_t *k, struct lws *wsi, int code)
{
    k->close_code = s_close_code(code);
    k->close_by = PL_CAP_IN;
    k->close_known = true;
    k->state = S_CLOSING;
    lws_close_reason(wsi, (enum lws_close_status) k->close_code, NULL, 0);
    return -1;
}

static int
s_conn_send_frame(s_conn_t *k, struct lws *wsi, const pl_cap_rec_t *r)
{
    s_play_t *p = k->copy->play;
    char *json = s_ids_apply(&k->copy->ids, r);
    const char *data = json ? json : r->data;
    size_t len = json ? strlen(json) : r->len;
    unsigned char *buf = malloc(LWS_PRE + len + 1);
    if (!buf) {
        cJSON_free(json);
        return -1;
    }
    memcpy(buf + LWS_PRE, data, len);
    /* lws masks the buffer in place: what was sent is `data`, not `buf` */
    int n = lws_write(wsi, buf + LWS_PRE, len, r->opcode == PL_CAP_BINARY ? LWS_WRITE_BINARY : LWS_WRITE_TEXT);
    if (n >= 0 && (size_t) n >= len) {
        k->greeting = false;
        p->sent++;
        p->bytes_sent += len;
        if (k->copy->no == 0) {
            pl_cap_rec_t o = {.kind = PL_CAP_FRAME, .conn = p->cap.conns[k->idx].id, .dir = PL_CAP_IN};
            o.opcode = r->opcode;
            o.data = data;
            o.len = len;
            s_out_add(p, &o);
        }
    }
    free(buf);
    cJSON_free(json);
    return n >= 0 && (size_t) n >= len ? 0 : -1;
}

static int
s_conn_writeable(s_conn_t *k, struct lws *wsi)
{
    if (k->state != S_OPEN)
        return 0;
    if (k->close_now)
        return s_conn_send_close(k, wsi, k->close_now);
    const s_event_t *e = k->tx;
    if (!e)
        return 0;
    k->tx = NULL;
    if (e->kind == S_EV_CLOSE) {
        s_conn_send_close(k, wsi, e->rec ? e->rec->code : LWS_CLOSE_STATUS_NORMAL);
        s_copy_settled(k->copy);
        return -1;
    }
    if (s_conn_send_frame(k, wsi, e->rec) != 0) {
        char a[96];
        s_warn(k->copy->play, "%s: frame %zu could not be written; closing", s_name(k, a, sizeof a), e->frame_no);
        k->copy->play->failures++;
        k->tx = e; /* s_conn_closed puts the cursor back on it; s_copy_skip passes it */
        k->close_code = LWS_CLOSE_STATUS_ABNORMAL_CLOSE;
        k->close_by = PL_CAP_IN;
        k->close_known = true;
        return -1;
    }
    s_copy_settled(k->copy);
    return 0;
}

static void
s_conn_peer_close(s_conn_t *k, const unsigned char *in, size_t len)
{
    if (k->close_known)
        return;
    k->close_code = len >= 2 ? (in[0] << 8 | in[1]) : LWS_CLOSE_STATUS_NO_STATUS;
    k->close_by = PL_CAP_OUT;
    k->close_known = true;
}

static void
s_conn_closed(s_conn_t *k)
{
    s_copy_t *c = k->copy;
    if (k->state != S_OPEN && k->state != S_CLOSING)
        return;
    k->state = S_CLOSED;
    k->wsi = NULL;
    s_out_close(k);
    free(k->rx);
    k->rx = NULL;
    k->rx_len = k->rx_cap = 0;
    c->live--;
    if (k->tx) { /* closed under a pending write: the cursor goes back to it, to report it */
        k->tx = NULL;
        c->next--;
        c->busy = false;
    }
    s_copy_advance(c);
    s_copy_run(c);
}

static int
s_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
    s_conn_t *k = user;
    if (!k)
        return 0;
    switch (reason) {
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        s_conn_failed(k, in ? (const char *) in : "connection failed");
        return 0;
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        s_conn_established(k);
        return 0;
    case LWS_CALLBACK_CLIENT_RECEIVE:
        return s_conn_receive(k, wsi, in, len);
    case LWS_CALLBACK_CLIENT_WRITEABLE:
        return s_conn_writeable(k, wsi);
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        s_conn_peer_close(k, in, len);
        return 0;
    case LWS_CALLBACK_CLIENT_CLOSED:
        s_conn_closed(k);
        return 0;
    default:
        return 0;
    }
}

static const struct lws_protocols s_protocols[] = {
    {.name = "parley-replay", .callback = s_callback},
    {.name = NULL, .callback = NULL},
};

/* ------------------------------------------------------------- command -- */

static int
s_help(void)
{
    printf("usage: parley-replay play [--speed N | --fast] [--multiply K] [--out FILE]\n"
           "                          [--timeout SECONDS] FILE URL\n"
           "\n"
           "Replays the client side of capture FILE against the server at URL: each\n"
           "connection of the capture is opened again, its client frames are sent again\n"
           "and the server's frames are received (and counted, and recorded with --out).\n"
           "\n"
           "URL is ws://HOST:PORT (http:// is taken as a synonym; wss:// is not supported).\n"
           "A path after HOST:PORT is ignored: each connection uses the request path of\n"
           "its capture's OPEN record, or /ws when the capture began after it opened.\n"
           "\n"
           "options:\n"
           "  --speed N          play N times as fast as recorded (N > 0; 0.5 = half speed).\n"
           "                     Default 1: each client event (an open, a frame, a close\n"
           "                     the client made) happens at its offset from the capture's\n"
           "                     first record.\n"
           "  --fast             send each event as soon as causality allows.\n"
           "  --multiply K       run K independent copies of the whole capture at once\n"
           "                     (1 to %d; K x connections must stay below the open-file\n"
           "                     limit, ulimit -n). Each copy has its own connections, id\n"
           "                     mapping and causality gate.\n"
           "  --out FILE         write what copy 0 saw as a capture: an OPEN per connection\n"
           "                     (the original's connection id and path), every client frame\n"
           "                     as sent (after id rewriting), every server frame received,\n"
           "                     and a CLOSE. Compare it with: parley-replay diff FILE OUT.\n"
           "  --timeout SECONDS  how long a gate may hold an event, and how long to wait for\n"
           "                     the server's close at the end (default %g).\n"
           "  --help             this text.\n"
           "\n"
           "Causality: an event is not sent before every replayed connection (of its copy)\n"
           "has received at least as many server frames as its original had received when\n"
           "the event was recorded; within a copy, events go in capture order, one at a\n"
           "time. So a chat is not sent before the session_created it follows, and the\n"
           "replay is deterministic enough to diff. A gate still closed after --timeout is\n"
           "reported (naming the connection and the server frame missing), counted as a\n"
           "failure, and passed.\n"
           "\n"
           "Id rewriting: the server mints ids (session_id, message_id, connection_id, ...)\n"
           "that differ from the capture's. The k-th server frame a replayed connection\n"
           "receives is aligned with the k-th of its original: wherever a string under a\n"
           "key \"id\" or ending in \"_id\" differs, the original value maps to the replayed\n"
           "one. Before a client text frame that is JSON is sent, every string value in it\n"
           "equal to a mapped original id is replaced by the replayed id; other frames go\n"
           "as captured.\n"
           "\n"
           "Closing: a connection the client closed in the capture is closed with the same\n"
           "code at its time; one the server closed is left for the server to close; one\n"
           "still open when the capture ended is closed (1000) once its server frames have\n"
           "come. Connections left open --timeout after the last event are closed.\n"
           "A connection that cannot connect stops its copy (the rest would only diverge).\n"
           "For a connection the capture joined mid-way (no OPEN record), the frames that\n"
           "come before its first client frame (the server's greeting) are not counted.\n"
           "\n"
           "A summary goes to stderr. Exit status: 0 every connection connected and every\n"
           "gate opened in time; 1 otherwise; 2 bad usage, an unreadable capture or a bad URL.\n"
           "\n"
           "examples:\n"
           "  parley-replay play yesterday.cap ws://127.0.0.1:8000\n"
           "  parley-replay play --fast --out replayed.cap yesterday.cap ws://127.0.0.1:8000\n"
           "  parley-replay diff yesterday.cap replayed.cap\n"
           "  parley-replay play --fast --multiply 200 yesterday.cap ws://staging:8000   # load\n",
           S_MULTIPLY_MAX, S_TIMEOUT_DEFAULT);
    return 0;
}

static int
s_parse_double(const char *opt, const char *s, double min, double max, double *out)
{
    if (!s)
        return rp_usage_error(s_cmd, "%s wants a value", opt);
    char *end = NULL;
    errno = 0;
    double v = *s ? strtod(s, &end) : NAN;
    if (!*s || *end || errno || !isfinite(v) || v < min || v > max)
        return rp_usage_error(s_cmd, "%s wants a number from %g to %g, not '%s'", opt, min, max, s);
    *out = v;
    return 0;
}

static int
s_parse_url(s_play_t *p, const char *url)
{
    static const char *const plain[] = {"ws://", "http://"};
    const char *rest = NULL;
    for (size_t i = 0; i < sizeof plain / sizeof *plain && !rest; i++)
        if (strncasecmp(url, plain[i], strlen(plain[i])) == 0)
            rest = url + strlen(plain[i]);
    if (!rest && (strncasecmp(url, "wss://", 6) == 0 || strncasecmp(url, "https://", 8) == 0))
        return rp_usage_error(s_cmd, "%s: TLS (wss://) is not supported; replay against a plain ws:// port", url);
    if (!rest)
        return rp_usage_error(s_cmd, "%s: the URL must be ws://HOST:PORT", url);
    size_t alen = strcspn(rest, "/?#");
    const char *host = rest, *colon = NULL;
    size_t hlen;
    if (*rest == '[') {
        const char *rb = memchr(rest, ']', alen);
        if (!rb)
            return rp_usage_error(s_cmd, "%s: unterminated [IPv6 address]", url);
        host = rest + 1;
        hlen = (size_t) (rb - host);
        colon = rb + 1 < rest + alen ? rb + 1 : NULL;
        if (colon && *colon != ':')
            return rp_usage_error(s_cmd, "%s: junk after the ]", url);
    } else {
        colon = memchr(rest, ':', alen);
        hlen = colon ? (size_t) (colon - rest) : alen;
    }
    if (hlen == 0 || hlen >= sizeof p->host || memchr(rest, '@', alen))
        return rp_usage_error(s_cmd, "%s: the URL needs a host (and no user name)", url);
    memcpy(p->host, host, hlen);
    p->host[hlen] = '\0';
    p->port = 80;
    if (colon) {
        size_t plen = alen - (size_t) (colon + 1 - rest);
        char digits[8] = "";
        long v = -1;
        if (plen > 0 && plen < sizeof digits && strspn(colon + 1, "0123456789") >= plen) {
            memcpy(digits, colon + 1, plen);
            v = strtol(digits, NULL, 10);
        }
        if (v < 1 || v > 65535)
            return rp_usage_error(s_cmd, "%s: bad port", url);
        p->port = (int) v;
    }
    snprintf(p->hosthdr, sizeof p->hosthdr, "%s%s%s:%d", *rest == '[' ? "[" : "", p->host, *rest == '[' ? "]" : "",
             p->port);
    return 0;
}

/* "--name VALUE" or "--name=VALUE": 1 and *value when argv[*i] is it. */
static int
s_opt(int argc, char **argv, int *i, const char *name, const char **value)
{
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n) != 0)
        return 0;
    if (argv[*i][n] == '=') {
        *value = argv[*i] + n + 1;
        return 1;
    }
    if (argv[*i][n] != '\0')
        return 0;
    *value = *i + 1 < argc ? argv[++*i] : NULL;
    return 1;
}

static int
s_parse_args(s_play_t *p, int argc, char **argv)
{
    const char *pos[2];
    int npos = 0;
    double timeout = S_TIMEOUT_DEFAULT, multiply = 1;
    bool speed_set = false;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        const char *a = argv[i];
        int rc = 0;
        if (strcmp(a, "--fast") == 0) {
            p->fast = true;
        } else if (s_opt(argc, argv, &i, "--speed", &v)) {
            rc = s_parse_double("--speed", v, 0, 1e9, &p->speed);
            speed_set = true;
            if (rc == 0 && p->speed <= 0)
                rc = rp_usage_error(s_cmd, "--speed must be above 0 (2: twice as fast, 0.5: half as fast)");
        } else if (s_opt(argc, argv, &i, "--multiply", &v)) {
            rc = s_parse_double("--multiply", v, 1, S_MULTIPLY_MAX, &multiply);
            if (rc == 0 && multiply != floor(multiply))
                rc = rp_usage_error(s_cmd, "--multiply wants a whole number, not '%s'", v);
        } else if (s_opt(argc, argv, &i, "--timeout", &v)) {
            rc = s_parse_double("--timeout", v, 0.001, S_TIMEOUT_MAX, &timeout);
        } else if (s_opt(argc, argv, &i, "--out", &v)) {
            p->out_path = v;
            if (!v || !*v)
                rc = rp_usage_error(s_cmd, "--out wants a file name");
        } else if (a[0] == '-' && a[1] != '\0') {
            rc = rp_usage_error(s_cmd, "unknown option '%s'", a);
        } else if (npos < 2) {
            pos[npos++] = a;
        } else {
            rc = rp_usage_error(s_cmd, "too many arguments ('%s'): want FILE URL", a);
        }
        if (rc != 0)
            return rc;
    }
    if (npos < 2)
        return rp_usage_error(s_cmd, "missing %s: want FILE URL", npos == 0 ? "FILE and URL" : "URL");
    if (p->fast && speed_set)
        return rp_usage_error(s_cmd, "--speed and --fast exclude each other");
    p->file = pos[0];
    p->url = pos[1];
    p->multiply = (unsigned) multiply;
    p->timeout_us = (int64_t) (timeout * 1e6);
    return s_parse_url(p, p->url);
}

/* K x connections sockets must fit the open-file limit (raised to its hard
   limit if need be). 0, or 2 with the reason said. */
static int
s_check_fds(const s_play_t *p)
{
    uint64_t want = (uint64_t) p->multiply * p->cap.nconns + S_FD_SPARE;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 0;
    if (want > rl.rlim_cur && rl.rlim_max != rl.rlim_cur) {
        struct rlimit up = {.rlim_cur = rl.rlim_max, .rlim_max = rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &up) == 0)
            rl = up;
    }
    if (want <= rl.rlim_cur)
        return 0;
    return rp_usage_error(s_cmd,
                          "--multiply %u x %zu connections needs %llu open files (with %d to spare), over the "
                          "limit of %llu (ulimit -n); use fewer copies",
                          p->multiply, p->cap.nconns, (unsigned long long) want, S_FD_SPARE,
                          (unsigned long long) rl.rlim_cur);
}

/* One plain TCP connect before the replay, so that a server that is not
   there is said once, with the reason (lws says only "Unable to connect").
   0; 1 refused or unreachable; 2 the host does not resolve. */
static int
s_probe(const s_play_t *p)
{
    char port[16];
    snprintf(port, sizeof port, "%d", p->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int rc = getaddrinfo(p->host, port, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "parley-replay play: %s: cannot resolve %s: %s\n", p->url, p->host, gai_strerror(rc));
        return 2;
    }
    int err = ECONNREFUSED;
    for (const struct addrinfo *a = res; a; a = a->ai_next) {
        int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        int timeout_ms = (int) (p->timeout_us / 1000) + 1;
        socklen_t len = sizeof err;
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0)
            err = 0;
        else if (errno != EINPROGRESS)
            err = errno;
        else if (poll(&pfd, 1, timeout_ms) != 1)
            err = ETIMEDOUT;
        else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
            err = errno;
        close(fd);
        if (err == 0)
            break;
    }
    freeaddrinfo(res);
    if (err == 0)
        return 0;
    fprintf(stderr, "parley-replay play: cannot connect to %s: %s\n", p->hosthdr, strerror(err));
    return 1;
}

static int
s_open_out(s_play_t *p)
{
    struct stat a, b;
    if (stat(p->file, &a) == 0 && stat(p->out_path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino)
        return rp_usage_error(s_cmd, "--out %s is the capture being replayed", p->out_path);
    char source[PL_CAP_NAME_MAX + 1], err[512];
    snprintf(source, sizeof source, "parley-replay play %s", p->url);
    if (rp_writer_open(&p->out, p->out_path, source, err, sizeof err) != 0)
        return rp_usage_error(s_cmd, "--out %s", err);
    p->out_open = true;
    return 0;
}

static int
s_start(s_play_t *p)
{
    p->copies = calloc(p->multiply, sizeof *p->copies);
    if (!p->copies)
        return -1;
    for (unsigned n = 0; n < p->multiply; n++) {
        s_copy_t *c = &p->copies[n];
        c->play = p;
        c->no = n;
        c->conns = calloc(p->cap.nconns ? p->cap.nconns : 1, sizeof *c->conns);
        if (!c->conns)
            return -1;
        for (size_t i = 0; i < p->cap.nconns; i++)
            c->conns[i] = (s_conn_t){.copy = c, .idx = i};
    }
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = s_protocols;
    info.gid = -1;
    info.uid = -1;
    info.timeout_secs = (unsigned) ceil((double) p->timeout_us / 1e6);
    info.connect_timeout_secs = info.timeout_secs;
    info.user = p;
    lws_set_log_level(getenv("PLAY_LWS_DEBUG") ? LLL_ERR | LLL_WARN | LLL_NOTICE | LLL_INFO : LLL_ERR, NULL);
    p->ctx = lws_create_context(&info);
    return p->ctx ? 0 : -1;
}

static void
s_run(s_play_t *p)
{
    p->copies_left = p->multiply;
    p->start_us = s_mono_us();
    for (unsigned n = 0; n < p->multiply; n++)
        s_copy_run(&p->copies[n]);
    while (!p->done)
        if (lws_service(p->ctx, 0) < 0)
            break;
}

static void
s_bytes(char *buf, size_t size, uint64_t n)
{
    if (n < 10000)
        snprintf(buf, size, "%llu B", (unsigned long long) n);
    else if (n < 10000000)
        snprintf(buf, size, "%.1f KiB", (double) n / 1024);
    else
        snprintf(buf, size, "%.1f MiB", (double) n / (1024 * 1024));
}

static void
s_summary(const s_play_t *p, int64_t wall_us)
{
    char bs[32], br[32];
    s_bytes(bs, sizeof bs, p->bytes_sent);
    s_bytes(br, sizeof br, p->bytes_received);
    double wall = (double) wall_us / 1e6, dur = (double) p->plan.duration_us / 1e6;
    fprintf(stderr,
            "parley-replay play: %zu connection(s) x %u cop%s: %llu connected, %llu failed to connect\n"
            "  frames sent %llu (%s), received %llu (%s); %.0f frames/s\n"
            "  capture %.3f s, replay %.3f s: speed x%.2f%s\n"
            "  failures %llu, warnings %llu\n",
            p->cap.nconns, p->multiply, p->multiply == 1 ? "y" : "ies", (unsigned long long) p->connected,
            (unsigned long long) p->failed_conns, (unsigned long long) p->sent, bs, (unsigned long long) p->received,
            br, wall > 0 ? (double) (p->sent + p->received) / wall : 0.0, dur, wall, wall > 0 ? dur / wall : 0.0,
            p->fast ? " (--fast)" : "", (unsigned long long) p->failures, (unsigned long long) p->warnings);
    if (p->greetings)
        fprintf(stderr,
                "  %llu frame(s) received before the first event of a connection the capture joined mid-way "
                "were not compared (the part the capture missed)\n",
                (unsigned long long) p->greetings);
}

static void
s_play_free(s_play_t *p)
{
    if (p->ctx)
        lws_context_destroy(p->ctx);
    for (unsigned n = 0; p->copies && n < p->multiply; n++) {
        s_copy_t *c = &p->copies[n];
        for (size_t i = 0; c->conns && i < p->cap.nconns; i++)
            free(c->conns[i].rx);
        free(c->conns);
        s_ids_free(&c->ids);
    }
    free(p->copies);
    if (p->out_open && rp_writer_close(&p->out) != 0)
        fprintf(stderr, "parley-replay play: %s: %s\n", p->out_path, strerror(errno));
    s_plan_free(&p->plan);
    rp_capture_free(&p->cap);
}

int
rp_play(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return s_help();
    s_play_t p;
    memset(&p, 0, sizeof p);
    p.speed = 1;
    p.multiply = 1;
    int rc = s_parse_args(&p, argc, argv);
    if (rc != 0)
        return rc;
    char err[512];
    if (rp_capture_load(p.file, &p.cap, err, sizeof err) != 0) {
        fprintf(stderr, "parley-replay play: %s\n", err);
        return 2;
    }
    if (p.cap.warning[0])
        fprintf(stderr, "parley-replay play: %s: %s (replaying what came before)\n", p.file, p.cap.warning);
    rc = s_check_fds(&p);
    if (rc == 0 && s_plan_build(&p.plan, &p.cap, err, sizeof err) != 0)
        rc = rp_usage_error(s_cmd, "%s", err);
    if (rc == 0)
        rc = s_probe(&p);
    if (rc == 0 && p.out_path)
        rc = s_open_out(&p);
    if (rc == 0 && s_start(&p) != 0) {
        fprintf(stderr, "parley-replay play: cannot start: out of memory or no lws context\n");
        rc = 2;
    }
    if (rc == 0) {
        signal(SIGPIPE, SIG_IGN);
        int64_t t0 = s_mono_us();
        s_run(&p);
        s_summary(&p, s_mono_us() - t0);
        rc = p.failures == 0 && p.connected == (uint64_t) p.multiply * p.cap.nconns ? 0 : 1;
    }
    s_play_free(&p);
    return rc;
}
