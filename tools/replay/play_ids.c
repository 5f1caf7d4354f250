/*  play_ids — the id map of one copy of parley-replay play.

    Ids the server mints differ between runs. A copy learns original →
    replayed ids by aligning the k-th OUT frame of an original connection
    with the k-th frame its replayed connection received (string values
    under keys rp_is_id_key accepts: "id" or "*_id"), and rewrites the
    client frames it sends with that map: every string value equal to a
    learned original id becomes the replayed one. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "play_int.h"

static size_t
s_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char) *s) * 1099511628211ull;
    return (size_t) h;
}

static const char *
s_ids_get(const rp_idmap_t *m, const char *from)
{
    if (m->n == 0)
        return NULL;
    for (size_t i = s_hash(from) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        if (!m->slot[i].from)
            return NULL;
        if (strcmp(m->slot[i].from, from) == 0)
            return m->slot[i].to;
    }
}

static void
s_ids_insert(rp_idpair_t *slot, size_t cap, rp_idpair_t pair)
{
    size_t i = s_hash(pair.from) & (cap - 1);
    while (slot[i].from)
        i = (i + 1) & (cap - 1);
    slot[i] = pair;
}

/* 0 (added, or known already), -1 out of memory or full. */
static int
s_ids_put(rp_idmap_t *m, const char *from, const char *to)
{
    if (s_ids_get(m, from))
        return 0;
    if (m->n >= RP_IDS_MAX)
        return -1;
    if (2 * (m->n + 1) > m->cap) {
        size_t ncap = m->cap ? 2 * m->cap : 64;
        rp_idpair_t *v = calloc(ncap, sizeof *v);
        if (!v)
            return -1;
        for (size_t i = 0; i < m->cap; i++)
            if (m->slot[i].from)
                s_ids_insert(v, ncap, m->slot[i]);
        free(m->slot);
        m->slot = v;
        m->cap = ncap;
    }
    rp_idpair_t pair = {.from = strdup(from), .to = strdup(to)};
    if (!pair.from || !pair.to) {
        free(pair.from);
        free(pair.to);
        return -1;
    }
    s_ids_insert(m->slot, m->cap, pair);
    m->n++;
    return 0;
}

void
rp_ids_free(rp_idmap_t *m)
{
    for (size_t i = 0; i < m->cap; i++) {
        free(m->slot[i].from);
        free(m->slot[i].to);
    }
    free(m->slot);
    memset(m, 0, sizeof *m);
}

/* Walks an original frame and its replayed counterpart side by side; -1
   when the map refused an id. cJSON's nesting limit bounds the recursion. */
static int
s_ids_walk(rp_idmap_t *m, const cJSON *o, const cJSON *r)
{
    int rc = 0;
    if (cJSON_IsObject(o) && cJSON_IsObject(r)) {
        const cJSON *c;
        cJSON_ArrayForEach(c, o)
        {
            const cJSON *rc_item = cJSON_GetObjectItemCaseSensitive(r, c->string);
            if (!rc_item)
                continue;
            if (cJSON_IsString(c) && cJSON_IsString(rc_item)) {
                if (rp_is_id_key(c->string) && strcmp(c->valuestring, rc_item->valuestring) != 0 &&
                    s_ids_put(m, c->valuestring, rc_item->valuestring) != 0)
                    rc = -1;
            } else if (s_ids_walk(m, c, rc_item) != 0) {
                rc = -1;
            }
        }
    } else if (cJSON_IsArray(o) && cJSON_IsArray(r)) {
        const cJSON *c = o->child, *d = r->child;
        for (; c && d; c = c->next, d = d->next)
            if (s_ids_walk(m, c, d) != 0)
                rc = -1;
    }
    return rc;
}

/* Learns from one aligned pair of server frames; -1 when the map is full. */
int
rp_ids_learn(rp_idmap_t *m, const pl_cap_rec_t *orig, const char *data, size_t len, bool binary)
{
    if (binary || orig->opcode != PL_CAP_TEXT || (orig->len == len && memcmp(orig->data, data, len) == 0))
        return 0;
    cJSON *o = cJSON_ParseWithLength(orig->data, orig->len);
    cJSON *r = o ? cJSON_ParseWithLength(data, len) : NULL;
    int rc = o && r ? s_ids_walk(m, o, r) : 0;
    cJSON_Delete(o);
    cJSON_Delete(r);
    return rc;
}

static bool
s_ids_rewrite(const rp_idmap_t *m, cJSON *j)
{
    bool changed = false;
    if (cJSON_IsString(j)) {
        const char *to = s_ids_get(m, j->valuestring);
        changed = to && cJSON_SetValuestring(j, to);
    } else {
        for (cJSON *c = j->child; c; c = c->next)
            changed |= s_ids_rewrite(m, c);
    }
    return changed;
}

/* The text to send for a captured client frame: NULL when it goes as
   captured, else a string the caller frees with cJSON_free. */
char *
rp_ids_apply(const rp_idmap_t *m, const pl_cap_rec_t *r)
{
    if (m->n == 0 || r->opcode != PL_CAP_TEXT)
        return NULL;
    cJSON *j = cJSON_ParseWithLength(r->data, r->len);
    char *s = j && s_ids_rewrite(m, j) ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    return s;
}
