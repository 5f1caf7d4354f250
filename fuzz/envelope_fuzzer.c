/*  envelope — the msgpack decoder every actor runs on its mailbox (and the
    store on the events it reads back).

    Input: msgpack bytes. When pl_env_decode accepts them, the envelope must
    be stable: encode → decode → encode gives the same bytes twice over, a
    copy encodes the same, and rendering it (session dialect) never crashes.
    A refusal must leave the envelope empty. */
#include <string.h>

#include "fuzz.h"
#include "pl_dialect.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pl_env_t env;
    if (pl_env_decode((const char *) data, size, &env) != 0) {
        FUZZ_CHECK(env.type == PL_MSG_NONE_ && env.present == 0);
        pl_env_reset(&env);
        return 0;
    }
    FUZZ_CHECK(env.type > PL_MSG_NONE_ && env.type < PL_MSG_COUNT_);

    char *a = NULL, *b = NULL, *c = NULL;
    size_t alen = 0, blen = 0, clen = 0;
    FUZZ_CHECK(pl_env_encode(&env, &a, &alen) == 0);
    pl_env_t again;
    FUZZ_CHECK(pl_env_decode(a, alen, &again) == 0);
    FUZZ_CHECK(again.type == env.type && again.present == env.present);
    FUZZ_CHECK(pl_env_encode(&again, &b, &blen) == 0);
    FUZZ_CHECK(alen == blen && memcmp(a, b, alen) == 0);

    pl_env_t copy;
    FUZZ_CHECK(pl_env_copy(&copy, &env) == 0);
    FUZZ_CHECK(pl_env_encode(&copy, &c, &clen) == 0);
    FUZZ_CHECK(alen == clen && memcmp(a, c, alen) == 0);

    size_t len = 0;
    char *json = pl_session_render(&env, &len);
    if (json)
        FUZZ_CHECK(strlen(json) == len);
    free(json);

    pl_env_reset(&copy);
    pl_env_reset(&again);
    pl_env_reset(&env);
    free(a);
    free(b);
    free(c);
    return 0;
}
