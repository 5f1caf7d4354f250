/*  pl_map — a string-keyed hash map (chained, power-of-two buckets).

    Owned by one actor; not thread-safe. Keys are copied; values are owned
    by the map when a free function is given. */
#ifndef PL_MAP_H
#define PL_MAP_H

#include <stddef.h>

typedef struct pl_map pl_map_t;
typedef struct {
    size_t bucket;
    void *node;
} pl_map_iter_t;

/* `free_value` (may be NULL) frees values on remove and destroy. */
pl_map_t *pl_map_new(void (*free_value)(void *));
void pl_map_destroy(pl_map_t **self_p);
/* The value for `key`, or NULL. */
void *pl_map_get(const pl_map_t *self, const char *key);
/* Inserts or replaces (freeing the old value). 0 or -PL_E_NOMEM. */
int pl_map_put(pl_map_t *self, const char *key, void *value);
/* Removes `key` and returns its value without freeing it (NULL if absent). */
void *pl_map_take(pl_map_t *self, const char *key);
size_t pl_map_size(const pl_map_t *self);
/* Iteration: start with `pl_map_iter_t it = {0}`; returns each key in turn
   (and *value), then NULL. The map must not change during iteration. */
const char *pl_map_next(const pl_map_t *self, pl_map_iter_t *it, void **value);

#endif
