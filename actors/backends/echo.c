/*  echo — the built-in, offline model.

    Answers deterministically, word by word, one chunk every --echo-delay-ms
    from the start of the answer:
        [system prompt: N chars] Echo turn T (C context messages): <last user message>
    T is the number of user messages in the history, C the number of
    messages sent (the system prompt not counted), so a test can see that the
    whole conversation reached the model. max_tokens caps the chunk count. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pl_backend.h"

typedef struct {
    char *answer;
    size_t pos, len;
    int64_t chunks, max_chunks, prompt_tokens;
    int64_t due;
    long delay_ms;
} s_echo_t;

static int64_t
s_words(const char *s)
{
    int64_t n = 0;
    bool in = false;
    for (; *s; s++) {
        bool space = *s == ' ' || *s == '\n' || *s == '\t' || *s == '\r';
        n += !space && !in;
        in = !space;
    }
    return n;
}

static void *
s_start(const pl_env_t *gen, long delay_ms, int64_t now)
{
    s_echo_t *st = calloc(1, sizeof *st);
    if (!st)
        return NULL;
    int64_t turns = 0;
    const char *last = "";
    for (size_t i = 0; i < gen->hist.n; i++) {
        st->prompt_tokens += s_words(gen->hist.v[i].text);
        if (strcmp(gen->hist.v[i].role, "user") == 0) {
            turns++;
            last = gen->hist.v[i].text;
        }
    }
    char prefix[96] = "";
    if (pl_env_has(gen, PL_F_SYSTEM) && gen->system[0]) {
        snprintf(prefix, sizeof prefix, "[system prompt: %zu chars] ", strlen(gen->system));
        st->prompt_tokens += s_words(gen->system);
    }
    size_t n = strlen(prefix) + strlen(last) + 96;
    st->answer = malloc(n);
    if (!st->answer) {
        free(st);
        return NULL;
    }
    st->len = (size_t) snprintf(st->answer, n, "%sEcho turn %lld (%zu context messages): %s", prefix, (long long) turns,
                                gen->hist.n, last);
    st->max_chunks = pl_env_has(gen, PL_F_MAXTOK) ? gen->max_tokens : INT64_MAX;
    st->delay_ms = delay_ms;
    st->due = now;
    return st;
}

static int64_t
s_next(const void *st)
{
    return ((const s_echo_t *) st)->due;
}

/* Length of the chunk at pos: one word and the white space after it. */
static size_t
s_chunk_len(const s_echo_t *st)
{
    size_t i = st->pos;
    while (i < st->len && st->answer[i] != ' ')
        i++;
    while (i < st->len && st->answer[i] == ' ')
        i++;
    return i - st->pos;
}

static pl_step_t
s_step(void *st_, int64_t now, char **text, bool *final, int64_t *finish)
{
    s_echo_t *st = st_;
    if (now < st->due)
        return PL_STEP_WAIT;
    if (st->pos >= st->len || st->chunks >= st->max_chunks) {
        *finish = st->pos >= st->len ? PL_FINISH_STOP : PL_FINISH_LENGTH;
        return PL_STEP_DONE;
    }
    size_t n = s_chunk_len(st);
    *text = strndup(st->answer + st->pos, n);
    if (!*text) {
        *finish = PL_FINISH_ERROR;
        return PL_STEP_DONE;
    }
    st->pos += n;
    st->chunks++;
    *final = st->pos >= st->len || st->chunks >= st->max_chunks;
    /* The last chunk is followed at once by the end of the answer. The others keep a
       steady cadence from the start (chunk i is due at start + i x delay) rather than
       from when the previous one went out, so a busy worker's lateness does not add up
       over an answer and a client can tell how late each chunk is (parley-bench does). */
    st->due = *final ? now : st->due + st->delay_ms;
    return PL_STEP_CHUNK;
}

static void
s_usage(const void *st_, int64_t *prompt_tokens, int64_t *completion_tokens)
{
    const s_echo_t *st = st_;
    *prompt_tokens = st->prompt_tokens;
    *completion_tokens = st->chunks;
}

static void
s_free(void *st_)
{
    s_echo_t *st = st_;
    if (st)
        free(st->answer);
    free(st);
}

const pl_backend_ops_t pl_backend_echo = {
    .name = "echo",
    .start = s_start,
    .next = s_next,
    .step = s_step,
    .usage = s_usage,
    .free = s_free,
};
