/*  pl_dialect — JSON dialects: client frames to envelopes and back.

    Only dialect modules (and pl_http_json) include cJSON. A dialect parses
    each frame once, validates every field, and either yields the envelope to
    route or an ERROR envelope to send back; it renders outbound envelopes as
    JSON text for its clients, or NULL for envelopes it does not show. */
#ifndef PL_DIALECT_H
#define PL_DIALECT_H

#include <stddef.h>

#include "pl_envelope.h"

typedef struct {
    size_t max_message; /* longest chat message / system prompt, bytes */
} pl_dialect_limits_t;

/* The session protocol at /ws (PROTOCOL.md §1).

   Parses one text frame of `len` bytes into `env` (uninitialised). Returns 0
   with env->type the client's request (CONN is left for the caller), or a
   negative pl_err with env an ERROR envelope (CODE, TEXT, and CID when the
   frame carried an `id`) ready to render back. Never crashes on any bytes. */
int pl_session_parse(const char *buf, size_t len, const pl_dialect_limits_t *lim, pl_env_t *env);

/* Like pl_session_parse, but applies the rule of message `type` whatever the
   object's own "type" (HTTP bodies that mirror a frame, e.g. POST
   /sessions/new as create_session). */
int pl_session_parse_as(const char *buf, size_t len, const char *type, const pl_dialect_limits_t *lim,
                        pl_env_t *env);

/* Renders `env` as a session-protocol JSON frame. Returns a malloc'd,
   NUL-terminated string (caller frees) and its length, or NULL when the
   envelope has no session-protocol form (or on out-of-memory). */
char *pl_session_render(const pl_env_t *env, size_t *len);

/* One history message as JSON ({id, role, content, connection_id?,
   timestamp, finish_reason for answers}): the one form every frame and HTTP
   reply uses. A cJSON object (caller owns), or NULL. */
struct cJSON;
struct cJSON *pl_session_message_json(const pl_histent_t *e);

#endif
