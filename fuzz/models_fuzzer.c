/*  models — the models file (parleyd --models FILE, protocol/pl_models.h).

    Input: the file's bytes. On success the table holds 1..257 models, echo
    among them, names valid and unique, every backend known, remote ones
    with an http(s) base URL, prices in [0, 1e6]; on failure the table is
    empty and err one NUL-terminated line (the buffer is small, so long
    reasons are cut). */
#include <math.h>
#include <string.h>

#include "fuzz.h"
#include "pl_models.h"
#include "pl_util.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pl_models_t models;
    char err[48];
    memset(err, 0xA5, sizeof err);
    int rc = pl_models_parse((const char *) data, size, &models, err, sizeof err);
    if (rc != 0) {
        FUZZ_CHECK(rc < 0 && models.v == NULL && models.n == 0);
        FUZZ_CHECK(memchr(err, '\0', sizeof err) != NULL && strchr(err, '\n') == NULL);
        pl_models_free(&models);
        return 0;
    }
    FUZZ_CHECK(models.n >= 1 && models.n <= 257 && pl_models_find(&models, "echo"));
    for (size_t i = 0; i < models.n; i++) {
        const pl_model_t *m = &models.v[i];
        FUZZ_CHECK(memchr(m->name, '\0', sizeof m->name) && memchr(m->backend, '\0', sizeof m->backend));
        FUZZ_CHECK(memchr(m->base_url, '\0', sizeof m->base_url) && memchr(m->model, '\0', sizeof m->model));
        FUZZ_CHECK(memchr(m->api_key_env, '\0', sizeof m->api_key_env));
        FUZZ_CHECK(pl_id_valid(m->name) && pl_models_find(&models, m->name) == m);
        FUZZ_CHECK(m->model[0] != '\0');
        bool echo = strcmp(m->backend, "echo") == 0;
        FUZZ_CHECK(echo || strcmp(m->backend, "openai") == 0 || strcmp(m->backend, "gemini") == 0 ||
                   strcmp(m->backend, "ollama") == 0);
        FUZZ_CHECK(echo || strncmp(m->base_url, "http://", 7) == 0 || strncmp(m->base_url, "https://", 8) == 0);
        FUZZ_CHECK(isfinite(m->price_in) && m->price_in >= 0 && m->price_in <= 1e6);
        FUZZ_CHECK(isfinite(m->price_out) && m->price_out >= 0 && m->price_out <= 1e6);
    }
    pl_models_free(&models);
    FUZZ_CHECK(models.v == NULL && models.n == 0);
    return 0;
}
