/*  dialect_session — the session protocol's frames (/ws, docs/protocol.md §1).

    Input: one text frame. pl_session_parse reads it; pl_session_parse_as
    reads it again without its first byte, under a type that byte picks.
    Either way: 0 means a client request (not ERROR), anything else an ERROR
    envelope whose CODE is the error returned; the envelope then renders and
    survives the trip to an actor: with CONN set as the edge sets it, it
    encodes, decodes (every required field there) and encodes to the same
    bytes. */
#include <string.h>

#include "fuzz.h"
#include "pl_dialect.h"
#include "pl_err.h"

/* The types pl_session_parse_as is called with: every rule, and some no
   rule has. */
static const char *const s_types[] = {
    "create_session", "join_session", "leave_session", "chat",  "typing_start", "typing_stop",
    "cancel",         "read",         "ping",          "pong",  "",             "CHAT",
    "chat ",          "session_update"};

/* Small enough that the fuzzer reaches TOO_LARGE. */
static const pl_dialect_limits_t s_lim = {.max_message = 512};

static void
s_check(int rc, pl_env_t *env)
{
    if (rc == 0) {
        FUZZ_CHECK(env->type != PL_MSG_ERROR && env->type != PL_MSG_NONE_);
    } else {
        FUZZ_CHECK(rc < 0 && env->type == PL_MSG_ERROR);
        FUZZ_CHECK(pl_env_has(env, PL_F_CODE) && env->code == -rc);
        FUZZ_CHECK(pl_env_has(env, PL_F_TEXT) && env->text);
    }
    size_t len = 0;
    char *json = pl_session_render(env, &len);
    if (json)
        FUZZ_CHECK(strlen(json) == len);
    if (rc != 0)
        FUZZ_CHECK(json != NULL); /* an error always goes back to the client */
    free(json);

    pl_env_set_u64(env, PL_F_CONN, 42); /* as the edge does before routing */
    char *a = NULL, *b = NULL;
    size_t alen = 0, blen = 0;
    FUZZ_CHECK(pl_env_encode(env, &a, &alen) == 0);
    pl_env_t dec;
    FUZZ_CHECK(pl_env_decode(a, alen, &dec) == 0);
    FUZZ_CHECK(dec.type == env->type && dec.present == env->present);
    FUZZ_CHECK(pl_env_encode(&dec, &b, &blen) == 0);
    FUZZ_CHECK(alen == blen && memcmp(a, b, alen) == 0);
    pl_env_reset(&dec);
    free(a);
    free(b);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pl_env_t env;
    int rc = pl_session_parse((const char *) data, size, &s_lim, &env);
    s_check(rc, &env);
    pl_env_reset(&env);

    if (size > 0) {
        const char *type = s_types[data[0] % (sizeof s_types / sizeof s_types[0])];
        rc = pl_session_parse_as((const char *) data + 1, size - 1, type, &s_lim, &env);
        s_check(rc, &env);
        pl_env_reset(&env);
    }
    return 0;
}
