/*  www_assets — the browser pages and the OpenAPI document, built into the
    binary from actors/www/ (cmake/embed.cmake writes www_assets.c). */
#ifndef WWW_ASSETS_H
#define WWW_ASSETS_H

#include <stddef.h>
#include <string.h>

typedef struct {
    const char *name;  /* file name under actors/www/ */
    const char *ctype; /* Content-Type */
    const unsigned char *data;
    size_t len;
} pl_www_asset_t;

extern const pl_www_asset_t pl_www_assets[];
extern const size_t pl_www_nassets;

static inline const pl_www_asset_t *
pl_www_find(const char *name)
{
    for (size_t i = 0; i < pl_www_nassets; i++)
        if (strcmp(pl_www_assets[i].name, name) == 0)
            return &pl_www_assets[i];
    return NULL;
}

#endif
