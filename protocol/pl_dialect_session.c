/*  pl_dialect_session — the session protocol at /ws (PROTOCOL.md §1).

    Parsing is table-driven: one row per client message type, one column per
    argument with its JSON name, envelope field, kind and bounds. Rendering is
    one switch over the envelope types this dialect shows. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pl_dialect.h"
#include "pl_err.h"
#include "pl_limits.h"
#include "pl_util.h"
#include "pl_version.h"

typedef enum { J_STR, J_ID, J_KIND, J_TEXT, J_INT, J_NUM } s_jkind_t;

typedef struct {
    const char *json;
    pl_field_t field;
    s_jkind_t kind;
    bool required;
    double min, max; /* J_INT, J_NUM */
} s_arg_t;

typedef struct {
    const char *type;
    pl_msg_t msg;
    int flag; /* -1: none; 0/1: sets FLAG (typing_stop/start) */
    s_arg_t args[7];
} s_rule_t;

#define SESSION_ARG                                                                                                    \
    {                                                                                                                  \
        "session_id", PL_F_SESSION, J_ID, false, 0, 0                                                                  \
    }

static const s_rule_t s_rules[] = {
    {"create_session",
     PL_MSG_CREATE,
     -1,
     {{"model_id", PL_F_MODEL, J_STR, false, 0, 0},
      {"kind", PL_F_KIND, J_KIND, false, 0, 0},
      {"name", PL_F_NAME, J_STR, false, 0, 0},
      {"system_prompt", PL_F_SYSTEM, J_TEXT, false, 0, 0}}},
    {"join_session",
     PL_MSG_JOIN,
     -1,
     {{"session_id", PL_F_SESSION, J_ID, true, 0, 0}, {"last_seq", PL_F_LASTSEQ, J_INT, false, 0, 9007199254740991.0}}},
    {"leave_session", PL_MSG_LEAVE, -1, {SESSION_ARG}},
    {"chat",
     PL_MSG_CHAT,
     -1,
     {{"message", PL_F_TEXT, J_TEXT, true, 0, 0},
      SESSION_ARG,
      {"model_id", PL_F_MODEL, J_STR, false, 0, 0},
      {"temperature", PL_F_TEMP, J_NUM, false, 0, 2},
      {"max_tokens", PL_F_MAXTOK, J_INT, false, 1, 1000000},
      {"system_prompt", PL_F_SYSTEM, J_TEXT, false, 0, 0}}},
    {"typing_start", PL_MSG_TYPING, 1, {SESSION_ARG}},
    {"typing_stop", PL_MSG_TYPING, 0, {SESSION_ARG}},
    {"cancel", PL_MSG_CANCEL, -1, {SESSION_ARG}},
    {"read", PL_MSG_READ, -1, {{"message_id", PL_F_MSGID, J_ID, true, 0, 0}, SESSION_ARG}},
    {"ping", PL_MSG_PING, -1, {{NULL, 0, 0, false, 0, 0}}},
};

/* Turns env into an ERROR envelope (keeping CID) and returns -code. */
static int
s_fail(pl_env_t *env, int code, const char *fmt, const char *arg)
{
    char *cid = env->cid;
    env->cid = NULL;
    pl_env_reset(env);
    env->type = PL_MSG_ERROR;
    if (cid) {
        env->cid = cid;
        env->present |= 1ull << PL_F_CID;
    }
    char text[256];
    snprintf(text, sizeof text, fmt, arg ? arg : "");
    pl_env_set_i64(env, PL_F_CODE, code);
    pl_env_set_str(env, PL_F_TEXT, text);
    return -code;
}

static bool
s_blank(const char *s)
{
    for (; *s; s++)
        if (*s != ' ' && *s != '\t' && *s != '\n' && *s != '\r')
            return false;
    return true;
}

static int
s_take_arg(const s_arg_t *a, const cJSON *v, const pl_dialect_limits_t *lim, pl_env_t *env)
{
    switch (a->kind) {
    case J_STR:
    case J_ID:
    case J_KIND:
    case J_TEXT: {
        if (!cJSON_IsString(v))
            return s_fail(env, PL_E_BAD_FRAME, "\"%s\" must be a string", a->json);
        const char *s = v->valuestring;
        size_t n = strlen(s);
        if (a->kind == J_TEXT && n > lim->max_message)
            return s_fail(env, PL_E_TOO_LARGE, "\"%s\" is longer than the limit", a->json);
        if (a->kind == J_STR && n > PL_NAME_MAX)
            return s_fail(env, PL_E_BAD_FRAME, "\"%s\" is too long", a->json);
        if (a->kind == J_ID && !pl_id_valid(s))
            return s_fail(env, PL_E_BAD_FRAME, "\"%s\" is not a valid id", a->json);
        if (a->kind == J_KIND && strcmp(s, "private") != 0 && strcmp(s, "shared") != 0 && strcmp(s, "group") != 0)
            return s_fail(env, PL_E_BAD_FRAME, "\"%s\" must be private, shared or group", a->json);
        if (a->field == PL_F_TEXT && s_blank(s))
            return s_fail(env, PL_E_EMPTY_MESSAGE, "the message is empty%s", NULL);
        if (pl_env_set_str(env, a->field, s) != 0)
            return s_fail(env, PL_E_INTERNAL, "out of memory%s", NULL);
        return 0;
    }
    case J_INT:
    case J_NUM: {
        if (!cJSON_IsNumber(v))
            return s_fail(env, PL_E_BAD_FRAME, "\"%s\" must be a number", a->json);
        double d = v->valuedouble;
        if (!isfinite(d) || d < a->min || d > a->max || (a->kind == J_INT && d != floor(d)))
            return s_fail(env, PL_E_BAD_FRAME, "\"%s\" is out of range", a->json);
        if (a->kind == J_INT)
            pl_env_set_i64(env, a->field, (int64_t) d);
        else
            pl_env_set_f64(env, a->field, d);
        return 0;
    }
    }
    return s_fail(env, PL_E_INTERNAL, "bad rule%s", NULL);
}

/* Keeps the client's `id` (a scalar) as raw JSON for echoing. */
static int
s_take_cid(const cJSON *id, pl_env_t *env)
{
    if (!id)
        return 0;
    if (cJSON_IsNull(id))
        return 0;
    if (!(cJSON_IsString(id) || cJSON_IsNumber(id) || cJSON_IsBool(id)))
        return s_fail(env, PL_E_BAD_FRAME, "\"id\" must be a string, a number or a boolean%s", NULL);
    if (cJSON_IsString(id) && strlen(id->valuestring) > PL_CID_MAX)
        return s_fail(env, PL_E_BAD_FRAME, "\"id\" is too long%s", NULL);
    char *raw = cJSON_PrintUnformatted(id);
    if (!raw)
        return s_fail(env, PL_E_INTERNAL, "out of memory%s", NULL);
    int rc = pl_env_set_str(env, PL_F_CID, raw);
    cJSON_free(raw);
    return rc == 0 ? 0 : s_fail(env, PL_E_INTERNAL, "out of memory%s", NULL);
}

/* True when the JSON text holds a \u0000 escape (an odd run of backslashes
   before "u0000"): cJSON would cut the string there, silently changing it. */
static bool
s_has_nul_escape(const char *buf, size_t len)
{
    for (size_t i = 0; i + 6 <= len; i++) {
        if (buf[i] != '\\' || memcmp(buf + i + 1, "u0000", 5) != 0)
            continue;
        size_t run = 0;
        while (run < i && buf[i - 1 - run] == '\\')
            run++;
        if (run % 2 == 0)
            return true;
    }
    return false;
}

/* Parses a frame; with `as_type`, the object's own "type" is ignored and
   the rule of `as_type` applies (HTTP bodies that mirror a frame). */
static int
s_parse(const char *buf, size_t len, const char *as_type, const pl_dialect_limits_t *lim, pl_env_t *env)
{
    pl_env_init(env, PL_MSG_ERROR);
    /* A NUL byte is never valid JSON text, but cJSON skips it as whitespace
       and cuts strings at it ("a\0b" would be read as "a"). */
    if (buf && len && memchr(buf, '\0', len))
        return s_fail(env, PL_E_BAD_JSON, "the frame is not valid JSON%s", NULL);
    const char *end = NULL;
    if (s_has_nul_escape(buf, len))
        return s_fail(env, PL_E_BAD_FRAME, "strings must not contain \\u0000%s", NULL);
    cJSON *root = cJSON_ParseWithLengthOpts(buf, len, &end, 0);
    if (!root)
        return s_fail(env, PL_E_BAD_JSON, "the frame is not valid JSON%s", NULL);
    int rc = 0;
    while (end && end < buf + len && (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r'))
        end++;
    if (!end || end != buf + len) {
        rc = s_fail(env, PL_E_BAD_JSON, "trailing bytes after the JSON value%s", NULL);
        goto out;
    }
    if (!cJSON_IsObject(root)) {
        rc = s_fail(env, PL_E_BAD_FRAME, "a frame must be a JSON object%s", NULL);
        goto out;
    }
    rc = s_take_cid(cJSON_GetObjectItemCaseSensitive(root, "id"), env);
    if (rc != 0)
        goto out;
    const char *type_name = as_type;
    if (!type_name) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(root, "type");
        if (!type) {
            rc = s_fail(env, PL_E_BAD_FRAME, "a frame needs a \"type\"%s", NULL);
            goto out;
        }
        if (!cJSON_IsString(type)) {
            rc = s_fail(env, PL_E_BAD_FRAME, "\"type\" must be a string%s", NULL);
            goto out;
        }
        type_name = type->valuestring;
    }
    const s_rule_t *rule = NULL;
    for (size_t i = 0; i < sizeof s_rules / sizeof s_rules[0]; i++)
        if (strcmp(s_rules[i].type, type_name) == 0)
            rule = &s_rules[i];
    if (!rule) {
        char t[40];
        size_t n = strlen(type_name);
        if (n > 32) { /* cut at a character boundary: the frame must stay UTF-8 */
            n = 32;
            while (n > 0 && ((unsigned char) type_name[n] & 0xC0) == 0x80)
                n--;
        }
        snprintf(t, sizeof t, "%.*s", (int) n, type_name);
        rc = s_fail(env, PL_E_UNKNOWN_TYPE, "unknown type \"%s\"", t);
        goto out;
    }
    env->type = rule->msg;
    if (rule->flag >= 0)
        pl_env_set_bool(env, PL_F_FLAG, rule->flag == 1);
    for (const s_arg_t *a = rule->args; a < rule->args + 7 && a->json; a++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, a->json);
        if (!v || cJSON_IsNull(v)) {
            if (a->required) {
                char what[96];
                snprintf(what, sizeof what, "%s needs \"%s\"", rule->type, a->json);
                rc = s_fail(env, PL_E_MISSING_FIELD, "%s", what);
                goto out;
            }
            continue;
        }
        rc = s_take_arg(a, v, lim, env);
        if (rc != 0)
            goto out;
    }
out:
    cJSON_Delete(root);
    return rc;
}

int
pl_session_parse(const char *buf, size_t len, const pl_dialect_limits_t *lim, pl_env_t *env)
{
    return s_parse(buf, len, NULL, lim, env);
}

int
pl_session_parse_as(const char *buf, size_t len, const char *type, const pl_dialect_limits_t *lim, pl_env_t *env)
{
    return s_parse(buf, len, type, lim, env);
}

/* ---- render ---- */

static void
s_add_str(cJSON *o, const char *k, const char *v)
{
    cJSON_AddStringToObject(o, k, v ? v : "");
}

static void
s_add_conn(cJSON *o, const char *k, uint64_t conn)
{
    char name[24];
    pl_conn_name(conn, name, sizeof name);
    cJSON_AddStringToObject(o, k, name);
}

static void
s_add_cid(cJSON *o, const pl_env_t *env, bool null_if_absent)
{
    cJSON *raw = pl_env_has(env, PL_F_CID) ? cJSON_CreateRaw(env->cid) : NULL;
    if (raw)
        cJSON_AddItemToObject(o, "id", raw);
    else if (null_if_absent)
        cJSON_AddNullToObject(o, "id");
}

static cJSON *
s_update(cJSON *o, const char *update_type)
{
    s_add_str(o, "type", "session_update");
    s_add_str(o, "update_type", update_type);
    return o;
}

cJSON *
pl_session_message_json(const pl_histent_t *e)
{
    cJSON *m = cJSON_CreateObject();
    if (!m)
        return NULL;
    s_add_str(m, "id", e->id);
    s_add_str(m, "role", e->role);
    s_add_str(m, "content", e->text);
    if (e->conn && e->conn[0])
        s_add_str(m, "connection_id", e->conn);
    cJSON_AddNumberToObject(m, "timestamp", e->ts);
    if (e->role && strcmp(e->role, "assistant") == 0)
        s_add_str(m, "finish_reason", pl_finish_name(e->finish));
    return m;
}

static void
s_add_event(cJSON *o, const pl_env_t *env)
{
    s_add_str(o, "session_id", env->session);
    cJSON_AddNumberToObject(o, "seq", (double) env->seq);
}

/* A JSON string as cJSON_PrintUnformatted writes it: ", \\ and the control
   characters escaped (\b \f \n \r \t, others \u00xx), the rest as is.
   `p` has room for 2 + 6 x strlen(s) bytes. */
static char *
s_put_str(char *p, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    *p++ = '"';
    for (const unsigned char *c = (const unsigned char *) (s ? s : ""); *c; c++) {
        if (*c >= 32 && *c != '"' && *c != '\\') {
            *p++ = (char) *c;
            continue;
        }
        *p++ = '\\';
        switch (*c) {
        case '"':
            *p++ = '"';
            break;
        case '\\':
            *p++ = '\\';
            break;
        case '\b':
            *p++ = 'b';
            break;
        case '\f':
            *p++ = 'f';
            break;
        case '\n':
            *p++ = 'n';
            break;
        case '\r':
            *p++ = 'r';
            break;
        case '\t':
            *p++ = 't';
            break;
        default:
            memcpy(p, "u00", 3);
            p[3] = hex[*c >> 4];
            p[4] = hex[*c & 15];
            p += 5;
        }
    }
    *p++ = '"';
    return p;
}

/* The chunk frame: the one rendered most (once per broadcast, one per word of
   every answer), written straight into one buffer. Through cJSON it cost an
   allocation per field, ~10 % of the edge thread in fan-out (perf). The bytes
   are those of the cJSON path (test_dialect_session holds it to that); NULL
   for numbers cJSON would write another way (it writes 0 <= n < 10^15 as
   %lld), which then go the cJSON way. */
static char *
s_render_chunk(const pl_env_t *env, size_t *len)
{
    const int64_t big = 1000000000000000LL;
    if (env->number < 0 || env->number >= big || env->seq < 0 || env->seq >= big)
        return NULL;
    size_t cap = 160;
    for (const char *s[] = {env->text, env->respid, env->session}, **i = s; i < s + 3; i++)
        cap += 2 + 6 * (*i ? strlen(*i) : 0);
    char *out = malloc(cap), *p = out;
    if (!out)
        return NULL;
    p = s_put_str(p + sprintf(p, "{\"type\":\"chunk\",\"text\":"), env->text);
    p += sprintf(p, ",\"chunk_number\":%lld,\"is_final\":%s,\"response_id\":", (long long) env->number,
                 env->flag ? "true" : "false");
    p = s_put_str(p, env->respid);
    p = s_put_str(p + sprintf(p, ",\"session_id\":"), env->session);
    p += sprintf(p, ",\"seq\":%lld}", (long long) env->seq);
    if (len)
        *len = (size_t) (p - out);
    return out;
}

char *
pl_session_render(const pl_env_t *env, size_t *len)
{
    char *fast = env->type == PL_MSG_EV_CHUNK ? s_render_chunk(env, len) : NULL;
    if (fast)
        return fast;
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    bool event = env->type >= PL_MSG_EV_MESSAGE_ADDED && env->type <= PL_MSG_EV_DELETED;
    switch (env->type) {
    case PL_MSG_CONNECTED: {
        s_add_str(o, "type", "connected");
        s_add_conn(o, "connection_id", env->conn);
        s_add_str(o, "message", "Connected!");
        cJSON *info = cJSON_AddObjectToObject(o, "server_info");
        s_add_str(info, "name", PL_NAME);
        s_add_str(info, "version", PL_VERSION);
        s_add_str(info, "model", env->model);
        s_add_str(info, "auth", "off");
        break;
    }
    case PL_MSG_PONG:
        s_add_str(o, "type", "pong");
        s_add_cid(o, env, false);
        break;
    case PL_MSG_ERROR:
        s_add_str(o, "type", "error");
        s_add_str(o, "code", pl_err_name((int) env->code));
        s_add_str(o, "message", env->text ? env->text : pl_strerror((int) env->code));
        if (pl_env_has(env, PL_F_SESSION))
            s_add_str(o, "session_id", env->session);
        s_add_cid(o, env, false);
        break;
    case PL_MSG_SESSION_CREATED:
    case PL_MSG_SESSION_JOINED:
        s_add_str(o, "type", env->type == PL_MSG_SESSION_CREATED ? "session_created" : "session_joined");
        s_add_str(o, "session_id", env->session);
        if (env->type == PL_MSG_SESSION_JOINED)
            cJSON_AddNumberToObject(o, "message_count", (double) env->count);
        cJSON_AddNumberToObject(o, "seq", (double) env->seq);
        s_add_str(o, "model", env->model);
        s_add_str(o, "kind", env->kind);
        s_add_str(o, "name", env->name);
        cJSON_AddNumberToObject(o, "members", (double) env->members);
        if (pl_env_has(env, PL_F_REPLAYED))
            cJSON_AddNumberToObject(o, "replayed", (double) env->replayed);
        if (pl_env_has(env, PL_F_GAP))
            cJSON_AddBoolToObject(o, "gap", env->gap);
        break;
    case PL_MSG_HISTORY: {
        s_add_str(o, "type", "history");
        s_add_str(o, "session_id", env->session);
        cJSON_AddNumberToObject(o, "seq", (double) env->seq);
        cJSON_AddNumberToObject(o, "message_count", (double) env->count);
        cJSON *msgs = cJSON_AddArrayToObject(o, "messages");
        for (size_t i = 0; msgs && i < env->hist.n; i++)
            cJSON_AddItemToArray(msgs, pl_session_message_json(&env->hist.v[i]));
        cJSON_AddBoolToObject(o, "truncated", env->flag);
        break;
    }
    case PL_MSG_SESSION_LEFT:
        s_add_str(o, "type", "session_left");
        s_add_str(o, "session_id", env->session);
        break;
    case PL_MSG_DELIVERY:
        s_add_str(o, "type", "delivery_confirmation");
        s_add_str(o, "message_id", env->msgid);
        s_add_cid(o, env, true);
        s_add_str(o, "status", "stored");
        s_add_str(o, "session_id", env->session);
        break;
    case PL_MSG_EV_RECEIPT:
        s_add_str(o, "type", "delivery_confirmation");
        s_add_str(o, "message_id", env->msgid);
        s_add_str(o, "status", "read");
        s_add_conn(o, "reader", env->conn);
        cJSON_AddNumberToObject(o, "timestamp", env->ts);
        break;
    case PL_MSG_EV_MESSAGE_ADDED: {
        s_update(o, "message_added");
        cJSON_AddNumberToObject(o, "message_count", (double) env->count);
        if (env->hist.n > 0)
            cJSON_AddItemToObject(o, "message", pl_session_message_json(&env->hist.v[0]));
        break;
    }
    case PL_MSG_EV_STATUS:
        s_add_str(o, "type", "status");
        s_add_str(o, "message", "Generating response...");
        cJSON_AddNumberToObject(o, "context_messages", (double) env->count);
        break;
    case PL_MSG_EV_RESPONSE_START:
        s_add_str(o, "type", "response_start");
        cJSON_AddNullToObject(o, "total_length");
        s_add_str(o, "response_id", env->respid);
        s_add_str(o, "model", env->model);
        break;
    case PL_MSG_EV_CHUNK:
        s_add_str(o, "type", "chunk");
        s_add_str(o, "text", env->text);
        cJSON_AddNumberToObject(o, "chunk_number", (double) env->number);
        cJSON_AddBoolToObject(o, "is_final", env->flag);
        s_add_str(o, "response_id", env->respid);
        break;
    case PL_MSG_EV_RESPONSE_DONE: {
        s_add_str(o, "type", "response_complete");
        cJSON_AddNumberToObject(o, "total_chunks", (double) env->number);
        cJSON_AddNumberToObject(o, "processing_time", round(env->duration * 1e6) / 1e6);
        cJSON_AddNumberToObject(o, "message_count", (double) env->count);
        s_add_str(o, "response_id", env->respid);
        s_add_str(o, "finish_reason", pl_finish_name(env->finish));
        s_add_str(o, "model", env->model);
        cJSON *u = cJSON_AddObjectToObject(o, "usage");
        cJSON_AddNumberToObject(u, "prompt_tokens", (double) env->prompt_tokens);
        cJSON_AddNumberToObject(u, "completion_tokens", (double) env->completion_tokens);
        if (pl_env_has(env, PL_F_COST))
            cJSON_AddNumberToObject(o, "cost_usd", env->cost);
        if (pl_env_has(env, PL_F_TEXT))
            s_add_str(o, "error", env->text);
        break;
    }
    case PL_MSG_EV_MODEL_ERROR:
        s_add_str(o, "type", "error");
        s_add_str(o, "code", "MODEL_ERROR");
        s_add_str(o, "message", env->text ? env->text : "the model failed");
        if (pl_env_has(env, PL_F_STATUS))
            cJSON_AddNumberToObject(o, "status", (double) env->status);
        if (pl_env_has(env, PL_F_RETRY))
            cJSON_AddNumberToObject(o, "retry_after", (double) env->retry_after);
        s_add_str(o, "response_id", env->respid);
        break;
    case PL_MSG_EV_TYPING:
        s_update(o, "user_typing");
        cJSON_AddBoolToObject(o, "typing", env->flag);
        s_add_conn(o, "connection_id", env->conn);
        break;
    case PL_MSG_EV_MEMBER:
        s_update(o, env->flag ? "member_joined" : "member_left");
        s_add_conn(o, "connection_id", env->conn);
        cJSON_AddNumberToObject(o, "members", (double) env->members);
        break;
    case PL_MSG_EV_CLEARED:
        s_update(o, "history_cleared");
        cJSON_AddNumberToObject(o, "message_count", 0);
        break;
    case PL_MSG_EV_DELETED:
        s_update(o, "session_deleted");
        break;
    default:
        cJSON_Delete(o);
        return NULL;
    }
    if (event)
        s_add_event(o, env);
    char *out = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (out && len)
        *len = strlen(out);
    return out;
}
