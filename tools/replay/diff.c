/*  diff — do two captures show the same server behaviour?

    Connections are matched by order of first appearance, and each one's
    server frames compared. A frame is compared in a canonical form: JSON
    with its object keys sorted, every id (a string under "id" or a key
    ending in "_id") replaced by its order of first appearance in its
    capture ("<id 3>"), and every volatile value (times, durations, the
    server version) replaced by "<volatile>". So two captures match when
    they say the same things and refer to the same things in the same
    pattern, whatever ids and times the servers minted.

    Within a connection, a session's events are ordered by seq, but replies
    that carry no seq (delivery_confirmation, pong, errors) may overtake
    them. So each connection's frames are compared as two lists: those with
    a "seq", in order, and the others, in order. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "replay.h"

/* Keys whose values are times or otherwise differ run to run. */
static const char *const s_volatile[] = {
    "processing_time", "response_time", "timestamp", "created_at", "updated_at", "time", "uptime",
    "created", "last_active", "expires_in", "version", "cost_usd",
};
#define S_IGNORE_MAX 32
#define S_SHOW_DEFAULT 10
/* Paths listed per differing frame. */
#define S_PATHS_MAX 6

typedef struct {
    const char *ignore[S_IGNORE_MAX];
    size_t nignore;
    long show;
    bool quiet;
} s_opts_t;

/* A capture's ids in order of first appearance: id → "<id N>". */
typedef struct {
    char **v;
    size_t n, cap;
} s_ids_t;

typedef struct {
    char *text; /* canonical form */
    cJSON *json; /* canonical tree, NULL when not JSON */
    const pl_cap_rec_t *rec;
} s_frame_t;

typedef struct {
    s_frame_t *v;
    size_t n;
} s_list_t;

static int
s_help(void)
{
    printf("usage: parley-replay diff [--ignore KEY]... [--show N] [--quiet] A B\n"
           "\n"
           "Compares the server frames of two captures: a recording and its replay\n"
           "(parley-replay play --out), or two servers' answers to the same traffic.\n"
           "Exit status 0 when they match, 1 when they differ, 2 on bad usage or an\n"
           "unreadable capture.\n"
           "\n"
           "Connections are matched by order of first appearance. Frames are compared\n"
           "as canonical JSON: keys sorted; ids (strings under \"id\" or a key ending\n"
           "in \"_id\") replaced by their order of first appearance in their capture;\n"
           "volatile values replaced: processing_time, response_time, timestamp,\n"
           "created_at, updated_at, time, uptime, created, last_active, expires_in,\n"
           "version, cost_usd. A connection's frames that carry a \"seq\" are compared\n"
           "in order, and apart from those without one (confirmations, pongs, errors),\n"
           "which may overtake a session's events. A close by the server is compared\n"
           "too (its code).\n"
           "\n"
           "options:\n"
           "  --ignore KEY  treat KEY's values as volatile too (repeatable)\n"
           "  --show N      describe at most N differences (default %d)\n"
           "  --quiet       no output: the exit status says\n",
           S_SHOW_DEFAULT);
    return 0;
}

static bool
s_is_volatile(const s_opts_t *o, const char *key)
{
    for (size_t i = 0; i < sizeof s_volatile / sizeof *s_volatile; i++)
        if (strcmp(key, s_volatile[i]) == 0)
            return true;
    for (size_t i = 0; i < o->nignore; i++)
        if (strcmp(key, o->ignore[i]) == 0)
            return true;
    return false;
}

/* "<id N>" for `id`, numbering it on first sight. NULL on OOM. */
static char *
s_id_name(s_ids_t *ids, const char *id)
{
    size_t i = 0;
    while (i < ids->n && strcmp(ids->v[i], id) != 0)
        i++;
    if (i == ids->n) {
        if (ids->n == ids->cap) {
            size_t ncap = ids->cap ? ids->cap * 2 : 64;
            char **v = realloc(ids->v, ncap * sizeof *v);
            if (!v)
                return NULL;
            ids->v = v;
            ids->cap = ncap;
        }
        if (!(ids->v[ids->n] = strdup(id)))
            return NULL;
        ids->n++;
    }
    char name[32];
    snprintf(name, sizeof name, "<id %zu>", i + 1);
    return strdup(name);
}

static int
s_by_key(const void *a, const void *b)
{
    const cJSON *x = *(cJSON *const *) a, *y = *(cJSON *const *) b;
    return strcmp(x->string ? x->string : "", y->string ? y->string : "");
}

/* Replaces member `c` of object `j` by the string `text`, under the same
   key. The new member, or NULL on OOM. */
static cJSON *
s_replace(cJSON *j, cJSON *c, const char *text)
{
    cJSON *v = cJSON_CreateString(text);
    if (!v)
        return NULL;
    v->string = c->string; /* the key moves to the new member */
    c->string = NULL;
    cJSON_ReplaceItemViaPointer(j, c, v);
    return v;
}

/* Canonicalises `j` in place: ids named, volatile values replaced, object
   keys sorted. 0, or -1 on OOM. */
static int
s_canon(const s_opts_t *o, s_ids_t *ids, cJSON *j)
{
    if (!cJSON_IsObject(j) && !cJSON_IsArray(j))
        return 0;
    size_t n = 0;
    for (cJSON *c = j->child; c; c = c->next) {
        n++;
        if (cJSON_IsObject(j) && c->string && s_is_volatile(o, c->string) && !cJSON_IsNull(c)) {
            if (!(c = s_replace(j, c, "<volatile>")))
                return -1;
        } else if (cJSON_IsObject(j) && c->string && rp_is_id_key(c->string) && cJSON_IsString(c)) {
            char *name = s_id_name(ids, c->valuestring);
            c = name ? s_replace(j, c, name) : NULL;
            free(name);
            if (!c)
                return -1;
        } else if (s_canon(o, ids, c) != 0) {
            return -1;
        }
    }
    if (!cJSON_IsObject(j) || n < 2)
        return 0;
    cJSON **v = malloc(n * sizeof *v);
    if (!v)
        return -1;
    size_t k = 0;
    for (cJSON *c = j->child; c; c = c->next)
        v[k++] = c;
    qsort(v, n, sizeof *v, s_by_key);
    for (k = 0; k < n; k++) {
        v[k]->prev = k ? v[k - 1] : v[n - 1]; /* cJSON: the head's prev is the tail */
        v[k]->next = k + 1 < n ? v[k + 1] : NULL;
    }
    j->child = v[0];
    free(v);
    return 0;
}

static int
s_frame(const pl_cap_rec_t *r, s_frame_t *f)
{
    memset(f, 0, sizeof *f);
    f->rec = r;
    if (r->opcode == PL_CAP_TEXT && (f->json = cJSON_ParseWithLength(r->data, r->len)))
        return 0; /* its text comes once it is canonical */
    /* Not JSON: compared byte for byte, shown as text (binary as a size). */
    char head[24];
    snprintf(head, sizeof head, r->opcode == PL_CAP_BINARY ? "(binary %zu bytes) " : "(not JSON) ", r->len);
    size_t hl = strlen(head);
    if (!(f->text = malloc(hl + r->len + 1)))
        return -1;
    memcpy(f->text, head, hl);
    memcpy(f->text + hl, r->data, r->len);
    f->text[hl + r->len] = '\0';
    return 0;
}

static void
s_list_free(s_list_t *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i].text);
        cJSON_Delete(l->v[i].json);
    }
    free(l->v);
    memset(l, 0, sizeof *l);
}

/* A connection's server frames in canonical form, split into those with a
   seq (lists[0]) and those without (lists[1]). 0, or -1 on OOM. */
static int
s_lists(const s_opts_t *o, s_ids_t *ids, const rp_conn_t *c, s_list_t lists[2])
{
    memset(lists, 0, 2 * sizeof *lists);
    for (int k = 0; k < 2; k++)
        if (c->n && !(lists[k].v = calloc(c->n, sizeof *lists[k].v)))
            return -1;
    for (size_t i = 0; i < c->n; i++) {
        if (c->recs[i]->dir != PL_CAP_OUT)
            continue;
        s_frame_t f;
        if (s_frame(c->recs[i], &f) != 0)
            return -1;
        int k = cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(f.json, "seq")) ? 0 : 1;
        lists[k].v[lists[k].n++] = f;
    }
    /* Ids are numbered in the order the lists are compared, so a reply
       that overtook an event does not renumber the ids after it. */
    for (int k = 0; k < 2; k++)
        for (size_t i = 0; i < lists[k].n; i++) {
            s_frame_t *f = &lists[k].v[i];
            if (f->json && (s_canon(o, ids, f->json) != 0 || !(f->text = cJSON_PrintUnformatted(f->json))))
                return -1;
        }
    return 0;
}

/* Prints where two canonical trees differ, as paths. */
static void
s_paths(const cJSON *a, const cJSON *b, char *path, size_t plen, size_t size, int *left)
{
    if (*left <= 0 || cJSON_Compare(a, b, true))
        return;
    if (a && b && cJSON_IsObject(a) && cJSON_IsObject(b)) {
        for (const cJSON *c = a->child; c; c = c->next) {
            snprintf(path + plen, size - plen, ".%s", c->string);
            s_paths(c, cJSON_GetObjectItemCaseSensitive(b, c->string), path, strlen(path), size, left);
        }
        for (const cJSON *c = b->child; c; c = c->next)
            if (!cJSON_GetObjectItemCaseSensitive(a, c->string)) {
                snprintf(path + plen, size - plen, ".%s", c->string);
                s_paths(NULL, c, path, strlen(path), size, left);
            }
        path[plen] = '\0';
        return;
    }
    char *x = a ? cJSON_PrintUnformatted(a) : NULL, *y = b ? cJSON_PrintUnformatted(b) : NULL;
    printf("        %s: %.200s  ≠  %.200s\n", plen ? path : "(frame)", x ? x : "(absent)", y ? y : "(absent)");
    free(x);
    free(y);
    path[plen] = '\0';
    (*left)--;
}

static void
s_show(const char *side, const s_frame_t *f)
{
    if (f)
        printf("      %s %.400s%s\n", side, f->text, strlen(f->text) > 400 ? " …" : "");
    else
        printf("      %s (no frame)\n", side);
}

/* Compares one list pair; returns the number of differing positions. */
static size_t
s_compare(const s_opts_t *o, size_t conn, const char *what, const s_list_t *a, const s_list_t *b, long *shown)
{
    size_t n = a->n > b->n ? a->n : b->n, diffs = 0;
    for (size_t i = 0; i < n; i++) {
        const s_frame_t *x = i < a->n ? &a->v[i] : NULL, *y = i < b->n ? &b->v[i] : NULL;
        if (x && y && strcmp(x->text, y->text) == 0)
            continue;
        diffs++;
        if (o->quiet || (*shown)++ >= o->show)
            continue;
        printf("  connection %zu, %s frame %zu of %zu/%zu differs:\n", conn + 1, what, i + 1, a->n, b->n);
        s_show("A", x);
        s_show("B", y);
        if (x && y && x->json && y->json) {
            char path[512] = "";
            int left = S_PATHS_MAX;
            s_paths(x->json, y->json, path, 0, sizeof path, &left);
        }
    }
    return diffs;
}

static int
s_close_code(const rp_conn_t *c)
{
    return c->close && c->close->by == PL_CAP_OUT ? c->close->code : -1;
}

int
rp_diff(int argc, char **argv)
{
    s_opts_t o = {.show = S_SHOW_DEFAULT};
    int i = 1;
    for (; i < argc && argv[i][0] == '-' && argv[i][1]; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return s_help();
        if (strcmp(argv[i], "--quiet") == 0) {
            o.quiet = true;
        } else if (strcmp(argv[i], "--ignore") == 0 && i + 1 < argc) {
            if (o.nignore == S_IGNORE_MAX)
                return rp_usage_error("diff", "at most %d --ignore keys", S_IGNORE_MAX);
            o.ignore[o.nignore++] = argv[++i];
        } else if (strcmp(argv[i], "--show") == 0 && i + 1 < argc) {
            char *end;
            o.show = strtol(argv[++i], &end, 10);
            if (*end || o.show < 0)
                return rp_usage_error("diff", "--show needs a count >= 0, not '%s'", argv[i]);
        } else {
            return rp_usage_error("diff", "unknown option '%s'", argv[i]);
        }
    }
    if (argc - i != 2)
        return rp_usage_error("diff", "needs two captures, A and B");
    rp_capture_t cap[2];
    char err[300];
    for (int k = 0; k < 2; k++) {
        if (rp_capture_load(argv[i + k], &cap[k], err, sizeof err) != 0) {
            fprintf(stderr, "parley-replay diff: %s\n", err);
            if (k)
                rp_capture_free(&cap[0]);
            return 2;
        }
        if (cap[k].warning[0])
            fprintf(stderr, "parley-replay diff: warning: %s: %s\n", argv[i + k], cap[k].warning);
        if (cap[k].lost)
            fprintf(stderr, "parley-replay diff: warning: %s lost %llu records while recording\n", argv[i + k],
                    (unsigned long long) cap[k].lost);
    }
    if (!o.quiet)
        printf("A: %s\nB: %s\n", argv[i], argv[i + 1]);
    s_ids_t ids[2] = {{0}, {0}};
    size_t diffs = 0, frames = 0, nconn = cap[0].nconns > cap[1].nconns ? cap[0].nconns : cap[1].nconns;
    long shown = 0;
    int rc = 0;
    if (cap[0].nconns != cap[1].nconns) {
        diffs++;
        if (!o.quiet)
            printf("  A has %zu connections, B has %zu\n", cap[0].nconns, cap[1].nconns);
    }
    for (size_t c = 0; c < nconn && rc == 0; c++) {
        static const rp_conn_t none;
        const rp_conn_t *ca = c < cap[0].nconns ? &cap[0].conns[c] : &none;
        const rp_conn_t *cb = c < cap[1].nconns ? &cap[1].conns[c] : &none;
        s_list_t la[2] = {{0}}, lb[2] = {{0}};
        if (s_lists(&o, &ids[0], ca, la) != 0 || s_lists(&o, &ids[1], cb, lb) != 0) {
            fprintf(stderr, "parley-replay diff: out of memory\n");
            rc = 2;
        } else {
            diffs += s_compare(&o, c, "sequenced", &la[0], &lb[0], &shown);
            diffs += s_compare(&o, c, "unsequenced", &la[1], &lb[1], &shown);
            frames += la[0].n + la[1].n;
            if (s_close_code(ca) != s_close_code(cb)) {
                diffs++;
                if (!o.quiet && shown++ < o.show)
                    printf("  connection %zu: the server closed it with %d in A, %d in B (-1: it did not)\n",
                           c + 1, s_close_code(ca), s_close_code(cb));
            }
        }
        for (int k = 0; k < 2; k++) {
            s_list_free(&la[k]);
            s_list_free(&lb[k]);
        }
    }
    for (int k = 0; k < 2; k++) {
        for (size_t j = 0; j < ids[k].n; j++)
            free(ids[k].v[j]);
        free(ids[k].v);
        rp_capture_free(&cap[k]);
    }
    if (rc)
        return rc;
    if (!o.quiet) {
        if ((long) diffs > o.show)
            printf("  ... %zu more differences not shown (--show)\n", diffs - (size_t) o.show);
        printf("%s: %zu connections, %zu server frames in A, %zu differences (ids and volatile values ignored)\n",
               diffs ? "DIFFERENT" : "same", nconn, frames, diffs);
    }
    return diffs ? 1 : 0;
}
