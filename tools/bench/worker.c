/*  worker — one worker process: an lws context holding its slice of the
    connections, driven through the phases by the parent.

    OPEN   connect every connection (conn.c); a connection is open when
           `connected` arrives. fanout/stream also set their sessions up (turns.c).
           Done when every connection and session is settled.
    RUN    fanout/stream: the turns (turns.c), until the end of the
           window and the drain.
    PING   a ping on every open connection; done when each has its pong
           (or after S_PING_WAIT_US).
    CLOSE  close every connection (1000, conn.c); done when all are
           closed (or after S_CLOSE_WAIT_US); then the result goes up and
           the worker exits.

    The loop is libev's (epoll), given to lws as a foreign loop: lws's own
    poll() loop walks every descriptor on each wake-up, which at thousands
    of connections made the bench cost more CPU than the server it
    measures. The parent's commands arrive on a pipe adopted into that loop
    as a raw file descriptor, so it sleeps until there is something to do.
    Progress goes up every S_PROGRESS_US. Everything here runs on the one
    thread of the loop. */
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

#define S_PROGRESS_US 250000
/* How long the final pings may take to come back. */
#define S_PING_WAIT_US 10000000
/* How long the closes may take: this, plus S_CLOSE_EACH_US per connection
   (they go a bounded number at a time). */
#define S_CLOSE_WAIT_US 5000000
#define S_CLOSE_EACH_US 200
/* Descriptors besides the connections: stdio, the pipes, lws's own. */
#define S_FD_SPARE 256
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
        pb_conn_close_pump(w);
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
    {.name = "parley-bench", .callback = pb_conn_callback},
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
    pb_conn_pump(w);
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
