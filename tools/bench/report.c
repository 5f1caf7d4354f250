/*  report — what the parent does with the workers' numbers: merging,
    the server's /proc figures, the verdict, the human summary and the
    JSON object. */
#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

/* ------------------------------------------------------------- errors -- */

void
pb_errs_add(pb_errs_t *e, uint64_t count, const char *fmt, ...)
{
    char text[PB_ERR_TEXT];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    for (unsigned i = 0; i < e->n; i++)
        if (strcmp(e->e[i].text, text) == 0) {
            e->e[i].count += count;
            return;
        }
    if (e->n == PB_ERRS_MAX) {
        e->other += count;
        return;
    }
    snprintf(e->e[e->n].text, sizeof e->e[e->n].text, "%s", text);
    e->e[e->n++].count = count;
}

void
pb_errs_merge(pb_errs_t *into, const pb_errs_t *from)
{
    for (unsigned i = 0; i < from->n; i++)
        pb_errs_add(into, from->e[i].count, "%s", from->e[i].text);
    into->other += from->other;
}

uint64_t
pb_errs_total(const pb_errs_t *e)
{
    uint64_t n = e->other;
    for (unsigned i = 0; i < e->n; i++)
        n += e->e[i].count;
    return n;
}

/* ------------------------------------------------------------- counts -- */

void
pb_counts_merge(pb_counts_t *a, const pb_counts_t *b)
{
#define S_SUM(f) a->f += b->f
    S_SUM(planned);
    S_SUM(opened);
    S_SUM(refused);
    S_SUM(failed);
    S_SUM(dropped);
    S_SUM(open_now);
    S_SUM(pings);
    S_SUM(pongs);
    S_SUM(sessions_ready);
    S_SUM(frames_sent);
    S_SUM(frames_total);
    S_SUM(frames_window);
    S_SUM(chunks_window);
    S_SUM(received);
    S_SUM(expected);
    S_SUM(chunks_received);
    S_SUM(chunks_expected);
    S_SUM(lost);
    S_SUM(coalesced);
    S_SUM(turns_sent);
    S_SUM(turns_completed);
    S_SUM(turns_behind);
    S_SUM(turns_refused);
    S_SUM(turns_unfinished);
    S_SUM(early);
    S_SUM(cpu_s);
#undef S_SUM
    if (b->early_us < a->early_us)
        a->early_us = b->early_us;
    if (b->first_connect_us && (!a->first_connect_us || b->first_connect_us < a->first_connect_us))
        a->first_connect_us = b->first_connect_us;
    if (b->last_connected_us > a->last_connected_us)
        a->last_connected_us = b->last_connected_us;
}

const char *
pb_phase_name(int phase)
{
    switch (phase) {
    case PB_PH_OPEN:
        return "open";
    case PB_PH_RUN:
        return "run";
    case PB_PH_PING:
        return "ping";
    case PB_PH_CLOSE:
        return "close";
    case PB_PH_DONE:
        return "done";
    default:
        return "?";
    }
}

/* -------------------------------------------------------------- /proc -- */

int
pb_proc_read(long pid, pb_proc_t *out)
{
    char path[64], line[512];
    out->rss_kib = -1;
    out->cpu_s = -1;
    snprintf(path, sizeof path, "/proc/%ld/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            out->rss_kib = strtol(line + 6, NULL, 10);
    fclose(f);
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(line, 1, sizeof line - 1, f);
    fclose(f);
    line[n] = '\0';
    /* Fields after the command's closing parenthesis: state is field 3,
       utime 14 and stime 15 (proc(5)), in clock ticks. */
    char *p = strrchr(line, ')');
    if (!p)
        return -1;
    unsigned long ut = 0, st = 0;
    if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    out->cpu_s = (double) (ut + st) / (double) sysconf(_SC_CLK_TCK);
    return out->rss_kib < 0 ? -1 : 0;
}

/* ------------------------------------------------------------ verdict -- */

static bool
s_turned(const pb_opts_t *o)
{
    return o->scenario != PB_CONNECT;
}

static void s_add(char *why, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void
s_add(char *why, size_t size, const char *fmt, ...)
{
    size_t n = strlen(why);
    if (n + 3 >= size)
        return;
    if (n) {
        strcat(why, "; ");
        n += 2;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why + n, size - n, fmt, ap);
    va_end(ap);
}

bool
pb_result_ok(const pb_result_t *r, char *why, size_t size)
{
    const pb_counts_t *c = &r->c;
    why[0] = '\0';
    if (r->timed_out)
        s_add(why, size, "the run timed out (--timeout)");
    if (c->refused)
        s_add(why, size, "%llu connections were refused by the server (503 BUSY)", (unsigned long long) c->refused);
    if (c->failed)
        s_add(why, size, "%llu connections failed", (unsigned long long) c->failed);
    if (c->dropped)
        s_add(why, size, "%llu connections were dropped before the bench closed them", (unsigned long long) c->dropped);
    if (c->pongs < c->pings)
        s_add(why, size, "%llu connections did not answer the final ping", (unsigned long long) (c->pings - c->pongs));
    if (c->opened + c->refused + c->failed < c->planned)
        s_add(why, size, "%llu connections never settled",
              (unsigned long long) (c->planned - c->opened - c->refused - c->failed));
    if (c->lost)
        s_add(why, size, "%llu frames were lost (gaps in seq)", (unsigned long long) c->lost);
    if (s_turned(r->o) && c->turns_unfinished)
        s_add(why, size, "%llu measured turns did not complete before the drain ended (--drain %g s)",
              (unsigned long long) c->turns_unfinished, r->o->drain);
    else if (s_turned(r->o) && c->turns_completed + c->turns_refused < c->turns_sent)
        s_add(why, size, "%llu measured turns did not complete",
              (unsigned long long) (c->turns_sent - c->turns_completed - c->turns_refused));
    /* the unfinished turns are in both sides: what they got, what they would have had */
    const char *cut = c->turns_unfinished ? ", unfinished turns included" : "";
    if (s_turned(r->o) && c->received + c->coalesced != c->expected)
        s_add(why, size, "received %llu frames (+%llu coalesced) of measured turns, expected %llu%s",
              (unsigned long long) c->received, (unsigned long long) c->coalesced, (unsigned long long) c->expected,
              cut);
    if (s_turned(r->o) && c->chunks_received != c->chunks_expected)
        s_add(why, size, "received %llu chunks of measured turns, expected %llu%s",
              (unsigned long long) c->chunks_received, (unsigned long long) c->chunks_expected, cut);
    uint64_t errors = pb_errs_total(&r->errs);
    uint64_t counted = c->refused + c->failed + c->dropped; /* already said */
    if (errors > counted)
        s_add(why, size, "%llu other errors (listed)", (unsigned long long) (errors - counted));
    return why[0] == '\0';
}

/* ---------------------------------------------------------- summaries -- */

static double
s_conn_rate(const pb_counts_t *c)
{
    int64_t d = c->last_connected_us - c->first_connect_us;
    return c->opened && d > 0 ? (double) c->opened * 1e6 / (double) d : 0;
}

static double
s_duration(const pb_result_t *r)
{
    if (r->o->scenario == PB_CONNECT)
        return r->c.last_connected_us > r->c.first_connect_us
                   ? (double) (r->c.last_connected_us - r->c.first_connect_us) / 1e6
                   : 0;
    return r->window_s;
}

static long
s_rss_per_conn(const pb_result_t *r)
{
    if (r->before.rss_kib < 0 || r->after.rss_kib < 0 || !r->c.opened)
        return 0;
    return (long) ((double) (r->after.rss_kib - r->before.rss_kib) * 1024.0 / (double) r->c.opened);
}

static void
s_ms(char *buf, size_t size, int64_t us)
{
    if (us < 1000)
        snprintf(buf, size, "%lld us", (long long) us);
    else
        snprintf(buf, size, "%.2f ms", (double) us / 1000.0);
}

static void
s_hist_line(FILE *out, const char *name, const pb_hist_t *h)
{
    char a[32], b[32], c[32], d[32];
    if (!h->count) {
        fprintf(out, "%-12s no samples\n", name);
        return;
    }
    s_ms(a, sizeof a, pb_hist_quantile(h, 0.50));
    s_ms(b, sizeof b, pb_hist_quantile(h, 0.99));
    s_ms(c, sizeof c, pb_hist_quantile(h, 0.999));
    s_ms(d, sizeof d, h->max);
    fprintf(out, "%-12s p50 %s, p99 %s, p99.9 %s, max %s (%llu samples)\n", name, a, b, c, d,
            (unsigned long long) h->count);
}

void
pb_report_human(const pb_result_t *r, FILE *out)
{
    const pb_opts_t *o = r->o;
    const pb_counts_t *c = &r->c;
    switch (o->scenario) {
    case PB_CONNECT:
        fprintf(out, "parley-bench connect: %ld connections to %s, %ld process%s\n", o->connections, o->url, o->procs,
                o->procs == 1 ? "" : "es");
        break;
    case PB_FANOUT:
        fprintf(out,
                "parley-bench fanout: %ld sessions x %ld members, %g chats/s per session of %ld words, %g s measured "
                "after %g s warmup, %ld process%s\n",
                o->sessions, o->members, o->chat_rate, o->words, o->duration, o->warmup, o->procs,
                o->procs == 1 ? "" : "es");
        break;
    case PB_STREAM:
        fprintf(out,
                "parley-bench stream: %ld chats of %ld chunks (interval %g ms), %ld idle, %g s measured after %g s "
                "warmup, %ld process%s\n",
                o->chats, o->chunks, o->chunk_interval_ms, o->idle, o->duration, o->warmup, o->procs,
                o->procs == 1 ? "" : "es");
        break;
    default:
        break;
    }
    fprintf(out, "%-12s %llu opened of %llu, %llu failed, %llu dropped; %.0f connections/s\n",
            "connections:", (unsigned long long) c->opened, (unsigned long long) c->planned,
            (unsigned long long) c->failed, (unsigned long long) c->dropped, s_conn_rate(c));
    if (c->refused)
        fprintf(out, "%-12s refused by the server (503 BUSY): %llu\n", "", (unsigned long long) c->refused);
    fprintf(out, "%-12s %llu of %llu answered the final ping\n", "", (unsigned long long) c->pongs,
            (unsigned long long) c->pings);
    if (s_turned(o)) {
        fprintf(out,
                "%-12s %llu sessions ready; %llu measured turns sent, %llu completed, %llu unfinished, %llu refused, "
                "%llu behind\n",
                "turns:", (unsigned long long) c->sessions_ready, (unsigned long long) c->turns_sent,
                (unsigned long long) c->turns_completed, (unsigned long long) c->turns_unfinished,
                (unsigned long long) c->turns_refused, (unsigned long long) c->turns_behind);
        fprintf(out, "%-12s %llu sent; of measured turns %llu received, %llu expected, %llu lost, %llu coalesced\n",
                "frames:", (unsigned long long) c->frames_sent, (unsigned long long) c->received,
                (unsigned long long) c->expected, (unsigned long long) c->lost, (unsigned long long) c->coalesced);
        fprintf(out, "%-12s of measured turns %llu received, %llu expected\n",
                "chunks:", (unsigned long long) c->chunks_received, (unsigned long long) c->chunks_expected);
        double d = s_duration(r);
        fprintf(out, "%-12s %.0f frames/s, %.0f chunks/s (received in the %.1f s window)\n",
                "rates:", d > 0 ? (double) c->frames_window / d : 0, d > 0 ? (double) c->chunks_window / d : 0, d);
        s_hist_line(out, o->scenario == PB_STREAM ? "lateness:" : "latency:", &r->lat);
        s_hist_line(out, "ttfc:", &r->ttfc);
    } else {
        fprintf(out, "%-12s %.3f s from the first connect to the last `connected`\n", "", s_duration(r));
    }
    if (o->pid) {
        fprintf(out, "%-12s pid %ld: RSS %ld -> %ld KiB", "server:", o->pid, r->before.rss_kib, r->after.rss_kib);
        if (c->opened)
            fprintf(out, " (%ld bytes per connection)", s_rss_per_conn(r));
        fprintf(out, ", CPU %.2f s\n", r->after.cpu_s - r->before.cpu_s);
    }
    fprintf(out, "%-12s CPU %.2f s in %ld worker process%s\n", "bench:", r->bench_cpu_s, o->procs,
            o->procs == 1 ? "" : "es");
    if (r->errs.n) {
        fprintf(out, "errors:\n");
        for (unsigned i = 0; i < r->errs.n; i++)
            fprintf(out, "  %s: %llu\n", r->errs.e[i].text, (unsigned long long) r->errs.e[i].count);
        if (r->errs.other)
            fprintf(out, "  (others): %llu\n", (unsigned long long) r->errs.other);
    }
    char why[1024];
    if (pb_result_ok(r, why, sizeof why))
        fprintf(out, "result:      OK\n");
    else
        fprintf(out, "result:      FAILED: %s\n", why);
}

static void
s_hist_json(cJSON *obj, const char *name, const pb_hist_t *h, bool measured)
{
    if (!measured) {
        cJSON_AddNullToObject(obj, name);
        return;
    }
    cJSON *j = cJSON_AddObjectToObject(obj, name);
    cJSON_AddNumberToObject(j, "p50", (double) pb_hist_quantile(h, 0.50));
    cJSON_AddNumberToObject(j, "p99", (double) pb_hist_quantile(h, 0.99));
    cJSON_AddNumberToObject(j, "p999", (double) pb_hist_quantile(h, 0.999));
    cJSON_AddNumberToObject(j, "max", (double) h->max);
    cJSON_AddNumberToObject(j, "count", (double) h->count);
}

void
pb_report_json(const pb_result_t *r, FILE *out)
{
    const pb_opts_t *o = r->o;
    const pb_counts_t *c = &r->c;
    bool turned = s_turned(o);
    double d = s_duration(r);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "scenario", pb_scenario_name(o->scenario));
    pb_opts_json(o, cJSON_AddObjectToObject(j, "config"));
    cJSON_AddNumberToObject(j, "duration_s", d);

    cJSON *k = cJSON_AddObjectToObject(j, "connections");
    cJSON_AddNumberToObject(k, "planned", (double) c->planned);
    cJSON_AddNumberToObject(k, "opened", (double) c->opened);
    cJSON_AddNumberToObject(k, "refused", (double) c->refused);
    cJSON_AddNumberToObject(k, "failed", (double) c->failed);
    cJSON_AddNumberToObject(k, "dropped", (double) c->dropped);
    cJSON_AddNumberToObject(k, "pinged", (double) c->pings);
    cJSON_AddNumberToObject(k, "ponged", (double) c->pongs);

    k = cJSON_AddObjectToObject(j, "frames");
    cJSON_AddNumberToObject(k, "sent", (double) c->frames_sent);
    cJSON_AddNumberToObject(k, "total_received", (double) c->frames_total);
    if (turned) {
        cJSON_AddNumberToObject(k, "received", (double) c->received);
        cJSON_AddNumberToObject(k, "expected", (double) c->expected);
        cJSON_AddNumberToObject(k, "lost", (double) c->lost);
        cJSON_AddNumberToObject(k, "coalesced", (double) c->coalesced);
        cJSON_AddNumberToObject(k, "in_window", (double) c->frames_window);
        cJSON_AddNumberToObject(k, "chunks_received", (double) c->chunks_received);
        cJSON_AddNumberToObject(k, "chunks_expected", (double) c->chunks_expected);
        k = cJSON_AddObjectToObject(j, "turns");
        cJSON_AddNumberToObject(k, "sessions_ready", (double) c->sessions_ready);
        cJSON_AddNumberToObject(k, "sent", (double) c->turns_sent);
        cJSON_AddNumberToObject(k, "completed", (double) c->turns_completed);
        cJSON_AddNumberToObject(k, "unfinished", (double) c->turns_unfinished);
        cJSON_AddNumberToObject(k, "refused", (double) c->turns_refused);
        cJSON_AddNumberToObject(k, "behind", (double) c->turns_behind);
    } else {
        cJSON_AddNullToObject(j, "turns");
    }

    k = cJSON_AddObjectToObject(j, "rates");
    if (turned && d > 0) {
        cJSON_AddNumberToObject(k, "frames_per_s", (double) c->frames_window / d);
        cJSON_AddNumberToObject(k, "chunks_per_s", (double) c->chunks_window / d);
    } else {
        cJSON_AddNullToObject(k, "frames_per_s");
        cJSON_AddNullToObject(k, "chunks_per_s");
    }
    cJSON_AddNumberToObject(k, "connections_per_s", s_conn_rate(c));
    s_hist_json(j, "latency_us", &r->lat, turned);
    s_hist_json(j, "ttfc_us", &r->ttfc, turned);

    if (o->pid) {
        k = cJSON_AddObjectToObject(j, "server");
        cJSON_AddNumberToObject(k, "pid", (double) o->pid);
        cJSON_AddNumberToObject(k, "rss_before_kib", (double) r->before.rss_kib);
        cJSON_AddNumberToObject(k, "rss_after_kib", (double) r->after.rss_kib);
        cJSON_AddNumberToObject(k, "rss_per_conn_bytes", (double) s_rss_per_conn(r));
        cJSON_AddNumberToObject(k, "cpu_s", r->after.cpu_s - r->before.cpu_s);
    } else {
        cJSON_AddNullToObject(j, "server");
    }
    k = cJSON_AddObjectToObject(j, "bench");
    cJSON_AddNumberToObject(k, "procs", (double) o->procs);
    cJSON_AddNumberToObject(k, "cpu_s", r->bench_cpu_s);

    cJSON *errs = cJSON_AddArrayToObject(j, "errors");
    char line[PB_ERR_TEXT + 32];
    for (unsigned i = 0; i < r->errs.n; i++) {
        snprintf(line, sizeof line, "%s: %llu", r->errs.e[i].text, (unsigned long long) r->errs.e[i].count);
        cJSON_AddItemToArray(errs, cJSON_CreateString(line));
    }
    if (r->errs.other) {
        snprintf(line, sizeof line, "(others): %llu", (unsigned long long) r->errs.other);
        cJSON_AddItemToArray(errs, cJSON_CreateString(line));
    }
    char why[1024];
    bool ok = pb_result_ok(r, why, sizeof why);
    cJSON_AddBoolToObject(j, "ok", ok);
    if (ok)
        cJSON_AddNullToObject(j, "failed");
    else
        cJSON_AddStringToObject(j, "failed", why);
    char *s = cJSON_PrintUnformatted(j);
    if (s)
        fprintf(out, "%s\n", s);
    cJSON_free(s);
    cJSON_Delete(j);
}
