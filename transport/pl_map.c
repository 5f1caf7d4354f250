#include "pl_map.h"

#include <stdlib.h>
#include <string.h>

#include "../protocol/pl_err.h"
#include "../protocol/pl_util.h"

typedef struct s_node {
    struct s_node *next;
    uint64_t hash;
    void *value;
    char key[];
} s_node_t;

struct pl_map {
    s_node_t **buckets;
    size_t nbuckets; /* a power of two */
    size_t size;
    void (*free_value)(void *);
};

pl_map_t *
pl_map_new(void (*free_value)(void *))
{
    pl_map_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->nbuckets = 16;
    self->buckets = calloc(self->nbuckets, sizeof *self->buckets);
    if (!self->buckets) {
        free(self);
        return NULL;
    }
    self->free_value = free_value;
    return self;
}

void
pl_map_destroy(pl_map_t **self_p)
{
    pl_map_t *self = *self_p;
    if (!self)
        return;
    for (size_t b = 0; b < self->nbuckets; b++) {
        s_node_t *n = self->buckets[b];
        while (n) {
            s_node_t *next = n->next;
            if (self->free_value)
                self->free_value(n->value);
            free(n);
            n = next;
        }
    }
    free(self->buckets);
    free(self);
    *self_p = NULL;
}

static s_node_t **
s_find(const pl_map_t *self, const char *key, uint64_t hash)
{
    s_node_t **p = &self->buckets[hash & (self->nbuckets - 1)];
    while (*p && ((*p)->hash != hash || strcmp((*p)->key, key) != 0))
        p = &(*p)->next;
    return p;
}

void *
pl_map_get(const pl_map_t *self, const char *key)
{
    s_node_t *n = *s_find(self, key, pl_hash(key));
    return n ? n->value : NULL;
}

static void
s_grow(pl_map_t *self)
{
    size_t nb = self->nbuckets * 2;
    s_node_t **buckets = calloc(nb, sizeof *buckets);
    if (!buckets)
        return; /* stay at this size: slower, still correct */
    for (size_t b = 0; b < self->nbuckets; b++) {
        s_node_t *n = self->buckets[b];
        while (n) {
            s_node_t *next = n->next;
            n->next = buckets[n->hash & (nb - 1)];
            buckets[n->hash & (nb - 1)] = n;
            n = next;
        }
    }
    free(self->buckets);
    self->buckets = buckets;
    self->nbuckets = nb;
}

int
pl_map_put(pl_map_t *self, const char *key, void *value)
{
    uint64_t hash = pl_hash(key);
    s_node_t **p = s_find(self, key, hash);
    if (*p) {
        if (self->free_value && (*p)->value != value)
            self->free_value((*p)->value);
        (*p)->value = value;
        return 0;
    }
    size_t klen = strlen(key);
    s_node_t *n = malloc(sizeof *n + klen + 1);
    if (!n)
        return -PL_E_NOMEM;
    memcpy(n->key, key, klen + 1);
    n->hash = hash;
    n->value = value;
    n->next = NULL;
    *p = n;
    if (++self->size > self->nbuckets)
        s_grow(self);
    return 0;
}

void *
pl_map_take(pl_map_t *self, const char *key)
{
    s_node_t **p = s_find(self, key, pl_hash(key));
    s_node_t *n = *p;
    if (!n)
        return NULL;
    *p = n->next;
    void *value = n->value;
    free(n);
    self->size--;
    return value;
}

size_t
pl_map_size(const pl_map_t *self)
{
    return self->size;
}

const char *
pl_map_next(const pl_map_t *self, pl_map_iter_t *it, void **value)
{
    s_node_t *n = it->node;
    if (n)
        n = n->next;
    while (!n && it->bucket < self->nbuckets)
        n = self->buckets[it->bucket++];
    it->node = n;
    if (!n)
        return NULL;
    if (value)
        *value = n->value;
    return n->key;
}
