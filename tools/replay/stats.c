/*  stats — what a capture holds: connections, frames by type, bytes, time. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "replay.h"

/* Distinct frame types counted, two of them "(other)" (in and out) for the
   rest: the types come from clients, who may send any. */
#define S_TYPES_MAX 256

typedef struct {
    char name[48];
    int dir;
    uint64_t frames, bytes;
} s_type_t;

typedef struct {
    s_type_t v[S_TYPES_MAX];
    size_t n;
} s_types_t;

static int
s_help(void)
{
    printf("usage: parley-replay stats [--json] FILE\n"
           "\n"
           "Summarises a capture: who wrote it and when, its duration (first record to\n"
           "last), connections opened and closed, frames and bytes in (client to\n"
           "server) and out, frames by direction and JSON \"type\", close codes, and\n"
           "records the tap dropped. A capture cut short (a recorder killed hard) is\n"
           "summarised up to its last whole record, with a warning.\n"
           "\n"
           "options:\n"
           "  --json   one JSON object on stdout instead of the table\n");
    return 0;
}

/* The frame's JSON "type", "(binary)", "(not JSON)" or "(no type)". */
static void
s_type_of(const pl_cap_rec_t *r, char *out, size_t size)
{
    if (r->opcode == PL_CAP_BINARY) {
        snprintf(out, size, "(binary)");
        return;
    }
    cJSON *j = cJSON_ParseWithLength(r->data, r->len);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "type");
    if (!j)
        snprintf(out, size, "(not JSON)");
    else if (cJSON_IsString(t))
        snprintf(out, size, "%s", t->valuestring);
    else
        snprintf(out, size, "(no type)");
    cJSON_Delete(j);
}

static size_t
s_find(const s_types_t *t, int dir, const char *name)
{
    size_t i = 0;
    while (i < t->n && (t->v[i].dir != dir || strcmp(t->v[i].name, name) != 0))
        i++;
    return i;
}

static void
s_count(s_types_t *t, const pl_cap_rec_t *r)
{
    char name[48];
    s_type_of(r, name, sizeof name);
    size_t i = s_find(t, (int) r->dir, name);
    if (i == t->n && t->n >= S_TYPES_MAX - 2) { /* the last two slots: "(other)" in and out */
        snprintf(name, sizeof name, "(other)");
        i = s_find(t, (int) r->dir, name);
    }
    if (i == t->n) {
        t->n++;
        memset(&t->v[i], 0, sizeof t->v[i]);
        snprintf(t->v[i].name, sizeof t->v[i].name, "%s", name);
        t->v[i].dir = (int) r->dir;
    }
    t->v[i].frames++;
    t->v[i].bytes += r->len;
}

static int
s_by_count(const void *a, const void *b)
{
    const s_type_t *x = a, *y = b;
    if (x->dir != y->dir)
        return x->dir - y->dir;
    return x->frames < y->frames ? 1 : x->frames > y->frames ? -1 : strcmp(x->name, y->name);
}

static void
s_when(int64_t us, char *out, size_t size)
{
    time_t t = (time_t) (us / 1000000);
    struct tm tm;
    if (us <= 0 || !gmtime_r(&t, &tm) || !strftime(out, size, "%Y-%m-%d %H:%M:%S UTC", &tm))
        snprintf(out, size, "unknown");
}

int
rp_stats(int argc, char **argv)
{
    bool json = false;
    int i = 1;
    for (; i < argc && argv[i][0] == '-' && argv[i][1]; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return s_help();
        if (strcmp(argv[i], "--json") != 0)
            return rp_usage_error("stats", "unknown option '%s'", argv[i]);
        json = true;
    }
    if (argc - i != 1)
        return rp_usage_error("stats", "needs one FILE");
    rp_capture_t cap;
    char err[300];
    if (rp_capture_load(argv[i], &cap, err, sizeof err) != 0) {
        fprintf(stderr, "parley-replay stats: %s\n", err);
        return 2;
    }
    if (cap.warning[0])
        fprintf(stderr, "parley-replay stats: warning: %s: %s\n", argv[i], cap.warning);

    static s_types_t types;
    types.n = 0;
    uint64_t frames[2] = {0, 0}, bytes[2] = {0, 0}, opened = 0, closed = 0;
    int codes[5000];
    memset(codes, 0, sizeof codes);
    for (size_t k = 0; k < cap.n; k++) {
        const pl_cap_rec_t *r = &cap.recs[k];
        if (r->kind == PL_CAP_FRAME) {
            frames[r->dir]++;
            bytes[r->dir] += r->len;
            s_count(&types, r);
        } else if (r->kind == PL_CAP_OPEN) {
            opened++;
        } else if (r->kind == PL_CAP_CLOSE) {
            closed++;
            codes[r->code]++;
        }
    }
    qsort(types.v, types.n, sizeof *types.v, s_by_count);
    double duration = cap.n ? (double) (cap.recs[cap.n - 1].t_us - cap.recs[0].t_us) / 1e6 : 0;
    char created[40], first[40];
    s_when(cap.header.created_us, created, sizeof created);
    s_when(cap.n ? cap.recs[0].t_us : 0, first, sizeof first);

    if (json) {
        cJSON *o = cJSON_CreateObject(), *by = cJSON_CreateArray(), *cl = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "file", argv[i]);
        cJSON_AddNumberToObject(o, "version", cap.header.version);
        cJSON_AddStringToObject(o, "source", cap.header.source);
        cJSON_AddNumberToObject(o, "created_us", (double) cap.header.created_us);
        cJSON_AddNumberToObject(o, "records", (double) cap.n);
        cJSON_AddNumberToObject(o, "duration_s", duration);
        cJSON_AddNumberToObject(o, "connections", (double) cap.nconns);
        cJSON_AddNumberToObject(o, "opened", (double) opened);
        cJSON_AddNumberToObject(o, "closed", (double) closed);
        cJSON_AddNumberToObject(o, "frames_in", (double) frames[PL_CAP_IN]);
        cJSON_AddNumberToObject(o, "frames_out", (double) frames[PL_CAP_OUT]);
        cJSON_AddNumberToObject(o, "bytes_in", (double) bytes[PL_CAP_IN]);
        cJSON_AddNumberToObject(o, "bytes_out", (double) bytes[PL_CAP_OUT]);
        cJSON_AddNumberToObject(o, "lost", (double) cap.lost);
        cJSON_AddStringToObject(o, "warning", cap.warning);
        for (size_t k = 0; k < types.n; k++) {
            cJSON *t = cJSON_CreateObject();
            cJSON_AddStringToObject(t, "dir", types.v[k].dir == PL_CAP_IN ? "in" : "out");
            cJSON_AddStringToObject(t, "type", types.v[k].name);
            cJSON_AddNumberToObject(t, "frames", (double) types.v[k].frames);
            cJSON_AddNumberToObject(t, "bytes", (double) types.v[k].bytes);
            cJSON_AddItemToArray(by, t);
        }
        cJSON_AddItemToObject(o, "types", by);
        for (int c = 0; c < 5000; c++)
            if (codes[c]) {
                char key[8];
                snprintf(key, sizeof key, "%d", c);
                cJSON_AddNumberToObject(cl, key, codes[c]);
            }
        cJSON_AddItemToObject(o, "close_codes", cl);
        char *s = cJSON_PrintUnformatted(o);
        if (s)
            puts(s);
        free(s);
        cJSON_Delete(o);
    } else {
        printf("capture      %s (format %d, written by %s, created %s)\n", argv[i], cap.header.version,
               cap.header.source[0] ? cap.header.source : "?", created);
        printf("duration     %.3f s from %s, %zu records\n", duration, first, cap.n);
        printf("connections  %zu (%llu opened, %llu closed in the capture)\n", cap.nconns,
               (unsigned long long) opened, (unsigned long long) closed);
        printf("frames in    %llu, %llu bytes (client to server)\n", (unsigned long long) frames[PL_CAP_IN],
               (unsigned long long) bytes[PL_CAP_IN]);
        printf("frames out   %llu, %llu bytes (server to client)\n", (unsigned long long) frames[PL_CAP_OUT],
               (unsigned long long) bytes[PL_CAP_OUT]);
        printf("lost         %llu records%s\n", (unsigned long long) cap.lost,
               cap.lost ? " (dropped by the tap: the recorder fell behind)" : "");
        if (types.n)
            printf("\n  dir  %-24s %10s %12s\n", "type", "frames", "bytes");
        for (size_t k = 0; k < types.n; k++)
            printf("  %-4s %-24s %10llu %12llu\n", types.v[k].dir == PL_CAP_IN ? "in" : "out", types.v[k].name,
                   (unsigned long long) types.v[k].frames, (unsigned long long) types.v[k].bytes);
        bool any = false;
        for (int c = 0; c < 5000; c++)
            if (codes[c]) {
                printf("%s%d ×%d", any ? ", " : "\nclose codes  ", c, codes[c]);
                any = true;
            }
        if (any)
            printf("  (0: no close frame)\n");
    }
    rp_capture_free(&cap);
    return 0;
}
