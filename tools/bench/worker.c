/*  worker — one worker process: an lws context holding its slice of the
    connections, driven through the phases by the parent.

    OPEN   connect every connection (paced by --rate, at most S_INFLIGHT
           handshakes at once); a connection is open when `connected`
           arrives. fanout/stream also set their sessions up (turns.c).
           Done when every connection and session is settled.
    RUN    fanout/stream: the turns (turns.c), until the end of the
           window and the drain.
    PING   a ping on every open connection; done when each has its pong
           (or after S_PING_WAIT_US).
    CLOSE  close every connection (1000); done when all are closed (or
           after S_CLOSE_WAIT_US); then the result goes up and the worker
           exits.

    The loop is libev's (epoll), given to lws as a foreign loop: lws's own
    poll() loop walks every descriptor on each wake-up, which at thousands
    of connections made the bench cost more CPU than the server it
    measures. The parent's commands arrive on a pipe adopted into that loop
    as a raw file descriptor, so it sleeps until there is something to do.
    Progress goes up every S_PROGRESS_US. Everything here runs on the one
    thread of the loop. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <ev.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "worker_int.h"

/* Handshakes in flight per worker: more only overflows the server's
   accept queue, which turns into SYN retries a second later. */
#define S_INFLIGHT 512
#define S_PROGRESS_US 250000
#define S_PING_WAIT_US 10000000
#define S_CLOSE_WAIT_US 5000000
/* Descriptors besides the connections: stdio, the pipes, lws's own. */
#define S_FD_SPARE 256
#define S_CLOSE_EACH_US 200
/* A message arriving in pieces larger than this is an error (parleyd's
   frames are far smaller). */
#define S_RX_MAX (8u << 20)
/* Seconds lws gives a connect and a handshake. */
#define S_CONNECT_TIMEOUT_S 30

int64_t
pb_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ------------------------------------------------------------ reports -- */

static void
s_write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            _exit(3); /* the parent is gone: nobody to report to */
        p += n;
        len -= (size_t) n;
    }
}

static void
s_report(pb_worker_t *w, pb_msg_t msg)
{
    pb_report_t *r = &w->rep;
    w->c.open_now = w->open_now;
    w->c.sessions_ready = 0;
    for (size_t i = 0; i < w->nsess; i++)
        w->c.sessions_ready += w->sess[i].ready;
    if (msg == PB_MSG_RESULT) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        w->c.cpu_s = (double) ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double) ru.ru_stime.tv_sec +
                     ru.ru_stime.tv_usec / 1e6;
    }
    r->msg = msg;
    r->phase = (uint32_t) w->phase;
    r->c = w->c;
    r->errs = w->errs;
    r->lat = w->lat;
    r->ttfc = w->ttfc;
    s_write_all(w->rep_fd, r, sizeof *r);
}

void
pb_worker_fatal(pb_worker_t *w, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->rep.fatal, sizeof w->rep.fatal, fmt, ap);
    va_end(ap);
    s_report(w, PB_MSG_FATAL);
    w->finished = true;
}

/* --------------------------------------------------------- connecting -- */

static void s_pump(pb_worker_t *w);

static void
s_connect_timer(lws_sorted_usec_list_t *sul)
{
    s_pump(lws_container_of(sul, pb_worker_t, connect_sul));
}

/* A connection is settled: open, refused or failed. */
static void
s_settle(pb_worker_t *w)
{
    w->connecting--;
    w->settled++;
    s_pump(w);
    pb_worker_check(w);
}

static void
s_failed(pb_conn_t *k, const char *why, unsigned status)
{
    pb_worker_t *w = k->w;
    if (k->state != PB_C_CONNECTING && k->state != PB_C_HELLO)
        return;
    k->state = PB_C_FAILED;
    k->wsi = NULL;
    w->live--;
    if (w->tearing_down)
        return;
    if (status == 503) {
        w->c.refused++;
        pb_errs_add(&w->errs, 1, "refused by the server (503 BUSY)");
    } else {
        w->c.failed++;
        if (status)
            pb_errs_add(&w->errs, 1, "connection failed: the server answered the upgrade with HTTP %u", status);
        else
            pb_errs_add(&w->errs, 1, "connection failed: %s", why);
    }
    if (k->sess)
        pb_turns_lost_member(k);
    s_settle(w);
}

/* No lws validity timer per connection: lws keeps its timers in one
   sorted list, and re-arming one per connection on every frame received
   walks that list (quadratic at thousands of connections). The server's
   own heartbeat pings are answered by lws regardless. */
static const lws_retry_bo_t s_no_validity = {.secs_since_valid_ping = 0, .secs_since_valid_hangup = 0};

static void
s_source(uint32_t gidx, long per_address, char *buf, size_t size)
{
    uint32_t a = 0x7f000001u + gidx / (uint32_t) per_address;
    snprintf(buf, size, "%u.%u.%u.%u", a >> 24, (a >> 16) & 255, (a >> 8) & 255, a & 255);
}

static void
s_open(pb_worker_t *w, pb_conn_t *k)
{
    const pb_opts_t *o = w->o;
    char iface[20];
    struct lws_client_connect_info i;
    memset(&i, 0, sizeof i);
    i.context = w->ctx;
    i.address = o->host;
    i.port = o->port;
    i.path = o->path;
    i.host = o->host;
    i.origin = o->host;
    i.ietf_version_or_minus_one = -1;
    i.userdata = k;
    i.pwsi = &k->wsi;
    i.retry_and_idle_policy = &s_no_validity;
    if (o->spread) {
        s_source(k->gidx, o->per_address, iface, sizeof iface);
        i.iface = iface; /* lws binds the socket to it before connect() */
    }
    k->state = PB_C_CONNECTING;
    w->connecting++;
    w->live++;
    if (!w->c.first_connect_us)
        w->c.first_connect_us = pb_now_us();
    if (!lws_client_connect_via_info(&i))
        s_failed(k, "lws could not start the connection", 0);
}

/* Starts the connections that are due, up to S_INFLIGHT at once. A call
   from inside (a failure while starting one) makes the outer call go
   round again instead. */
static void
s_pump(pb_worker_t *w)
{
    if (w->pumping) {
        w->again = true;
        return;
    }
    w->pumping = true;
    do {
        w->again = false;
        int64_t now = pb_now_us();
        while (w->next_connect < w->nconns && w->connecting < S_INFLIGHT && !w->tearing_down) {
            if (w->sl.conn_rate > 0) {
                int64_t due = w->connect_t0 + (int64_t) ((double) w->next_connect * 1e6 / w->sl.conn_rate);
                if (now < due) {
                    lws_sul_schedule(w->ctx, 0, &w->connect_sul, s_connect_timer, due - now);
                    break;
                }
            }
            s_open(w, &w->conns[w->next_connect++]);
        }
    } while (w->again);
    w->pumping = false;
}

/* ------------------------------------------------------------- frames -- */

static void
s_error_frame(pb_worker_t *w, const char *buf, size_t len)
{
    cJSON *j = cJSON_ParseWithLength(buf, len);
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(j, "code");
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(j, "message");
    pb_errs_add(&w->errs, 1, "error frame %s: %s", cJSON_IsString(code) ? code->valuestring : "(no code)",
                cJSON_IsString(msg) ? msg->valuestring : "(no message)");
    cJSON_Delete(j);
}

/* One whole server message. */
static void
s_message(pb_conn_t *k, const char *buf, size_t len)
{
    pb_worker_t *w = k->w;
    int64_t now = pb_now_us();
    w->c.frames_total++;
    if (w->phase == PB_PH_RUN && now >= w->t_measure && now < w->t_stop)
        w->c.frames_window++;
    pb_frame_t f;
    pb_scan(buf, len, &f);
    if (!f.ok) {
        pb_errs_add(&w->errs, 1, "a server frame that is not a JSON object with a type: %.60s", buf);
        return;
    }
    switch (f.type) {
    case PB_F_CONNECTED:
        if (k->state != PB_C_HELLO)
            return;
        k->state = PB_C_OPEN;
        w->open_now++;
        w->c.opened++;
        w->c.last_connected_us = now;
        if (k->sess)
            pb_turns_open(k);
        s_settle(w);
        return;
    case PB_F_PONG:
        if (k->pinged && !k->ponged) {
            k->ponged = true;
            w->c.pongs++;
            w->ping_waiting--;
            pb_worker_check(w);
        }
        return;
    default:
        break;
    }
    if (k->sess) {
        pb_turns_frame(k, &f, buf, len, now);
    } else if (f.type == PB_F_ERROR) {
        s_error_frame(w, buf, len);
    }
}

static int
s_receive(pb_conn_t *k, struct lws *wsi, const char *in, size_t len)
{
    pb_worker_t *w = k->w;
    bool whole = lws_is_final_fragment(wsi) && lws_remaining_packet_payload(wsi) == 0;
    if (lws_frame_is_binary(wsi)) {
        pb_errs_add(&w->errs, 1, "a binary frame from the server");
        return 0;
    }
    if (whole && k->rx_len == 0) { /* the usual case: no copy */
        s_message(k, in, len);
        return 0;
    }
    if (len > S_RX_MAX - k->rx_len) {
        pb_errs_add(&w->errs, 1, "a server message over %u bytes", S_RX_MAX);
        return -1;
    }
    if (k->rx_len + len > k->rx_cap) {
        uint32_t ncap = k->rx_cap ? k->rx_cap : 4096;
        while (ncap < k->rx_len + len)
            ncap *= 2;
        char *v = realloc(k->rx, ncap);
        if (!v)
            return -1;
        k->rx = v;
        k->rx_cap = ncap;
    }
    memcpy(k->rx + k->rx_len, in, len);
    k->rx_len += (uint32_t) len;
    if (whole) {
        s_message(k, k->rx, k->rx_len);
        k->rx_len = 0;
    }
    return 0;
}

/* ------------------------------------------------------------ writing -- */

void
pb_worker_send(pb_conn_t *k, unsigned tx)
{
    k->tx |= (uint8_t) tx;
    if (k->wsi && k->state == PB_C_OPEN)
        lws_callback_on_writable(k->wsi);
}

static int
s_writeable(pb_conn_t *k, struct lws *wsi)
{
    pb_worker_t *w = k->w;
    if (k->state != PB_C_OPEN)
        return 0;
    if (k->tx & PB_TX_CLOSE) {
        k->state = PB_C_CLOSING;
        w->open_now--;
        lws_close_reason(wsi, LWS_CLOSE_STATUS_NORMAL, NULL, 0);
        return -1;
    }
    int64_t now = pb_now_us();
    char *out = (char *) w->txbuf + LWS_PRE;
    size_t n = 0;
    if (k->tx & (PB_TX_CREATE | PB_TX_JOIN)) {
        unsigned what = k->tx & PB_TX_CREATE ? PB_TX_CREATE : PB_TX_JOIN;
        k->tx &= (uint8_t) ~what;
        n = pb_turns_render_setup(k, what);
    } else if (k->chats) {
        n = pb_turns_render_chat(k, now);
    } else if (k->tx & PB_TX_PING) {
        k->tx &= (uint8_t) ~PB_TX_PING;
        n = (size_t) snprintf(out, PB_TX_MAX, "{\"type\":\"ping\"}");
    }
    if (n) {
        int m = lws_write(wsi, (unsigned char *) out, n, LWS_WRITE_TEXT);
        if (m < (int) n) {
            pb_errs_add(&w->errs, 1, "a write failed; the connection is closed");
            return -1;
        }
        w->c.frames_sent++;
    }
    if (k->tx || k->chats)
        lws_callback_on_writable(wsi);
    return 0;
}

/* Closes the open connections, at most S_INFLIGHT at once: each close
   arms an lws timeout (waiting for the server's close frame), and lws
   keeps its timeouts in one sorted list that every insertion walks. */
static void
s_close_pump(pb_worker_t *w)
{
    while (!w->tearing_down && w->closing < S_INFLIGHT && w->close_next < w->nconns) {
        pb_conn_t *k = &w->conns[w->close_next++];
        if (k->state != PB_C_OPEN)
            continue;
        w->closing++;
        pb_worker_send(k, PB_TX_CLOSE);
    }
}

static void
s_closed(pb_conn_t *k)
{
    pb_worker_t *w = k->w;
    int st = k->state;
    if (st != PB_C_CONNECTING && st != PB_C_HELLO && st != PB_C_OPEN && st != PB_C_CLOSING)
        return; /* settled already (a connection error) */
    k->wsi = NULL;
    free(k->rx);
    k->rx = NULL;
    k->rx_len = k->rx_cap = 0;
    if (st == PB_C_CONNECTING || st == PB_C_HELLO) {
        k->state = PB_C_HELLO; /* s_failed wants one of the two */
        s_failed(k, "closed before the server's `connected`", 0);
        return;
    }
    k->state = PB_C_CLOSED;
    w->live--;
    if (k->tx & PB_TX_CLOSE) {
        w->closing--;
        s_close_pump(w);
    }
    if (k->pinged && !k->ponged && w->ping_waiting) {
        k->ponged = true; /* no longer waited for; the drop is counted below */
        w->ping_waiting--;
    }
    if (st != PB_C_OPEN || w->tearing_down) {
        pb_worker_check(w);
        return;
    }
    w->open_now--;
    w->c.dropped++;
    if (k->close_code)
        pb_errs_add(&w->errs, 1, "a connection was closed by the server (code %d)", k->close_code);
    else
        pb_errs_add(&w->errs, 1, "a connection was closed without a close frame");
    if (k->sess)
        pb_turns_lost_member(k);
    pb_worker_check(w);
}

static int
s_ws_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
    pb_conn_t *k = user;
    if (!k)
        return 0;
    switch (reason) {
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        /* lws 4.1 reports a refused upgrade here ("HS: ws upgrade response
           not 101"); the status line is still readable. */
        s_failed(k, in ? (const char *) in : "connection error", lws_http_client_http_response(wsi));
        return 0;
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        if (k->state == PB_C_CONNECTING)
            k->state = PB_C_HELLO;
        return 0;
    case LWS_CALLBACK_CLIENT_RECEIVE:
        return s_receive(k, wsi, in, len);
    case LWS_CALLBACK_CLIENT_WRITEABLE:
        return s_writeable(k, wsi);
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        if (len >= 2)
            k->close_code = ((const unsigned char *) in)[0] << 8 | ((const unsigned char *) in)[1];
        else
            k->close_code = LWS_CLOSE_STATUS_NO_STATUS;
        return 0;
    case LWS_CALLBACK_CLIENT_CLOSED:
        s_closed(k);
        return 0;
    default:
        return 0;
    }
}

/* ------------------------------------------------------------- phases -- */

static void
s_phase_done(pb_worker_t *w)
{
    if (w->phase_reported)
        return;
    w->phase_reported = true;
    if (w->phase == PB_PH_CLOSE) {
        w->phase = PB_PH_DONE;
        s_report(w, PB_MSG_RESULT);
        w->finished = true;
        lws_cancel_service(w->ctx);
        return;
    }
    s_report(w, PB_MSG_PHASE_DONE);
}

void
pb_worker_check(pb_worker_t *w)
{
    if (w->phase_reported || w->finished || w->tearing_down)
        return;
    int64_t now = pb_now_us();
    switch (w->phase) {
    case PB_PH_OPEN:
        if (w->settled == w->nconns && w->sessions_settled == w->nsess)
            s_phase_done(w);
        break;
    case PB_PH_RUN:
        if (now >= w->t_stop && (pb_turns_drained(w) || now >= w->t_deadline)) {
            pb_turns_finish(w);
            s_phase_done(w);
        }
        break;
    case PB_PH_PING:
        if (!w->ping_waiting || now >= w->t_deadline) {
            if (w->ping_waiting)
                pb_errs_add(&w->errs, w->ping_waiting, "no pong to the final ping within %d s",
                            S_PING_WAIT_US / 1000000);
            s_phase_done(w);
        }
        break;
    case PB_PH_CLOSE:
        if (!w->live || now >= w->t_deadline)
            s_phase_done(w);
        break;
    default:
        break;
    }
}

static void
s_start_phase(pb_worker_t *w, const pb_cmd_t *cmd)
{
    int64_t now = pb_now_us();
    w->phase = (int) cmd->phase;
    w->phase_reported = false;
    switch (w->phase) {
    case PB_PH_RUN:
        w->t_start = cmd->t_start_us;
        w->t_measure = w->t_start + (int64_t) (w->o->warmup * 1e6);
        w->t_stop = w->t_measure + (int64_t) (w->o->duration * 1e6);
        pb_turns_run(w);
        break;
    case PB_PH_PING:
        w->t_deadline = now + S_PING_WAIT_US;
        for (size_t i = 0; i < w->nconns; i++) {
            pb_conn_t *k = &w->conns[i];
            if (k->state != PB_C_OPEN)
                continue;
            k->pinged = true;
            w->c.pings++;
            w->ping_waiting++;
            pb_worker_send(k, PB_TX_PING);
        }
        break;
    case PB_PH_CLOSE:
        w->t_deadline = now + S_CLOSE_WAIT_US + (int64_t) w->nconns * S_CLOSE_EACH_US;
        w->next_connect = w->nconns; /* nothing more opens */
        for (size_t i = 0; i < w->nconns; i++) {
            pb_conn_t *k = &w->conns[i];
            if (k->wsi && (k->state == PB_C_CONNECTING || k->state == PB_C_HELLO))
                lws_set_timeout(k->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
        }
        s_close_pump(w);
        break;
    default:
        break;
    }
    pb_worker_check(w);
}

static int
s_ctl_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
    (void) user, (void) in, (void) len;
    pb_worker_t *w = lws_context_user(lws_get_context(wsi));
    if (reason != LWS_CALLBACK_RAW_RX_FILE)
        return 0;
    pb_cmd_t cmd;
    ssize_t n = read(w->cmd_fd, &cmd, sizeof cmd); /* one whole command: smaller than PIPE_BUF */
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return 0;
    if (n != (ssize_t) sizeof cmd)
        _exit(3); /* the parent is gone */
    s_start_phase(w, &cmd);
    return 0;
}

static void
s_tick(lws_sorted_usec_list_t *sul)
{
    pb_worker_t *w = lws_container_of(sul, pb_worker_t, tick);
    if (w->finished)
        return;
    pb_worker_check(w);
    if (!w->finished)
        s_report(w, PB_MSG_PROGRESS);
    lws_sul_schedule(w->ctx, 0, &w->tick, s_tick, S_PROGRESS_US);
}

static const struct lws_protocols s_protocols[] = {
    {.name = "parley-bench", .callback = s_ws_callback},
    {.name = "parley-bench-ctl", .callback = s_ctl_callback},
    {.name = NULL, .callback = NULL},
};

/* ---------------------------------------------------------------- run -- */

static int
s_setup(pb_worker_t *w)
{
    const pb_opts_t *o = w->o;
    w->nconns = w->sl.nconns;
    w->conns = calloc(w->nconns ? w->nconns : 1, sizeof *w->conns);
    if (!w->conns)
        return -1;
    for (size_t i = 0; i < w->nconns; i++) {
        pb_conn_t *k = &w->conns[i];
        k->w = w;
        k->last_seq = -1;
        k->gidx = (uint32_t) (w->sl.gbase + i);
    }
    /* stream: the idle connections come after the streamers */
    for (size_t i = 0; o->scenario == PB_STREAM && i < w->sl.nidle; i++)
        w->conns[w->sl.nsess + i].gidx = (uint32_t) (w->sl.idle_gbase + i);
    w->c.planned = w->nconns;
    w->interval_us = (int64_t) (o->chunk_interval_ms * 1000.0);
    return pb_turns_init(w);
}

int
pb_worker_main(const pb_opts_t *o, const pb_slice_t *sl, int cmd_fd, int rep_fd)
{
    signal(SIGPIPE, SIG_IGN);
    /* Descriptors: as many as the slice needs. lws sizes its fd table by
       this limit, and scans all of it once per new connection. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rlim_t want = (rlim_t) sl->nconns + S_FD_SPARE;
        rl.rlim_cur = want < rl.rlim_max ? want : rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    pb_worker_t *w = calloc(1, sizeof *w);
    if (!w)
        return 3;
    w->o = o;
    w->sl = *sl;
    w->cmd_fd = cmd_fd;
    w->rep_fd = rep_fd;
    w->phase = PB_PH_OPEN;
    if (s_setup(w) != 0) {
        pb_worker_fatal(w, "worker %u: out of memory", sl->no);
        return 3;
    }

    struct ev_loop *loop = ev_loop_new(EVBACKEND_EPOLL | EVFLAG_NOENV);
    if (!loop) {
        pb_worker_fatal(w, "worker %u: cannot create the event loop (epoll)", sl->no);
        return 3;
    }
    void *foreign[1] = {loop};
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.options = LWS_SERVER_OPTION_LIBEV;
    info.foreign_loops = foreign;
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = s_protocols;
    info.gid = -1;
    info.uid = -1;
    info.timeout_secs = S_CONNECT_TIMEOUT_S;
    info.connect_timeout_secs = S_CONNECT_TIMEOUT_S;
    info.user = w;
    lws_set_log_level(getenv("PB_LWS_DEBUG") ? LLL_ERR | LLL_WARN | LLL_NOTICE | LLL_INFO : LLL_ERR, NULL);
    w->ctx = lws_create_context(&info);
    if (!w->ctx) {
        pb_worker_fatal(w, "worker %u: lws_create_context failed (is libwebsockets-evlib-ev installed?)", sl->no);
        return 3;
    }
    lws_sock_file_fd_type fd;
    fd.filefd = cmd_fd;
    if (!lws_adopt_descriptor_vhost(lws_get_vhost_by_name(w->ctx, "default"), LWS_ADOPT_RAW_FILE_DESC, fd,
                                    "parley-bench-ctl", NULL)) {
        pb_worker_fatal(w, "worker %u: cannot watch the command pipe", sl->no);
        return 3;
    }

    w->connect_t0 = pb_now_us();
    lws_sul_schedule(w->ctx, 0, &w->tick, s_tick, S_PROGRESS_US);
    s_pump(w);
    pb_worker_check(w);
    while (!w->finished)
        ev_run(loop, EVRUN_ONCE);

    w->tearing_down = true;
    lws_sul_cancel(&w->tick);
    lws_sul_cancel(&w->connect_sul);
    pb_turns_free(w); /* cancels the sessions' timers */
    lws_context_destroy(w->ctx);
    ev_loop_destroy(loop);
    for (size_t i = 0; i < w->nconns; i++)
        free(w->conns[i].rx);
    free(w->conns);
    free(w->tail);
    free(w);
    return 0;
}
