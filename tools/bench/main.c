/*  parley-bench — load and latency for parleyd's session protocol.

    parley-bench [common options] SCENARIO [scenario options]

    The parent: parses the options, reads the server's /proc figures,
    forks the workers (worker.c) with their slices of the connections,
    moves them through the phases together (OPEN, RUN or --hold, PING,
    CLOSE: every worker must finish one before any starts the next), shows
    the progress line, merges their results and reports (report.c).
    --timeout is the watchdog over all of it. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

/* When RUN starts, after the command goes out: every worker must have it. */
#define S_RUN_LEAD_US 100000
#define S_PROGRESS_TTY_US 250000
#define S_PROGRESS_LOG_US 1000000

typedef struct {
    pid_t pid;
    int cmd_fd, rep_fd; /* -1 once closed */
    int done_phase;     /* the last phase it reported done */
    bool result, dead;
    pb_report_t last; /* its latest report */
} s_child_t;

typedef struct {
    const pb_opts_t *o;
    s_child_t *ch;
    long n;
    int64_t t0, deadline;
    int64_t run_at;     /* when RUN starts; 0 before */
    int phase;          /* what the parent waits for */
    const char *doing;  /* for the progress line */
    int64_t next_print; /* µs */
    uint64_t last_frames;
    int64_t last_print_at;
    bool tty, printed;
    pb_errs_t errs; /* the parent's own (dead workers) */
} s_run_t;

/* ---------------------------------------------------------- the split -- */

static size_t
s_share(long total, long n, long i)
{
    return (size_t) ((long long) total * i / n);
}

static void
s_slice(const pb_opts_t *o, long i, pb_slice_t *s)
{
    long n = o->procs;
    memset(s, 0, sizeof *s);
    s->no = (unsigned) i;
    switch (o->scenario) {
    case PB_CONNECT:
        s->gbase = s_share(o->connections, n, i);
        s->nconns = s_share(o->connections, n, i + 1) - s->gbase;
        s->conn_rate = o->conn_rate * (double) s->nconns / (double) o->connections;
        break;
    case PB_FANOUT:
        s->s0 = s_share(o->sessions, n, i);
        s->nsess = s_share(o->sessions, n, i + 1) - s->s0;
        s->gbase = s->s0 * (size_t) o->members;
        s->nconns = s->nsess * (size_t) o->members;
        break;
    case PB_STREAM:
        s->s0 = s->gbase = s_share(o->chats, n, i);
        s->nsess = s_share(o->chats, n, i + 1) - s->s0;
        s->idle_gbase = (size_t) o->chats + s_share(o->idle, n, i);
        s->nidle = (size_t) o->chats + s_share(o->idle, n, i + 1) - s->idle_gbase;
        s->nconns = s->nsess + s->nidle;
        break;
    default:
        break;
    }
}

static int
s_fork(s_run_t *r)
{
    fflush(stdout);
    fflush(stderr);
    for (long i = 0; i < r->n; i++) {
        int cmd[2], rep[2];
        if (pipe(cmd) != 0 || pipe(rep) != 0) {
            fprintf(stderr, "parley-bench: pipe: %s\n", strerror(errno));
            return -1;
        }
        pid_t pid = fork();
        if (pid < 0) {
            fprintf(stderr, "parley-bench: fork: %s\n", strerror(errno));
            return -1;
        }
        if (pid == 0) {
            for (long j = 0; j < i; j++) {
                close(r->ch[j].cmd_fd);
                close(r->ch[j].rep_fd);
            }
            close(cmd[1]);
            close(rep[0]);
            pb_slice_t sl;
            s_slice(r->o, i, &sl);
            _exit(pb_worker_main(r->o, &sl, cmd[0], rep[1]));
        }
        close(cmd[0]);
        close(rep[1]);
        r->ch[i] = (s_child_t){.pid = pid, .cmd_fd = cmd[1], .rep_fd = rep[0]};
    }
    return 0;
}

static void
s_kill_all(s_run_t *r)
{
    for (long i = 0; i < r->n; i++)
        if (r->ch[i].pid > 0 && !r->ch[i].dead)
            kill(r->ch[i].pid, SIGKILL);
    for (long i = 0; i < r->n; i++)
        if (r->ch[i].pid > 0)
            waitpid(r->ch[i].pid, NULL, 0);
}

/* ----------------------------------------------------------- progress -- */

static void
s_merge(const s_run_t *r, pb_counts_t *c, pb_hist_t *lat)
{
    memset(c, 0, sizeof *c);
    if (lat)
        memset(lat, 0, sizeof *lat);
    for (long i = 0; i < r->n; i++) {
        pb_counts_merge(c, &r->ch[i].last.c);
        if (lat)
            pb_hist_merge(lat, &r->ch[i].last.lat);
    }
}

static void
s_progress(s_run_t *r, int64_t now, bool last)
{
    if (r->o->quiet || (!last && now < r->next_print))
        return;
    r->next_print = now + (r->tty ? S_PROGRESS_TTY_US : S_PROGRESS_LOG_US);
    static pb_hist_t lat;
    pb_counts_t c;
    s_merge(r, &c, &lat);
    double dt = (double) (now - r->last_print_at) / 1e6;
    double fps = r->last_print_at && dt > 0 ? (double) (c.frames_total - r->last_frames) / dt : 0;
    r->last_frames = c.frames_total;
    r->last_print_at = now;
    const char *doing = r->doing;
    if (r->run_at && strcmp(doing, "running") == 0) {
        int64_t measure = r->run_at + (int64_t) (r->o->warmup * 1e6);
        doing = now < measure ? "warmup" : now < measure + (int64_t) (r->o->duration * 1e6) ? "measuring" : "draining";
    }
    char p99[32] = "-";
    if (lat.count)
        snprintf(p99, sizeof p99, "%.2f ms", (double) pb_hist_quantile(&lat, 0.99) / 1000.0);
    fprintf(stderr, "%s%-8s %-10s %6.1f s  open %llu/%llu  %.0f frames/s  p99 %s%s", r->tty ? "\r" : "",
            pb_scenario_name(r->o->scenario), doing, (double) (now - r->t0) / 1e6, (unsigned long long) c.open_now,
            (unsigned long long) pb_opts_connections(r->o), fps, p99, r->tty ? "\033[K" : "\n");
    if (last && r->tty)
        fputc('\n', stderr);
    fflush(stderr);
    r->printed = true;
}

/* --------------------------------------------------------- the phases -- */

static int
s_read_report(s_child_t *ch)
{
    char *p = (char *) &ch->last;
    size_t got = 0;
    while (got < sizeof ch->last) {
        ssize_t n = read(ch->rep_fd, p + got, sizeof ch->last - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        got += (size_t) n;
    }
    return 0;
}

static void
s_child_gone(s_run_t *r, long i)
{
    s_child_t *ch = &r->ch[i];
    close(ch->rep_fd);
    ch->rep_fd = -1;
    if (ch->result)
        return;
    int st = 0;
    waitpid(ch->pid, &st, 0);
    ch->dead = true;
    if (WIFSIGNALED(st))
        pb_errs_add(&r->errs, 1, "a worker process died (signal %d)", WTERMSIG(st));
    else
        pb_errs_add(&r->errs, 1, "a worker process exited early (status %d)", WEXITSTATUS(st));
}

static bool
s_all_done(const s_run_t *r, int phase)
{
    for (long i = 0; i < r->n; i++)
        if (!r->ch[i].dead && !r->ch[i].result && r->ch[i].done_phase < phase)
            return false;
    return true;
}

/* Reads reports until every worker has finished `phase` (or, with
   `until` set, until that time). Returns 0, or 2 after a fatal report or
   the watchdog (already said on stderr). */
static int
s_wait(s_run_t *r, int phase, int64_t until)
{
    struct pollfd pfd[64];
    for (;;) {
        int64_t now = pb_now_us();
        s_progress(r, now, false);
        if (until ? now >= until : s_all_done(r, phase))
            return 0;
        if (now >= r->deadline) {
            s_progress(r, now, true);
            fprintf(stderr, "parley-bench: timed out after %g s (--timeout) while in phase %s; stopping the workers\n",
                    r->o->timeout, r->doing);
            return 2;
        }
        long n = 0;
        long idx[64];
        for (long i = 0; i < r->n; i++)
            if (r->ch[i].rep_fd >= 0) {
                pfd[n] = (struct pollfd){.fd = r->ch[i].rep_fd, .events = POLLIN};
                idx[n++] = i;
            }
        int64_t wake = r->deadline;
        if (until && until < wake)
            wake = until;
        if (!r->o->quiet && r->next_print < wake)
            wake = r->next_print;
        int ms = (int) ((wake - now + 999) / 1000);
        if (n == 0) {
            if (!until)
                return 0; /* nobody left to wait for */
            usleep((useconds_t) (ms > 0 ? ms : 1) * 1000);
            continue;
        }
        int got = poll(pfd, (nfds_t) n, ms > 0 ? ms : 0);
        if (got < 0 && errno != EINTR)
            return 2;
        for (long k = 0; got > 0 && k < n; k++) {
            if (!(pfd[k].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            s_child_t *ch = &r->ch[idx[k]];
            if (s_read_report(ch) != 0) {
                s_child_gone(r, idx[k]);
                continue;
            }
            switch (ch->last.msg) {
            case PB_MSG_PHASE_DONE:
                ch->done_phase = (int) ch->last.phase;
                break;
            case PB_MSG_RESULT:
                ch->result = true;
                ch->done_phase = PB_PH_DONE;
                break;
            case PB_MSG_FATAL:
                s_progress(r, pb_now_us(), true);
                fprintf(stderr, "parley-bench: %s\n", ch->last.fatal);
                return 2;
            default:
                break;
            }
        }
    }
}

static void
s_command(s_run_t *r, int phase, int64_t t_start)
{
    pb_cmd_t cmd = {.phase = (uint32_t) phase, .t_start_us = t_start};
    for (long i = 0; i < r->n; i++) {
        s_child_t *ch = &r->ch[i];
        if (ch->dead || ch->result)
            continue;
        if (write(ch->cmd_fd, &cmd, sizeof cmd) != (ssize_t) sizeof cmd)
            pb_errs_add(&r->errs, 1, "a worker process did not take a command");
    }
}

static int
s_phases(s_run_t *r, pb_result_t *res)
{
    const pb_opts_t *o = r->o;
    int rc;
    r->doing = "connecting";
    if ((rc = s_wait(r, PB_PH_OPEN, 0)) != 0)
        return rc;
    pb_counts_t c;
    s_merge(r, &c, NULL);
    if (o->scenario == PB_CONNECT && c.opened) {
        r->doing = "holding";
        if ((rc = s_wait(r, 0, pb_now_us() + (int64_t) (o->hold * 1e6))) != 0)
            return rc;
    } else if (o->scenario != PB_CONNECT) {
        int64_t t_start = pb_now_us() + S_RUN_LEAD_US;
        r->run_at = t_start;
        res->window_s = o->duration;
        r->doing = "running";
        s_command(r, PB_PH_RUN, t_start);
        if ((rc = s_wait(r, PB_PH_RUN, 0)) != 0)
            return rc;
    }
    r->doing = "pinging";
    s_command(r, PB_PH_PING, 0);
    if ((rc = s_wait(r, PB_PH_PING, 0)) != 0)
        return rc;
    if (o->pid && pb_proc_read(o->pid, &res->after) != 0)
        pb_errs_add(&r->errs, 1, "the server (--pid) could not be read at the end: it is gone");
    r->doing = "closing";
    s_command(r, PB_PH_CLOSE, 0);
    return s_wait(r, PB_PH_DONE, 0);
}

int
main(int argc, char **argv)
{
    static pb_opts_t o;
    int rc = pb_opts_parse(&o, argc, argv);
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    signal(SIGPIPE, SIG_IGN);

    static pb_result_t res;
    res.o = &o;
    res.before.rss_kib = res.after.rss_kib = -1;
    if (o.pid && pb_proc_read(o.pid, &res.before) != 0) {
        fprintf(stderr, "parley-bench: --pid %ld: cannot read /proc/%ld/status and stat: is it running?\n", o.pid,
                o.pid);
        return 2;
    }
    s_run_t r = {.o = &o, .n = o.procs, .tty = isatty(2) == 1};
    r.ch = calloc((size_t) o.procs, sizeof *r.ch);
    if (!r.ch)
        return 2;
    r.t0 = pb_now_us();
    r.deadline = r.t0 + (int64_t) (o.timeout * 1e6);
    if (s_fork(&r) != 0) {
        s_kill_all(&r);
        return 2;
    }
    rc = s_phases(&r, &res);
    if (rc != 0) {
        s_kill_all(&r);
        free(r.ch);
        return rc;
    }
    s_progress(&r, pb_now_us(), true);
    for (long i = 0; i < r.n; i++) {
        if (r.ch[i].rep_fd >= 0)
            close(r.ch[i].rep_fd);
        close(r.ch[i].cmd_fd);
        if (!r.ch[i].dead)
            waitpid(r.ch[i].pid, NULL, 0);
        pb_counts_merge(&res.c, &r.ch[i].last.c);
        pb_errs_merge(&res.errs, &r.ch[i].last.errs);
        pb_hist_merge(&res.lat, &r.ch[i].last.lat);
        pb_hist_merge(&res.ttfc, &r.ch[i].last.ttfc);
    }
    pb_errs_merge(&res.errs, &r.errs);
    res.bench_cpu_s = res.c.cpu_s;
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        res.bench_cpu_s += (double) ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double) ru.ru_stime.tv_sec +
                           ru.ru_stime.tv_usec / 1e6;
    if (o.json)
        pb_report_json(&res, stdout);
    else
        pb_report_human(&res, stdout);
    free(r.ch);
    char why[1024];
    return pb_result_ok(&res, why, sizeof why) ? 0 : 1;
}
