/*  pl_vendor — the vendors' request bodies, paths and streamed items; the
    mapping choices are in pl_vendor.h. Each member of an item is looked up
    once with its expected type (s_member): absent or null is "not there",
    another type refuses the item. Vendor error text goes through one
    sanitiser (s_msg_t) that bounds, cleans and redacts it. */
#include "pl_vendor.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pl_err.h"

/* Token counts are integers a double holds exactly: past 2^53 they are not
   counts but garbage. */
#define S_COUNT_MAX 9007199254740992.0

static const char *const s_names[PL_VENDOR_COUNT_] = {"openai", "gemini", "ollama"};

int
pl_vendor_from_name(const char *name)
{
    for (int i = 0; name && i < PL_VENDOR_COUNT_; i++)
        if (strcmp(s_names[i], name) == 0)
            return i;
    return -1;
}

const char *
pl_vendor_name(pl_vendor_t v)
{
    return (unsigned) v < PL_VENDOR_COUNT_ ? s_names[v] : "?";
}

/* ---- request bodies ---- */

typedef enum { R_USER, R_ASSISTANT, R_SYSTEM } s_role_t;

static s_role_t
s_role(const char *role)
{
    if (role && strcmp(role, "assistant") == 0)
        return R_ASSISTANT;
    if (role && strcmp(role, "system") == 0)
        return R_SYSTEM;
    return R_USER;
}

/* Appends s to the malloc'd *dst (NULL: empty); nothing for "". On
   failure *dst is unchanged. */
static int
s_append(char **dst, const char *s)
{
    size_t add = strlen(s), have = *dst ? strlen(*dst) : 0;
    if (add == 0)
        return 0;
    char *p = realloc(*dst, have + add + 1);
    if (!p)
        return -PL_E_NOMEM;
    memcpy(p + have, s, add + 1);
    *dst = p;
    return 0;
}

/* The GENERATE's system prompt, then the text of each "system" history
   entry, joined with a blank line, into *out (malloc'd; NULL when there is
   none). 0 or -PL_E_NOMEM. */
static int
s_system_text(const pl_env_t *gen, char **out)
{
    *out = NULL;
    int rc = pl_env_has(gen, PL_F_SYSTEM) && gen->system ? s_append(out, gen->system) : 0;
    for (size_t i = 0; rc == 0 && i < gen->hist.n; i++) {
        const pl_histent_t *e = &gen->hist.v[i];
        if (s_role(e->role) != R_SYSTEM || !e->text || !*e->text)
            continue;
        rc = *out ? s_append(out, "\n\n") : 0;
        if (rc == 0)
            rc = s_append(out, e->text);
    }
    if (rc != 0) {
        free(*out);
        *out = NULL;
    }
    return rc;
}

/* Adds "parts":[{"text": text}] to o (Gemini's Content). */
static bool
s_parts(cJSON *o, const char *text)
{
    cJSON *parts = cJSON_AddArrayToObject(o, "parts");
    cJSON *p = parts ? cJSON_CreateObject() : NULL;
    if (!p)
        return false;
    cJSON_AddItemToArray(parts, p);
    return cJSON_AddStringToObject(p, "text", text) != NULL;
}

/* Appends one turn to arr: {"role","content"}, or Gemini's {"role","parts"}. */
static bool
s_turn(cJSON *arr, pl_vendor_t v, const char *role, const char *text)
{
    cJSON *m = cJSON_CreateObject();
    if (!m)
        return false;
    cJSON_AddItemToArray(arr, m);
    if (!cJSON_AddStringToObject(m, "role", role))
        return false;
    if (v == PL_VENDOR_GEMINI)
        return s_parts(m, text);
    return cJSON_AddStringToObject(m, "content", text) != NULL;
}

/* The streaming switches and the optional sampling parameters. */
static bool
s_options(cJSON *root, pl_vendor_t v, const pl_env_t *gen)
{
    bool temp = pl_env_has(gen, PL_F_TEMP) && isfinite(gen->temperature);
    bool maxtok = pl_env_has(gen, PL_F_MAXTOK) && gen->max_tokens > 0;
    cJSON *opts = root;
    const char *maxkey = "max_tokens";
    if (v != PL_VENDOR_GEMINI && !cJSON_AddTrueToObject(root, "stream"))
        return false;
    if (v == PL_VENDOR_OPENAI) {
        cJSON *so = cJSON_AddObjectToObject(root, "stream_options");
        if (!so || !cJSON_AddTrueToObject(so, "include_usage"))
            return false;
    } else {
        if (!temp && !maxtok)
            return true;
        opts = cJSON_AddObjectToObject(root, v == PL_VENDOR_GEMINI ? "generationConfig" : "options");
        if (!opts)
            return false;
        maxkey = v == PL_VENDOR_GEMINI ? "maxOutputTokens" : "num_predict";
    }
    if (temp && !cJSON_AddNumberToObject(opts, "temperature", gen->temperature))
        return false;
    if (maxtok && !cJSON_AddNumberToObject(opts, maxkey, (double) gen->max_tokens))
        return false;
    return true;
}

char *
pl_vendor_request(pl_vendor_t v, const pl_env_t *gen, const char *model_id, size_t *len)
{
    if ((unsigned) v >= PL_VENDOR_COUNT_ || !gen)
        return NULL;
    bool gem = v == PL_VENDOR_GEMINI;
    char *sys = NULL, *out = NULL;
    if (s_system_text(gen, &sys) != 0)
        return NULL;
    cJSON *root = cJSON_CreateObject();
    bool ok = root != NULL;
    if (ok && !gem)
        ok = cJSON_AddStringToObject(root, "model", model_id ? model_id : "") != NULL;
    cJSON *msgs = ok ? cJSON_AddArrayToObject(root, gem ? "contents" : "messages") : NULL;
    ok = msgs != NULL;
    if (ok && sys && !gem)
        ok = s_turn(msgs, v, "system", sys);
    for (size_t i = 0; ok && i < gen->hist.n; i++) {
        const pl_histent_t *e = &gen->hist.v[i];
        s_role_t r = s_role(e->role);
        if (r == R_SYSTEM || !e->text || !*e->text)
            continue;
        ok = s_turn(msgs, v, r == R_USER ? "user" : gem ? "model" : "assistant", e->text);
    }
    if (ok && sys && gem) {
        cJSON *si = cJSON_AddObjectToObject(root, "systemInstruction");
        ok = si && s_parts(si, sys);
    }
    if (ok)
        ok = s_options(root, v, gen);
    if (ok)
        out = cJSON_PrintUnformatted(root);
    if (out && len)
        *len = strlen(out);
    cJSON_Delete(root);
    free(sys);
    return out;
}

/* ---- paths ---- */

static bool
s_alnum(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* Appends printf output at *at; -PL_E_TOO_LARGE when it does not fit. */
static int
s_print(char *out, size_t size, size_t *at, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out + *at, size - *at, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t) n >= size - *at)
        return -PL_E_TOO_LARGE;
    *at += (size_t) n;
    return 0;
}

/* Each vendor's path, or its prefix before the model (Gemini). */
static const char *const s_paths[PL_VENDOR_COUNT_] = {"/chat/completions", "/v1beta/models/", "/api/chat"};

int
pl_vendor_path(pl_vendor_t v, const char *model_id, char *out, size_t size)
{
    const char *m = model_id ? model_id : "";
    bool gem = v == PL_VENDOR_GEMINI;
    size_t at = 0;
    if (strncmp(m, "models/", 7) == 0) /* the API's own resource name */
        m += 7;
    int rc = (unsigned) v >= PL_VENDOR_COUNT_ ? -PL_E_INTERNAL : size == 0 ? -PL_E_TOO_LARGE : 0;
    if (rc == 0)
        rc = s_print(out, size, &at, "%s", s_paths[v]);
    for (const unsigned char *p = (const unsigned char *) m; gem && rc == 0 && *p; p++)
        rc = s_print(out, size, &at, s_alnum(*p) || strchr("-._~", *p) ? "%c" : "%%%02X", *p);
    if (rc == 0 && gem)
        rc = s_print(out, size, &at, "%s", ":streamGenerateContent?alt=sse");
    if (rc != 0 && size > 0)
        out[0] = '\0';
    return rc;
}

/* ---- error text: bounded, cleaned, redacted ---- */

typedef struct {
    char buf[PL_VENDOR_ERROR_MAX + 1];
    size_t n;
    size_t word;    /* where the word being written began in buf */
    bool space;     /* a space is due before the next character */
    bool full;      /* a character did not fit: nothing more is added */
    bool redacting; /* a key was redacted: the rest of its word is dropped */
} s_msg_t;

/* Length of the valid UTF-8 sequence at p (NUL-terminated), or 0. */
static size_t
s_utf8_len(const unsigned char *p)
{
    static const unsigned min[5] = {0, 0, 0x80, 0x800, 0x10000};
    unsigned c = p[0];
    size_t n = c < 0x80 ? 1 : c >= 0xC2 && c <= 0xDF ? 2 : (c & 0xF0) == 0xE0 ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
    if (n <= 1)
        return n;
    unsigned cp = c & (0x7Fu >> n);
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80) /* also stops at the NUL */
            return 0;
        cp = cp << 6 | (p[i] & 0x3Fu);
    }
    return cp < min[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF) ? 0 : n;
}

static void
s_put(s_msg_t *m, const char *s, size_t n)
{
    size_t need = n + (m->space ? 1 : 0);
    if (m->n + need > PL_VENDOR_ERROR_MAX) {
        m->full = true;
        return;
    }
    if (m->space)
        m->buf[m->n++] = ' ';
    m->space = false;
    memcpy(m->buf + m->n, s, n);
    m->n += n;
    m->buf[m->n] = '\0';
}

/* True when a word of the output starts like an OpenAI or Google key. */
static bool
s_key_shaped(const char *w, size_t n)
{
    return (n >= 3 && memcmp(w, "sk-", 3) == 0) || (n >= 4 && memcmp(w, "AIza", 4) == 0);
}

/* Appends s: whitespace runs become one space (none leading or trailing),
   other control characters (C0, DEL, C1) and invalid UTF-8 are dropped, a
   word starting "sk-" or "AIza" (OpenAI / Google key shapes) becomes
   "[redacted]" up to the next whitespace. The key test is made on the
   output, after the drops: "s\x01k-..." must not come out as "sk-...".
   Stops at the first character that does not fit. */
static void
s_emit(s_msg_t *m, const char *s)
{
    const unsigned char *p = (const unsigned char *) s;
    while (*p && !m->full) {
        size_t n = s_utf8_len(p);
        if (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') {
            m->space = m->n > 0;
            m->redacting = false;
            p++;
            continue;
        }
        if (m->redacting || n == 0 || *p < 0x20 || *p == 0x7F || (p[0] == 0xC2 && p[1] < 0xA0)) {
            p += n ? n : 1;
            continue;
        }
        bool word = m->n == 0 || m->space || !s_alnum((unsigned char) m->buf[m->n - 1]);
        s_put(m, (const char *) p, n);
        if (m->full)
            break;
        if (word)
            m->word = m->n - n;
        if (s_key_shaped(m->buf + m->word, m->n - m->word)) {
            m->n = m->word;
            if (m->n > 0 && m->buf[m->n - 1] == ' ') { /* s_put gives it back if it fits */
                m->n--;
                m->space = true;
            }
            m->buf[m->n] = '\0';
            s_put(m, "[redacted]", 10);
            m->redacting = true;
        }
        p += n;
    }
}

/* ---- streamed items ---- */

static bool
s_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Parses exactly `len` bytes as one JSON value (JSON whitespace around it
   allowed); NULL when they are not. */
static cJSON *
s_json(const char *data, size_t len)
{
    if (!data || len == 0 || memchr(data, '\0', len))
        return NULL;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(data, len, &end, 0);
    while (root && end && end < data + len && s_ws(*end))
        end++;
    if (root && end != data + len) {
        cJSON_Delete(root);
        root = NULL;
    }
    return root;
}

/* Member `key` of object o (o may be NULL): absent or null → *out NULL and
   0; present and `is` → *out, 0; of another type → -PL_E_BAD_FRAME. */
static int
s_member(const cJSON *o, const char *key, cJSON_bool (*is)(const cJSON *), const cJSON **out)
{
    const cJSON *v = o ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
    *out = NULL;
    if (!v || cJSON_IsNull(v))
        return 0;
    if (!is(v))
        return -PL_E_BAD_FRAME;
    *out = v;
    return 0;
}

/* Usage counts from object u (NULL: none): integers in [0, 2^53], absent
   or null counting 0. */
static int
s_usage(const cJSON *u, const char *prompt_key, const char *completion_key, pl_vendor_event_t *ev)
{
    const char *keys[2] = {prompt_key, completion_key};
    int64_t *dst[2] = {&ev->prompt_tokens, &ev->completion_tokens};
    for (int i = 0; u && i < 2; i++) {
        const cJSON *n;
        if (s_member(u, keys[i], cJSON_IsNumber, &n) != 0)
            return -PL_E_BAD_FRAME;
        double d = n ? n->valuedouble : 0;
        if (!isfinite(d) || d < 0 || d > S_COUNT_MAX || d != floor(d))
            return -PL_E_BAD_FRAME;
        *dst[i] = (int64_t) d;
    }
    ev->has_usage = u != NULL;
    return 0;
}

/* The stream ends in error with message m ("" → a generic sentence). */
static int
s_fail(pl_vendor_event_t *ev, const s_msg_t *m)
{
    ev->done = true;
    ev->finish = PL_FINISH_ERROR;
    ev->error = strdup(m->n ? m->buf : pl_strerror(PL_E_MODEL_ERROR));
    return ev->error ? 0 : -PL_E_NOMEM;
}

/* An error value: "text" (Ollama) or {"message", "status"?} (OpenAI,
   Gemini; Gemini's status becomes a prefix) into m. */
static int
s_error_of(const cJSON *err, s_msg_t *m)
{
    const cJSON *msg, *status;
    if (cJSON_IsString(err)) {
        s_emit(m, err->valuestring);
        return 0;
    }
    if (!cJSON_IsObject(err) || s_member(err, "message", cJSON_IsString, &msg) != 0 ||
        s_member(err, "status", cJSON_IsString, &status) != 0)
        return -PL_E_BAD_FRAME;
    if (status) {
        s_emit(m, status->valuestring);
        if (msg && *msg->valuestring && m->n)
            s_emit(m, ": ");
    }
    if (msg)
        s_emit(m, msg->valuestring);
    return 0;
}

/* {"choices":[{"delta":{"content"?},"finish_reason"?}] | [], "usage"?} */
static int
s_openai(const cJSON *root, pl_vendor_event_t *ev)
{
    const cJSON *choices, *usage, *c, *delta = NULL, *content = NULL, *reason = NULL;
    if (s_member(root, "choices", cJSON_IsArray, &choices) != 0 || !choices ||
        s_member(root, "usage", cJSON_IsObject, &usage) != 0 ||
        s_usage(usage, "prompt_tokens", "completion_tokens", ev) != 0)
        return -PL_E_BAD_FRAME;
    c = cJSON_GetArrayItem(choices, 0); /* NULL for the usage chunk's [] */
    if (c && (!cJSON_IsObject(c) || s_member(c, "delta", cJSON_IsObject, &delta) != 0 ||
              s_member(delta, "content", cJSON_IsString, &content) != 0 ||
              s_member(c, "finish_reason", cJSON_IsString, &reason) != 0))
        return -PL_E_BAD_FRAME;
    if (reason)
        ev->finish = strcmp(reason->valuestring, "length") == 0 ? PL_FINISH_LENGTH : PL_FINISH_STOP;
    return content ? s_append(&ev->text, content->valuestring) : 0;
}

/* {"candidates"?:[{"content"?:{"parts":[{"text"?,"thought"?}]},"finishReason"?}],
    "usageMetadata"?, "promptFeedback"?:{"blockReason"?}}, one of the three at least. */
static int
s_gemini(const cJSON *root, pl_vendor_event_t *ev)
{
    const cJSON *cands, *usage, *fb, *block = NULL, *cand, *content = NULL, *parts = NULL, *reason = NULL, *part;
    if (s_member(root, "candidates", cJSON_IsArray, &cands) != 0 ||
        s_member(root, "usageMetadata", cJSON_IsObject, &usage) != 0 ||
        s_member(root, "promptFeedback", cJSON_IsObject, &fb) != 0 ||
        s_member(fb, "blockReason", cJSON_IsString, &block) != 0 || (!cands && !usage && !fb) ||
        s_usage(usage, "promptTokenCount", "candidatesTokenCount", ev) != 0)
        return -PL_E_BAD_FRAME;
    cand = cJSON_GetArrayItem(cands, 0);
    if (cand && (!cJSON_IsObject(cand) || s_member(cand, "content", cJSON_IsObject, &content) != 0 ||
                 s_member(content, "parts", cJSON_IsArray, &parts) != 0 ||
                 s_member(cand, "finishReason", cJSON_IsString, &reason) != 0))
        return -PL_E_BAD_FRAME;
    cJSON_ArrayForEach(part, parts)
    {
        const cJSON *text, *thought;
        if (!cJSON_IsObject(part) || s_member(part, "text", cJSON_IsString, &text) != 0 ||
            s_member(part, "thought", cJSON_IsBool, &thought) != 0)
            return -PL_E_BAD_FRAME;
        int rc = text && !cJSON_IsTrue(thought) ? s_append(&ev->text, text->valuestring) : 0;
        if (rc != 0)
            return rc;
    }
    if (!reason && !block)
        return 0;
    const char *why = reason ? reason->valuestring : block->valuestring;
    ev->done = true;
    ev->finish = !reason                          ? PL_FINISH_ERROR
                 : strcmp(why, "STOP") == 0       ? PL_FINISH_STOP
                 : strcmp(why, "MAX_TOKENS") == 0 ? PL_FINISH_LENGTH
                                                  : PL_FINISH_ERROR;
    if (ev->finish != PL_FINISH_ERROR)
        return 0;
    s_msg_t m = {0};
    s_emit(&m, reason ? "the model stopped: " : "the prompt was blocked: ");
    s_emit(&m, why);
    return s_fail(ev, &m);
}

/* {"message"?:{"content"?}, "done":bool, "done_reason"?, "prompt_eval_count"?, "eval_count"?} */
static int
s_ollama(const cJSON *root, pl_vendor_event_t *ev)
{
    const cJSON *done, *msg, *content = NULL, *reason;
    if (s_member(root, "done", cJSON_IsBool, &done) != 0 || !done ||
        s_member(root, "message", cJSON_IsObject, &msg) != 0 ||
        s_member(msg, "content", cJSON_IsString, &content) != 0 ||
        s_member(root, "done_reason", cJSON_IsString, &reason) != 0)
        return -PL_E_BAD_FRAME;
    if (cJSON_IsTrue(done)) {
        ev->done = true;
        ev->finish = reason && strcmp(reason->valuestring, "length") == 0 ? PL_FINISH_LENGTH : PL_FINISH_STOP;
        if (s_usage(root, "prompt_eval_count", "eval_count", ev) != 0)
            return -PL_E_BAD_FRAME;
    }
    return content ? s_append(&ev->text, content->valuestring) : 0;
}

/* OpenAI's end-of-stream sentinel, JSON whitespace around it allowed. */
static bool
s_is_done(const char *data, size_t len)
{
    for (; len > 0 && s_ws(*data); len--)
        data++;
    while (len > 0 && s_ws(data[len - 1]))
        len--;
    return len == 6 && memcmp(data, "[DONE]", 6) == 0;
}

void
pl_vendor_event_reset(pl_vendor_event_t *ev)
{
    if (!ev)
        return;
    free(ev->text);
    free(ev->error);
    memset(ev, 0, sizeof *ev);
    ev->finish = -1;
}

int
pl_vendor_parse(pl_vendor_t v, const char *data, size_t len, pl_vendor_event_t *ev)
{
    memset(ev, 0, sizeof *ev);
    ev->finish = -1;
    if ((unsigned) v >= PL_VENDOR_COUNT_)
        return -PL_E_INTERNAL;
    if (v == PL_VENDOR_OPENAI && data && s_is_done(data, len)) {
        ev->done = true;
        return 0;
    }
    cJSON *root = s_json(data, len);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return -PL_E_BAD_FRAME;
    }
    int rc;
    s_msg_t m = {0};
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(root, "error");
    if (err && !cJSON_IsNull(err))
        rc = s_error_of(err, &m) == 0 ? s_fail(ev, &m) : -PL_E_BAD_FRAME;
    else if (v == PL_VENDOR_OPENAI)
        rc = s_openai(root, ev);
    else if (v == PL_VENDOR_GEMINI)
        rc = s_gemini(root, ev);
    else
        rc = s_ollama(root, ev);
    cJSON_Delete(root);
    if (rc != 0)
        pl_vendor_event_reset(ev);
    return rc;
}

char *
pl_vendor_error_message(pl_vendor_t v, int status, const char *body, size_t len)
{
    (void) v; /* the three shapes are told apart by the body itself */
    s_msg_t m = {0};
    cJSON *root = s_json(body, len);
    const cJSON *o = cJSON_IsArray(root) ? cJSON_GetArrayItem(root, 0) : root; /* Gemini: [{"error"}] */
    const cJSON *err = cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, "error") : NULL;
    if (err && s_error_of(err, &m) != 0)
        m = (s_msg_t){0};
    cJSON_Delete(root);
    if (m.n == 0)
        snprintf(m.buf, sizeof m.buf, "HTTP %d", status);
    return strdup(m.buf);
}
