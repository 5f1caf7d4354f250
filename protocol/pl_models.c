#include "pl_models.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pl_err.h"
#include "pl_util.h"

/* Models in one table, at most: a table is written by hand. */
#define S_MODELS_MAX 256

static const char *const s_backends[] = {"echo", "openai", "gemini", "ollama"};

static int
s_fail(pl_models_t *out, char *err, size_t errsize, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errsize, fmt, ap);
    va_end(ap);
    pl_models_free(out);
    return -PL_E_BAD_FRAME;
}

/* Copies string member `key` of `o` into dst (size); absent → def. */
static int
s_str(const cJSON *o, const char *key, const char *def, char *dst, size_t size)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) {
        if (!def)
            return -1;
        snprintf(dst, size, "%s", def);
        return 0;
    }
    if (!cJSON_IsString(v) || strlen(v->valuestring) >= size)
        return -1;
    memcpy(dst, v->valuestring, strlen(v->valuestring) + 1);
    return 0;
}

static int
s_price(const cJSON *o, const char *key, double *dst)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) {
        *dst = 0;
        return 0;
    }
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < 0 || v->valuedouble > 1e6)
        return -1;
    *dst = v->valuedouble;
    return 0;
}

static bool
s_env_name_ok(const char *s)
{
    for (; *s; s++)
        if (!((*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_'))
            return false;
    return true;
}

/* True when url is "http://" or "https://" followed by a host. */
static bool
s_url_has_host(const char *url)
{
    size_t scheme = strncmp(url, "http://", 7) == 0 ? 7 : strncmp(url, "https://", 8) == 0 ? 8 : 0;
    return scheme > 0 && url[scheme] != '\0' && url[scheme] != '/';
}

static int
s_model(const cJSON *o, pl_model_t *m, size_t i, char *err, size_t errsize)
{
    memset(m, 0, sizeof *m);
#define BAD(what) (snprintf(err, errsize, "model %zu: %s", i, what), -1)
    if (!cJSON_IsObject(o))
        return BAD("must be an object");
    if (s_str(o, "name", NULL, m->name, sizeof m->name) != 0 || !pl_id_valid(m->name))
        return BAD("\"name\" must be 1-64 characters of [A-Za-z0-9_.:-]");
    if (s_str(o, "backend", NULL, m->backend, sizeof m->backend) != 0)
        return BAD("\"backend\" must be echo, openai, gemini or ollama");
    bool known = false;
    for (size_t b = 0; b < sizeof s_backends / sizeof s_backends[0]; b++)
        known = known || strcmp(m->backend, s_backends[b]) == 0;
    if (!known)
        return BAD("\"backend\" must be echo, openai, gemini or ollama");
    bool remote = strcmp(m->backend, "echo") != 0;
    if (s_str(o, "base_url", remote ? NULL : "", m->base_url, sizeof m->base_url) != 0)
        return BAD("\"base_url\" is required (a string of at most 512 bytes)");
    size_t ulen = strlen(m->base_url);
    while (ulen > 0 && m->base_url[ulen - 1] == '/')
        m->base_url[--ulen] = '\0';
    /* checked once trimmed: "https://" alone would become "https:" */
    if (remote && !s_url_has_host(m->base_url))
        return BAD("\"base_url\" must be http:// or https:// and a host");
    if (s_str(o, "model", m->name, m->model, sizeof m->model) != 0 || m->model[0] == '\0')
        return BAD("\"model\" must be a non-empty string");
    if (s_str(o, "api_key_env", "", m->api_key_env, sizeof m->api_key_env) != 0 ||
        !s_env_name_ok(m->api_key_env))
        return BAD("\"api_key_env\" must name an environment variable ([A-Z0-9_])");
    if (s_price(o, "price_in", &m->price_in) != 0 || s_price(o, "price_out", &m->price_out) != 0)
        return BAD("prices must be numbers from 0 to 1000000 (USD per million tokens)");
#undef BAD
    return 0;
}

int
pl_models_parse(const char *json, size_t len, pl_models_t *out, char *err, size_t errsize)
{
    out->v = NULL;
    out->n = 0;
    cJSON *root = NULL;
    if (json) {
        root = cJSON_ParseWithLengthOpts(json, len, NULL, 0);
        if (!root)
            return s_fail(out, err, errsize, "the models file is not valid JSON");
        if (!cJSON_IsArray(root)) {
            cJSON_Delete(root);
            return s_fail(out, err, errsize, "the models file must hold a JSON array of models");
        }
    }
    size_t n = root ? (size_t) cJSON_GetArraySize(root) : 0;
    if (n > S_MODELS_MAX) {
        cJSON_Delete(root);
        return s_fail(out, err, errsize, "at most %d models", S_MODELS_MAX);
    }
    out->v = calloc(n + 1, sizeof *out->v);
    if (!out->v) {
        cJSON_Delete(root);
        return s_fail(out, err, errsize, "out of memory");
    }
    const cJSON *o;
    cJSON_ArrayForEach(o, root)
    {
        pl_model_t m;
        if (s_model(o, &m, out->n, err, errsize) != 0) {
            cJSON_Delete(root);
            pl_models_free(out);
            return -PL_E_BAD_FRAME;
        }
        if (pl_models_find(out, m.name)) {
            cJSON_Delete(root);
            return s_fail(out, err, errsize, "model \"%s\" is named twice", m.name);
        }
        out->v[out->n++] = m;
    }
    cJSON_Delete(root);
    if (!pl_models_find(out, "echo")) {
        pl_model_t echo = {.name = "echo", .backend = "echo", .model = "echo"};
        out->v[out->n++] = echo;
    }
    return 0;
}

const pl_model_t *
pl_models_find(const pl_models_t *models, const char *name)
{
    for (size_t i = 0; name && i < models->n; i++)
        if (strcmp(models->v[i].name, name) == 0)
            return &models->v[i];
    return NULL;
}

void
pl_models_free(pl_models_t *models)
{
    free(models->v);
    models->v = NULL;
    models->n = 0;
}
