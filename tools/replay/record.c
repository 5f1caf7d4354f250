/*  record — attach to parleyd's tap and write what it publishes.

    A ZeroMQ SUB socket connects to the tap; every record is checked and
    appended to the file as it arrives, and the file is flushed whenever
    the socket has nothing more waiting, so Ctrl-C (or SIGTERM) loses
    nothing that was received. Records the tap dropped show as a jump in
    their sequence numbers; the recorder writes a LOST record there. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "pl_envelope.h"
#include "pl_util.h"
#include "replay.h"

/* Records ZeroMQ may hold for us between reads: the tap's own bound
   (--tap-hwm) is what decides drops; this only needs to exceed a burst. */
#define S_RCVHWM 100000
/* Longest wait in zmq_poll, so signals and --duration are seen. */
#define S_POLL_MS 200

static volatile sig_atomic_t s_stop;

static void
s_on_signal(int sig)
{
    (void) sig;
    s_stop = 1;
}

static int
s_help(void)
{
    printf("usage: parley-replay record [--duration SECONDS] [--quiet] ENDPOINT FILE\n"
           "\n"
           "Attaches to a running parleyd's capture tap (parleyd --tap ENDPOINT) and\n"
           "writes every record it publishes to FILE (created or truncated): each\n"
           "connection's open and close, and every WebSocket frame in and out.\n"
           "\n"
           "Recording runs until Ctrl-C (SIGINT), SIGTERM, or --duration seconds;\n"
           "everything received is on disk when it stops. \"recording\" is printed on\n"
           "stderr once the tap has accepted the subscription: frames from then on are\n"
           "captured. If the recorder falls more than --tap-hwm records behind, the\n"
           "server drops records rather than wait; the recorder notes each loss in the\n"
           "file (a LOST record) and in its summary.\n"
           "\n"
           "options:\n"
           "  --duration SECONDS  stop after this long (default: until a signal)\n"
           "  --quiet             no summary on stderr\n"
           "\n"
           "example:\n"
           "  parleyd --tap ipc:///tmp/parley.tap &\n"
           "  parley-replay record ipc:///tmp/parley.tap today.cap\n");
    return 0;
}

typedef struct {
    rp_writer_t w;
    uint64_t last_seq;
    uint64_t records, frames, opens, lost, bad, restarts;
    int werr; /* errno of the first write that failed */
} s_rec_t;

/* Appends one tap message. 0, or -1 on a write error (st->werr). */
static int
s_take(s_rec_t *st, const char *buf, size_t len)
{
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    pl_cap_rec_t r;
    char why[120];
    if (pl_mp_check(buf, len, NULL) != 1 || msgpack_unpack_next(&u, buf, len, &off) != MSGPACK_UNPACK_SUCCESS ||
        off != len || pl_cap_rec_from(&u.data, &r, why, sizeof why) != 0 || r.kind == PL_CAP_LOST) {
        if (st->bad++ == 0)
            fprintf(stderr, "parley-replay record: skipping a message that is not a capture record\n");
        goto done;
    }
    if (st->last_seq && r.seq <= st->last_seq) {
        st->restarts++; /* the server restarted: its numbering starts again */
    } else if (st->last_seq && r.seq > st->last_seq + 1) {
        pl_cap_rec_t lost = {
            .kind = PL_CAP_LOST, .seq = st->last_seq + 1, .t_us = r.t_us, .count = r.seq - st->last_seq - 1};
        st->lost += lost.count;
        if (rp_writer_add(&st->w, &lost, false) != 0 && !st->werr)
            st->werr = errno;
    }
    st->last_seq = r.seq;
    st->records++;
    st->frames += r.kind == PL_CAP_FRAME;
    st->opens += r.kind == PL_CAP_OPEN;
    if (rp_writer_add(&st->w, &r, false) != 0 && !st->werr)
        st->werr = errno;
done:
    msgpack_unpacked_destroy(&u);
    return st->werr ? -1 : 0;
}

static bool
s_welcome(zmq_msg_t *msg)
{
    size_t n = strlen(PL_CAP_TAP_WELCOME);
    return zmq_msg_size(msg) == n && memcmp(zmq_msg_data(msg), PL_CAP_TAP_WELCOME, n) == 0;
}

int
rp_record(int argc, char **argv)
{
    double duration = 0;
    bool quiet = false;
    int i = 1;
    for (; i < argc && argv[i][0] == '-' && argv[i][1]; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return s_help();
        if (strcmp(argv[i], "--quiet") == 0) {
            quiet = true;
        } else if (strcmp(argv[i], "--duration") == 0 && i + 1 < argc) {
            char *end;
            duration = strtod(argv[++i], &end);
            if (*end || !(duration > 0) || duration > 1e7)
                return rp_usage_error("record", "--duration needs a number of seconds > 0, not '%s'", argv[i]);
        } else {
            return rp_usage_error("record", "unknown option '%s'", argv[i]);
        }
    }
    if (argc - i != 2)
        return rp_usage_error("record", "needs ENDPOINT and FILE");
    const char *endpoint = argv[i], *path = argv[i + 1];

    void *zctx = zmq_ctx_new();
    void *sub = zctx ? zmq_socket(zctx, ZMQ_SUB) : NULL;
    if (!sub) {
        fprintf(stderr, "parley-replay record: cannot create a ZeroMQ socket: %s\n", zmq_strerror(errno));
        if (zctx)
            zmq_ctx_term(zctx);
        return 2;
    }
    int hwm = S_RCVHWM, zero = 0;
    zmq_setsockopt(sub, ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_setsockopt(sub, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "", 0);
    if (zmq_connect(sub, endpoint) != 0) {
        fprintf(stderr, "parley-replay record: %s: %s\n", endpoint, zmq_strerror(errno));
        zmq_close(sub);
        zmq_ctx_term(zctx);
        return 2;
    }
    s_rec_t st;
    memset(&st, 0, sizeof st);
    char err[300], source[PL_CAP_NAME_MAX];
    snprintf(source, sizeof source, "parleyd tap %s", endpoint);
    if (rp_writer_open(&st.w, path, source, err, sizeof err) != 0) {
        fprintf(stderr, "parley-replay record: %s\n", err);
        zmq_close(sub);
        zmq_ctx_term(zctx);
        return 2;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal; /* no SA_RESTART: zmq_poll returns EINTR */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    if (!quiet)
        fprintf(stderr, "parley-replay record: waiting for the tap at %s\n", endpoint);

    int64_t start = pl_wall_us(), deadline = duration > 0 ? start + (int64_t) (duration * 1e6) : 0;
    bool welcomed = false, failed = false;
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    while (!s_stop && !failed && (!deadline || pl_wall_us() < deadline)) {
        zmq_pollitem_t item = {.socket = sub, .events = ZMQ_POLLIN};
        if (zmq_poll(&item, 1, S_POLL_MS) <= 0)
            continue;
        /* Everything waiting, then one flush. */
        while (!failed && zmq_msg_recv(&msg, sub, ZMQ_DONTWAIT) >= 0) {
            if (s_welcome(&msg)) {
                if (!welcomed && !quiet)
                    fprintf(stderr, "parley-replay record: recording %s to %s (Ctrl-C stops)\n", endpoint, path);
                welcomed = true;
                continue;
            }
            failed = s_take(&st, zmq_msg_data(&msg), zmq_msg_size(&msg)) != 0;
        }
        if (fflush(st.w.f) != 0 && !st.werr)
            st.werr = errno;
        failed = st.werr != 0;
    }
    /* What had already arrived when we were told to stop is kept too. */
    while (!failed && zmq_msg_recv(&msg, sub, ZMQ_DONTWAIT) >= 0)
        if (!s_welcome(&msg))
            failed = s_take(&st, zmq_msg_data(&msg), zmq_msg_size(&msg)) != 0;
    zmq_msg_close(&msg);
    zmq_close(sub);
    zmq_ctx_term(zctx);
    uint64_t written = st.w.records;
    if (rp_writer_close(&st.w) != 0 && !st.werr)
        st.werr = errno;
    if (st.werr) {
        fprintf(stderr, "parley-replay record: writing %s failed: %s (%llu records written)\n", path,
                strerror(st.werr), (unsigned long long) written);
        return 2;
    }
    if (!quiet) {
        fprintf(stderr,
                "parley-replay record: %llu records (%llu connections opened, %llu frames) in %.1f s to %s; "
                "lost %llu%s\n",
                (unsigned long long) st.records, (unsigned long long) st.opens, (unsigned long long) st.frames,
                (double) (pl_wall_us() - start) / 1e6, path, (unsigned long long) st.lost,
                st.lost ? " (the tap dropped them: see --tap-hwm)" : "");
        if (st.bad)
            fprintf(stderr, "parley-replay record: %llu messages were not capture records and were skipped\n",
                    (unsigned long long) st.bad);
        if (!welcomed)
            fprintf(stderr,
                    "parley-replay record: warning: never reached the tap at %s (is parleyd running "
                    "with --tap %s?)\n",
                    endpoint, endpoint);
    }
    return 0;
}
