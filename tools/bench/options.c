/*  options — parley-bench's options: one table (name, scenarios, kind,
    default, range, help) from which parsing, --help and the JSON "config"
    object all come. Common options may stand before or after the
    scenario's name. */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

/* Connections one worker process may hold: the process's open-file cap is
   20,000 and lws, stdio and the pipes need a few. */
#define S_CONNS_PER_PROC_MAX 19500
/* --procs default: this many connections per worker, well below the cap. */
#define S_CONNS_PER_PROC_DEFAULT 9000
#define S_PROCS_MAX 64

typedef enum { S_INT, S_DBL, S_FLAG, S_STR } s_kind_t;

#define S_COMMON 0u
#define S_C (1u << PB_CONNECT)
#define S_F (1u << PB_FANOUT)
#define S_S (1u << PB_STREAM)

typedef struct {
    const char *name;
    unsigned scen; /* S_COMMON, or the scenarios that take it */
    s_kind_t kind;
    size_t off;
    double def, min, max;
    bool required;
    const char *arg, *help;
} s_opt_t;

#define O(f) offsetof(pb_opts_t, f)

static const s_opt_t s_opts[] = {
    {"--url", S_COMMON, S_STR, O(url), 0, 0, 0, false, "URL",
     "the server's session endpoint (default ws://127.0.0.1:8000/ws)"},
    {"--pid", S_COMMON, S_INT, O(pid), 0, 1, 4194304, false, "PID",
     "the server's process: its RSS and CPU are read from /proc before and after"},
    {"--json", S_COMMON, S_FLAG, O(json), 0, 0, 1, false, NULL,
     "print one JSON object on stdout instead of the summary"},
    {"--quiet", S_COMMON, S_FLAG, O(quiet), 0, 0, 1, false, NULL, "no progress line on stderr"},
    {"--procs", S_COMMON, S_INT, O(procs), 0, 1, S_PROCS_MAX, false, "N",
     "worker processes (default: one per 9000 connections, rounded up)"},
    {"--per-address", S_COMMON, S_INT, O(per_address), 1000, 1, 60000, false, "N",
     "connections per source address (127.0.0.1, .2, ...; parleyd's --max-per-address default)"},
    {"--timeout", S_COMMON, S_DBL, O(timeout), 0, 1, 86400, false, "S",
     "stop the whole run after S seconds, exit 2 (default: the scenario's time, drain included, + 120)"},

    {"--connections", S_C, S_INT, O(connections), 0, 1, 1000000, true, "N", "WebSockets to open"},
    {"--rate", S_C, S_DBL, O(conn_rate), 0, 0, 1e7, false, "R",
     "connections opened per second (0: as fast as possible)"},
    {"--hold", S_C, S_DBL, O(hold), 2, 0, 86400, false, "S", "seconds to hold them idle before the final ping"},

    {"--sessions", S_F, S_INT, O(sessions), 0, 1, 1000000, true, "S", "sessions"},
    {"--members", S_F, S_INT, O(members), 0, 1, S_CONNS_PER_PROC_MAX, true, "M",
     "connections per session; member 0 creates it and chats"},
    {"--rate", S_F, S_DBL, O(chat_rate), 1, 0.001, 10000, false, "R", "chats per second per session (open loop)"},
    {"--words", S_F, S_INT, O(words), 20, 1, 4000, false, "W", "words per chat message"},

    {"--chats", S_S, S_INT, O(chats), 0, 1, 1000000, true, "C", "connections streaming, each in a session of its own"},
    {"--chunks", S_S, S_INT, O(chunks), 50, 1, 4000, false, "K", "chunks per answer (max_tokens and words)"},
    {"--chunk-interval-ms", S_S, S_DBL, O(chunk_interval_ms), 0, 0, 60000, false, "I",
     "the server's chunk interval (its --echo-delay-ms): subtracted from chunk latency"},
    {"--idle", S_S, S_INT, O(idle), 0, 0, 1000000, false, "N", "extra idle connections, open through the run"},

    {"--duration", S_F | S_S, S_DBL, O(duration), 10, 0.1, 86400, false, "D", "seconds measured, after the warmup"},
    {"--warmup", S_F | S_S, S_DBL, O(warmup), 1, 0, 3600, false, "S", "seconds of sending before measuring"},
    {"--drain", S_F | S_S, S_DBL, O(drain), 10, 0, 3600, false, "S",
     "seconds after the window for answers in flight (stream: + K x I); a turn unfinished then fails"},
};
#define S_NOPTS (sizeof s_opts / sizeof *s_opts)

static const struct {
    const char *name, *what;
} s_scen[PB_NSCENARIOS] = {
    [PB_CONNECT] = {"connect", "open N connections, hold them, ping each: connections/s, server RSS per connection"},
    [PB_FANOUT] = {"fanout", "S sessions of M members, one chatting at R/s: frames/s, chunk latency to every member"},
    [PB_STREAM] = {"stream", "C sessions streaming answers in a closed loop: chunks/s, time to first chunk, lateness"},
};

const char *
pb_scenario_name(pb_scenario_t s)
{
    return s < PB_NSCENARIOS ? s_scen[s].name : "?";
}

long
pb_opts_connections(const pb_opts_t *o)
{
    switch (o->scenario) {
    case PB_CONNECT:
        return o->connections;
    case PB_FANOUT:
        return o->sessions * o->members;
    case PB_STREAM:
        return o->chats + o->idle;
    default:
        return 0;
    }
}

static int s_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int
s_usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "parley-bench: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n(parley-bench --help, parley-bench SCENARIO --help)\n");
    va_end(ap);
    return -1;
}

static void
s_help_opts(unsigned scen, FILE *out)
{
    for (size_t i = 0; i < S_NOPTS; i++) {
        const s_opt_t *d = &s_opts[i];
        if (scen == S_COMMON ? d->scen != S_COMMON : !(d->scen & scen))
            continue;
        char left[48];
        snprintf(left, sizeof left, "%s%s%s", d->name, d->arg ? " " : "", d->arg ? d->arg : "");
        fprintf(out, "  %-24s %s", left, d->help);
        if (d->required)
            fprintf(out, " (required)");
        else if (d->kind == S_INT && d->def)
            fprintf(out, " [%ld]", (long) d->def);
        else if (d->kind == S_DBL && d->def)
            fprintf(out, " [%g]", d->def);
        fputc('\n', out);
    }
}

static void
s_help(int scen)
{
    if (scen < 0) {
        printf("usage: parley-bench [common options] SCENARIO [scenario options]\n"
               "\n"
               "Load and latency for parleyd's session protocol (/ws). Worker processes\n"
               "open the connections (over 127.0.0.1, 127.0.0.2, ... so that no source\n"
               "address holds more than --per-address), the parent merges their counts\n"
               "and latency histograms and reports.\n"
               "\n"
               "scenarios:\n");
        for (int s = 0; s < PB_NSCENARIOS; s++)
            printf("  %-8s %s\n", s_scen[s].name, s_scen[s].what);
        printf("\ncommon options:\n");
        s_help_opts(S_COMMON, stdout);
        printf("  --help                   this text; parley-bench SCENARIO --help for a scenario's\n"
               "\n"
               "Exit status: 0 every connection opened and survived, no error frame, no frame\n"
               "lost, every expected frame received; 1 otherwise; 2 bad usage or --timeout.\n");
        return;
    }
    printf("usage: parley-bench [common options] %s [options]\n\n%s.\n\noptions:\n", s_scen[scen].name,
           s_scen[scen].what);
    s_help_opts(1u << scen, stdout);
    switch (scen) {
    case PB_CONNECT:
        printf("\nEach connection counts as open when the server's `connected` frame arrives.\n"
               "An upgrade the server refuses (HTTP 503, code BUSY) counts as refused; any\n"
               "other failure as failed. After --hold seconds every connection must answer\n"
               "a ping. Server RSS per connection = (RSS after - RSS before) / opened.\n"
               "\nexample: parley-bench --pid $(pidof parleyd) connect --connections 10000 --rate 2000\n");
        break;
    case PB_FANOUT:
        printf("\nMember 0 creates the session, the others join. Member 0 then sends a chat of\n"
               "W words every 1/R s (open loop; sessions start spread over the first 1/R s).\n"
               "Every member gets every answer: chunk latency = chunk received - chat sent.\n"
               "At most 64 turns of a session may be unfinished; past that a chat is skipped\n"
               "and counted as behind. Turns sent in the warmup are not measured.\n"
               "\nexample: parley-bench fanout --sessions 200 --members 10 --rate 1 --duration 10\n");
        break;
    case PB_STREAM:
        printf("\nEach connection creates a session and chats in a closed loop (the next chat\n"
               "when the answer is complete), asking for exactly K chunks. Chunk latency of\n"
               "chunk i = received - chat sent - (i-1) x I: with I = the server's\n"
               "--echo-delay-ms, how late it is against an ideal server. A chunk more than\n"
               "1 ms early stops the run (I is larger than the server's interval).\n"
               "\nexample: parley-bench stream --chats 1000 --idle 9000 --chunks 50 --chunk-interval-ms 20\n");
        break;
    default:
        break;
    }
}

static int
s_parse_url(pb_opts_t *o)
{
    const char *u = o->url;
    if (strncmp(u, "ws://", 5) != 0)
        return s_usage("--url wants ws://HOST[:PORT][/PATH], not '%s' (wss:// is not supported)", u);
    u += 5;
    const char *hend = u + strcspn(u, ":/");
    if (hend == u || (size_t) (hend - u) >= sizeof o->host)
        return s_usage("--url '%s' has no host", o->url);
    memcpy(o->host, u, (size_t) (hend - u));
    o->host[hend - u] = '\0';
    o->port = 80;
    const char *p = hend;
    if (*p == ':') {
        char *end = NULL;
        long port = strtol(p + 1, &end, 10);
        if (end == p + 1 || port < 1 || port > 65535 || (*end && *end != '/'))
            return s_usage("--url '%s': bad port", o->url);
        o->port = (int) port;
        p = end;
    }
    snprintf(o->path, sizeof o->path, "%s", *p ? p : "/ws");
    if (strcmp(o->host, "localhost") == 0)
        snprintf(o->host, sizeof o->host, "127.0.0.1");
    struct in_addr a;
    o->spread = inet_pton(AF_INET, o->host, &a) == 1 && (ntohl(a.s_addr) >> 24) == 127;
    return 0;
}

static int
s_set(pb_opts_t *o, const s_opt_t *d, const char *v)
{
    char *base = (char *) o + d->off;
    if (d->kind == S_FLAG) {
        *(bool *) base = true;
        return 0;
    }
    if (!v)
        return s_usage("%s wants a value", d->name);
    if (d->kind == S_STR) {
        if (strlen(v) >= sizeof o->url)
            return s_usage("%s: too long", d->name);
        snprintf(base, sizeof o->url, "%s", v);
        return 0;
    }
    char *end = NULL;
    errno = 0;
    double x = *v ? strtod(v, &end) : NAN;
    if (!*v || *end || errno || !isfinite(x) || x < d->min || x > d->max || (d->kind == S_INT && x != floor(x)))
        return s_usage("%s wants %s from %g to %g, not '%s'", d->name, d->kind == S_INT ? "an integer" : "a number",
                       d->min, d->max, v);
    if (d->kind == S_INT)
        *(long *) base = (long) x;
    else
        *(double *) base = x;
    return 0;
}

static const s_opt_t *
s_find(const char *name, int scen)
{
    for (size_t i = 0; i < S_NOPTS; i++) {
        const s_opt_t *d = &s_opts[i];
        if (strcmp(d->name, name) != 0)
            continue;
        if (d->scen == S_COMMON || (scen >= 0 && (d->scen & (1u << scen))))
            return d;
    }
    return NULL;
}

static bool s_given[S_NOPTS];

/* Checks what the table cannot: required options, the split over
   processes, the limits of one process. */
static int
s_check(pb_opts_t *o)
{
    for (size_t i = 0; i < S_NOPTS; i++)
        if (s_opts[i].required && (s_opts[i].scen & (1u << o->scenario)) && !s_given[i])
            return s_usage("%s needs %s", pb_scenario_name(o->scenario), s_opts[i].name);
    long conns = pb_opts_connections(o);
    long units = o->scenario == PB_CONNECT ? o->connections : o->scenario == PB_FANOUT ? o->sessions : o->chats;
    if (!o->procs)
        o->procs = (conns + S_CONNS_PER_PROC_DEFAULT - 1) / S_CONNS_PER_PROC_DEFAULT;
    if (o->procs < 1)
        o->procs = 1;
    if (o->procs > units)
        return s_usage("--procs %ld: there are only %ld %s to share out", o->procs, units,
                       o->scenario == PB_CONNECT  ? "connections"
                       : o->scenario == PB_FANOUT ? "sessions"
                                                  : "chats");
    /* The busiest worker: whole sessions, rounded up. */
    long per = o->scenario == PB_FANOUT ? (o->sessions + o->procs - 1) / o->procs * o->members
                                        : (conns + o->procs - 1) / o->procs + 1;
    if (per > S_CONNS_PER_PROC_MAX)
        return s_usage("%ld connections in one worker process is over its limit (%d: a process may open 20,000 "
                       "files); use more --procs",
                       per, S_CONNS_PER_PROC_MAX);
    if (o->spread && (double) conns / (double) o->per_address > 16000000.0)
        return s_usage("--per-address %ld: %ld connections need more source addresses than 127.0.0.0/8 has",
                       o->per_address, conns);
    if (!o->timeout) {
        double t = o->scenario == PB_CONNECT ? o->hold : o->warmup + o->duration + o->drain;
        if (o->scenario == PB_STREAM)
            t += (double) o->chunks * o->chunk_interval_ms / 1000.0;
        o->timeout = t + 120;
    }
    return 0;
}

int
pb_opts_parse(pb_opts_t *o, int argc, char **argv)
{
    memset(o, 0, sizeof *o);
    memset(s_given, 0, sizeof s_given);
    int scen = -1;
    snprintf(o->url, sizeof o->url, "ws://127.0.0.1:8000/ws");
    for (size_t i = 0; i < S_NOPTS; i++) {
        const s_opt_t *d = &s_opts[i];
        if (d->kind == S_INT)
            *(long *) ((char *) o + d->off) = (long) d->def;
        else if (d->kind == S_DBL)
            *(double *) ((char *) o + d->off) = d->def;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            s_help(scen);
            return 1;
        }
        if (a[0] != '-') {
            if (scen >= 0)
                return s_usage("unexpected argument '%s'", a);
            for (int s = 0; s < PB_NSCENARIOS; s++)
                if (strcmp(a, s_scen[s].name) == 0)
                    scen = s;
            if (scen < 0)
                return s_usage("unknown scenario '%s' (connect, fanout, stream)", a);
            continue;
        }
        char name[64];
        const char *eq = strchr(a, '=');
        size_t n = eq ? (size_t) (eq - a) : strlen(a);
        snprintf(name, sizeof name, "%.*s", (int) (n < sizeof name ? n : sizeof name - 1), a);
        const s_opt_t *d = s_find(name, scen);
        if (!d) {
            if (scen < 0 && s_find(name, PB_CONNECT) == NULL && s_find(name, PB_FANOUT) == NULL &&
                s_find(name, PB_STREAM) == NULL)
                return s_usage("unknown option '%s'", name);
            if (scen < 0)
                return s_usage("%s is a scenario option: put it after the scenario's name", name);
            return s_usage("%s takes no option %s", s_scen[scen].name, name);
        }
        const char *v = eq ? eq + 1 : NULL;
        if (!eq && d->kind != S_FLAG)
            v = ++i < argc ? argv[i] : NULL;
        if (s_set(o, d, v) != 0)
            return -1;
        /* The scenario's own row for a name two scenarios share. */
        s_given[d - s_opts] = true;
    }
    if (scen < 0)
        return s_usage("no scenario given (connect, fanout, stream)");
    o->scenario = (pb_scenario_t) scen;
    if (s_parse_url(o) != 0)
        return -1;
    return s_check(o);
}

void
pb_opts_json(const pb_opts_t *o, void *obj)
{
    cJSON *j = obj;
    for (size_t i = 0; i < S_NOPTS; i++) {
        const s_opt_t *d = &s_opts[i];
        if (d->scen != S_COMMON && !(d->scen & (1u << o->scenario)))
            continue;
        char key[48];
        snprintf(key, sizeof key, "%s", d->name + 2);
        for (char *p = key; *p; p++)
            if (*p == '-')
                *p = '_';
        const char *base = (const char *) o + d->off;
        switch (d->kind) {
        case S_INT:
            if (strcmp(key, "pid") == 0 && !o->pid)
                cJSON_AddNullToObject(j, key);
            else
                cJSON_AddNumberToObject(j, key, (double) *(const long *) base);
            break;
        case S_DBL:
            cJSON_AddNumberToObject(j, key, *(const double *) base);
            break;
        case S_FLAG:
            cJSON_AddBoolToObject(j, key, *(const bool *) base);
            break;
        case S_STR:
            cJSON_AddStringToObject(j, key, base);
            break;
        }
    }
}
