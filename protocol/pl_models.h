/*  pl_models — the models table: which model names clients may ask for, and
    how each is reached.

    Read from a JSON file (`parleyd --models FILE`):
        [{"name": "gpt-4o-mini", "backend": "openai",
          "base_url": "https://api.openai.com/v1", "model": "gpt-4o-mini",
          "api_key_env": "OPENAI_API_KEY",
          "price_in": 0.15, "price_out": 0.60}, ...]
    `backend` is echo | openai | gemini | ollama; `model` defaults to
    `name`; `api_key_env` names the environment variable holding the key
    (the key itself never appears in the file, the log or any reply); prices
    are USD per million input/output tokens (default 0). The built-in `echo`
    model is always present. Pure: parsing only, no I/O. */
#ifndef PL_MODELS_H
#define PL_MODELS_H

#include <stddef.h>

#include "pl_limits.h"

/* Longest base URL we accept in the models table. */
#define PL_URL_MAX 512
/* Longest environment variable name for a key. */
#define PL_ENV_NAME_MAX 64

typedef struct {
    char name[PL_NAME_MAX + 1];
    char backend[16];
    char base_url[PL_URL_MAX + 1];
    char model[PL_NAME_MAX + 1];
    char api_key_env[PL_ENV_NAME_MAX + 1];
    double price_in, price_out;
} pl_model_t;

typedef struct {
    pl_model_t *v;
    size_t n;
} pl_models_t;

/* Parses a models file of `len` bytes into `out` (uninitialised), adding
   the built-in echo model when the file does not name one. 0, or a negative
   pl_err with a one-line reason in `err` (and out empty). `json` may be
   NULL: only echo. */
int pl_models_parse(const char *json, size_t len, pl_models_t *out, char *err, size_t errsize);
/* The model called `name`, or NULL. */
const pl_model_t *pl_models_find(const pl_models_t *models, const char *name);
void pl_models_free(pl_models_t *models);

#endif
