/*  play — the parley-replay play command: options, the URL, the checks
    made before playing (open files, the server there), --out, the summary.
    The --help text is what a user needs to know; the design is in
    play_plan.c (the plan), play_run.c (the runtime) and play_ids.c (id
    rewriting). */
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "play_int.h"

/* Most copies --multiply takes: beyond it a second machine is the tool. */
#define S_MULTIPLY_MAX 1000
/* Descriptors kept aside from the connections: lws's own (the cancel pipe),
   stdio, the capture and --out files. */
#define S_FD_SPARE 64
#define S_TIMEOUT_DEFAULT 10.0
#define S_TIMEOUT_MAX 86400.0

static const char *const s_cmd = "play";

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
           "Ctrl-C (SIGINT) or SIGTERM stops the replay: no further event is sent, the\n"
           "connections are closed (1001), --out keeps everything received so far, and the\n"
           "summary says it was interrupted (exit status 1).\n"
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
s_parse_url(rp_play_t *p, const char *url)
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
s_parse_args(rp_play_t *p, int argc, char **argv)
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
s_check_fds(const rp_play_t *p)
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
s_probe(const rp_play_t *p)
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
s_open_out(rp_play_t *p)
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
s_summary(const rp_play_t *p)
{
    char bs[32], br[32];
    s_bytes(bs, sizeof bs, p->bytes_sent);
    s_bytes(br, sizeof br, p->bytes_received);
    double wall = (double) p->wall_us / 1e6, dur = (double) p->plan.duration_us / 1e6;
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
    if (p->interrupted)
        fprintf(stderr, "  interrupted by %s: %llu event(s) of the plan not sent; connections closed (1001)%s\n",
                p->interrupted == SIGINT ? "SIGINT" : "SIGTERM", (unsigned long long) p->unsent,
                p->out_open ? "; --out keeps what was received" : "");
}

static void
s_play_free(rp_play_t *p)
{
    rp_play_stop(p); /* first: connections it drops are recorded closed in --out */
    if (p->out_open && rp_writer_close(&p->out) != 0)
        fprintf(stderr, "parley-replay play: %s: %s\n", p->out_path, strerror(errno));
    rp_plan_free(&p->plan);
    rp_capture_free(&p->cap);
}

int
rp_play(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return s_help();
    rp_play_t p;
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
    if (rc == 0 && rp_plan_build(&p.plan, &p.cap, err, sizeof err) != 0)
        rc = rp_usage_error(s_cmd, "%s", err);
    if (rc == 0)
        rc = s_probe(&p);
    if (rc == 0 && p.out_path)
        rc = s_open_out(&p);
    if (rc == 0 && rp_play_start(&p) != 0) {
        fprintf(stderr, "parley-replay play: cannot start: out of memory or no lws context\n");
        rc = 2;
    }
    if (rc == 0) {
        rp_play_run(&p);
        s_summary(&p);
        rc = p.failures == 0 && p.connected == (uint64_t) p.multiply * p.cap.nconns && !p.interrupted ? 0 : 1;
    }
    s_play_free(&p);
    return rc;
}
