/*  play_run — the runtime of parley-replay play: K copies of the plan
    (play_plan.c) on one lws context and one thread.

    A copy walks the plan with one cursor and at most one action in flight
    (a connect, a write or a close): the next event is issued when it is
    due, when the previous one is done, and when the copy's watermark covers
    its gate. The watermark is the longest prefix of the capture's OUT
    frames whose counterparts have arrived: the n-th OUT frame of original
    connection X has its counterpart once replayed connection X has received
    n frames (or has closed). Since gates and watermarks only grow, the
    per-connection count vectors of the specification reduce to two
    integers, and the plan is the only queue: nothing grows with time. Each
    copy has its own id map (play_ids.c).

    SIGINT and SIGTERM stop the replay: the handler only sets a flag; the
    service loop sees it when poll returns (EINTR, no SA_RESTART) or at the
    next tick (S_TICK_US, for a signal that lands just before poll). Every
    copy then stops issuing events and closes its connections with 1001.

    Everything runs on the lws service thread: the callbacks, each copy's
    timer and the tick (lws sorted-usec-list entries). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pl_util.h"
#include "play_int.h"

/* Warnings printed; past this they are only counted (50 copies of a broken
   capture must not bury the summary). */
#define S_WARN_MAX 20
/* A receive buffer grown past this is freed after its frame, so a rare huge
   frame does not pin memory on each of thousands of connections. */
#define S_RX_KEEP (1u << 20)
/* How long the open of a connection the capture joined mid-way waits for
   the server's greeting (its first frame) before the cursor goes on. */
#define S_GREETING_WAIT_US 250000
/* Longest the service loop sleeps: the bound on seeing a signal late. */
#define S_TICK_US 100000
/* How long an interrupted replay waits for the server to answer its
   closes before it drops the connections (a second signal: at once). */
#define S_STOP_WAIT_US 2000000

/* The signal caught while playing, and how many came. */
static volatile sig_atomic_t s_signal, s_signals;

typedef enum { S_IDLE, S_CONNECTING, S_OPEN, S_CLOSING, S_CLOSED, S_FAILED } s_state_t;

typedef struct {
    struct rp_copy *copy;
    size_t idx; /* its connection in the capture */
    struct lws *wsi;
    s_state_t state;
    size_t recv;          /* whole server frames received */
    const rp_event_t *tx; /* the frame or close waiting for WRITEABLE */
    int close_now;        /* nonzero: close with this code at WRITEABLE (end of the replay, a stop) */
    char *rx;             /* the message being reassembled */
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

typedef struct rp_copy {
    lws_sorted_usec_list_t sul;
    struct rp_play *play;
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
    int stop_code; /* nonzero: the copy stopped (a failed connect: 1000, a signal: 1001) and closes
                      with it what is open or opening */
    rp_idmap_t ids;
} s_copy_t;

static int64_t
s_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void s_warn(rp_play_t *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
s_warn(rp_play_t *p, const char *fmt, ...)
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
s_out_add(rp_play_t *p, pl_cap_rec_t *r)
{
    if (!p->out_open || p->out_failed)
        return;
    r->seq = ++p->out_seq;
    r->t_us = pl_wall_us();
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
    const rp_plan_t *pl = &c->play->plan;
    while (c->water < pl->nout) {
        const rp_out_t *o = &pl->out[c->water];
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
s_copy_give_up(s_copy_t *c, const rp_event_t *e)
{
    rp_play_t *p = c->play;
    const rp_out_t *o = &p->plan.out[c->water];
    const s_conn_t *k = &c->conns[e->conn], *src = &c->conns[o->conn];
    char a[96], b[96], what[64], ta[64], tb[64];
    if (e->kind == RP_EV_FRAME)
        snprintf(what, sizeof what, "frame %zu (%s)", e->frame_no, s_frame_type(e->rec, ta, sizeof ta));
    else
        snprintf(what, sizeof what, "%s", e->kind == RP_EV_OPEN ? "its open" : "its close");
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
s_copy_skip(s_copy_t *c, const rp_event_t *e, s_conn_t *k)
{
    if (k->reported || k->state == S_FAILED || (k->close_known && k->close_by == PL_CAP_IN))
        return;
    k->reported = true;
    c->play->failures++;
    char a[96], t[64];
    if (e->kind == RP_EV_FRAME)
        s_warn(c->play, "%s: the server closed it (code %d) before frame %zu (%s) of %zu could be sent",
               s_name(k, a, sizeof a), k->close_code, e->frame_no, s_frame_type(e->rec, t, sizeof t),
               c->play->plan.conns[k->idx].nin);
    else
        s_warn(c->play, "%s: the server closed it (code %d) where the capture's %s", s_name(k, a, sizeof a),
               k->close_code, e->rec ? "client closed it" : "connection was still open at the end");
}

/* The copy issues no more events and closes its connections with `code`:
   one that lost a connection would only diverge from the capture (and wait
   --timeout at every gate its missing frames hold); a signal stops them
   all. An action in flight is let go: a write not yet made is dropped (a
   close goes instead), a connect is closed once established. */
static void
s_copy_stop(s_copy_t *c, int code)
{
    c->stop_code = code;
    c->next = c->play->plan.nev;
    c->busy = false;
    c->wait_since = 0;
    for (size_t i = 0; i < c->play->cap.nconns; i++) {
        s_conn_t *k = &c->conns[i];
        if (k->state == S_OPEN && !k->close_now) {
            k->close_now = code;
            lws_callback_on_writable(k->wsi);
        }
    }
}

static void
s_conn_failed(s_conn_t *k, const char *why)
{
    s_copy_t *c = k->copy;
    rp_play_t *p = c->play;
    if (k->state != S_CONNECTING)
        return;
    if (p->tearing_down) { /* the context is going: nothing more to say or do */
        k->state = S_FAILED;
        k->wsi = NULL;
        c->live--;
        return;
    }
    char a[96];
    s_warn(p, "%s: cannot connect to %s%s: %s; the copy stops here", s_name(k, a, sizeof a), p->hosthdr,
           p->plan.conns[k->idx].path, why);
    k->state = S_FAILED;
    k->wsi = NULL;
    p->failed_conns++;
    p->failures++;
    c->live--;
    s_copy_stop(c, LWS_CLOSE_STATUS_NORMAL);
    s_copy_settled(c);
}

static void
s_copy_open(s_copy_t *c, const rp_event_t *e, s_conn_t *k)
{
    rp_play_t *p = c->play;
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
s_copy_issue(s_copy_t *c, const rp_event_t *e, s_conn_t *k, int64_t now)
{
    c->busy = true;
    c->busy_since = now;
    if (e->kind == RP_EV_OPEN) {
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
    rp_play_t *p = c->play;
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
            if (p->plan.conns[i].server_closes && !p->interrupted) {
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
    const rp_event_t *e = c->busy ? &c->play->plan.ev[c->next - 1] : NULL;
    return e && e->kind == RP_EV_OPEN && e->conn == k->idx;
}

/* An action in flight past --timeout (a write the server does not take, a
   connect lws has not timed out): the connection is dropped. */
static void
s_copy_stalled(s_copy_t *c, int64_t now)
{
    rp_play_t *p = c->play;
    const rp_event_t *e = &p->plan.ev[c->next - 1];
    s_conn_t *k = &c->conns[e->conn];
    if (e->kind == RP_EV_OPEN && k->state == S_OPEN) { /* waiting for a greeting */
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
           e->kind == RP_EV_OPEN ? "connecting" : "a write", (double) p->timeout_us / 1e6);
    p->failures++;
    c->busy_since = now; /* once per timeout, until lws reports it closed */
    if (k->wsi)
        lws_set_timeout(k->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
}

static void
s_copy_step(s_copy_t *c)
{
    rp_play_t *p = c->play;
    int64_t now = s_mono_us();
    while (!c->busy && c->next < p->plan.nev) {
        const rp_event_t *e = &p->plan.ev[c->next];
        s_conn_t *k = &c->conns[e->conn];
        if (e->kind != RP_EV_OPEN && k->state != S_OPEN) {
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
    if (c->play->tearing_down)
        return;
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
    rp_play_t *p = c->play;
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
    if (c->stop_code) {
        k->close_now = c->stop_code;
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
    rp_play_t *p = c->play;
    const rp_pconn_t *pc = &p->plan.conns[k->idx];
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
    if (k->recv <= pc->nout && rp_ids_learn(&c->ids, pc->outs[k->recv - 1], k->rx, k->rx_len, k->rx_binary) != 0 &&
        !c->ids.full) {
        c->ids.full = true;
        s_warn(p, "copy %u: the id map is full (%u ids); ids seen from now on are not rewritten", c->no,
               (unsigned) RP_IDS_MAX);
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
    rp_play_t *p = k->copy->play;
    char *json = rp_ids_apply(&k->copy->ids, r);
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
    const rp_event_t *e = k->tx;
    if (!e)
        return 0;
    k->tx = NULL;
    if (e->kind == RP_EV_CLOSE) {
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
        if (!c->stop_code) /* a stopped copy reports nothing more */
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

/* ------------------------------------------------------------- the run -- */

static void
s_on_signal(int sig)
{
    s_signal = sig;
    s_signals = s_signals + 1;
}

/* Keeps the service loop from sleeping longer than S_TICK_US. */
static void
s_tick(lws_sorted_usec_list_t *sul)
{
    rp_play_t *p = lws_container_of(sul, rp_play_t, tick);
    lws_sul_schedule(p->ctx, 0, &p->tick, s_tick, S_TICK_US);
}

/* The first signal: every copy stops where it is. */
static void
s_interrupt(rp_play_t *p, int sig)
{
    p->interrupted = sig;
    for (unsigned n = 0; n < p->multiply; n++) {
        s_copy_t *c = &p->copies[n];
        if (c->finished)
            continue;
        p->unsent += p->plan.nev - c->next;
        s_copy_stop(c, LWS_CLOSE_STATUS_GOINGAWAY);
        s_copy_run(c);
    }
}

int
rp_play_start(rp_play_t *p)
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

void
rp_play_run(rp_play_t *p)
{
    /* Caught from here to the end of the process, so that a signal during
       the teardown cannot cut the --out file short either. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal; /* no SA_RESTART: poll returns EINTR */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    p->copies_left = p->multiply;
    p->start_us = s_mono_us();
    lws_sul_schedule(p->ctx, 0, &p->tick, s_tick, S_TICK_US);
    for (unsigned n = 0; n < p->multiply; n++)
        s_copy_run(&p->copies[n]);
    int64_t stop_by = 0;
    while (!p->done) {
        if (s_signal && !p->interrupted) {
            s_interrupt(p, s_signal);
            stop_by = s_mono_us() + S_STOP_WAIT_US;
            continue;
        }
        if (p->interrupted && (s_signals > 1 || s_mono_us() >= stop_by))
            break; /* rp_play_stop drops what is still open */
        if (lws_service(p->ctx, 0) < 0 && !s_signal)
            break;
    }
    lws_sul_cancel(&p->tick);
    p->wall_us = s_mono_us() - p->start_us;
}

void
rp_play_stop(rp_play_t *p)
{
    p->tearing_down = true;
    if (p->ctx)
        lws_context_destroy(p->ctx);
    p->ctx = NULL;
    for (unsigned n = 0; p->copies && n < p->multiply; n++) {
        s_copy_t *c = &p->copies[n];
        for (size_t i = 0; c->conns && i < p->cap.nconns; i++)
            free(c->conns[i].rx);
        free(c->conns);
        rp_ids_free(&c->ids);
    }
    free(p->copies);
    p->copies = NULL;
}
