/*  pl_err — Parley's error codes.

    One table, two uses: the negative return codes of every pl_ function
    (0 is success, -PL_E_x is failure) and the `code` strings clients see in
    error frames (PROTOCOL.md "Error codes"). pl_err_name() gives the wire
    name, pl_strerror() a human sentence. */
#ifndef PL_ERR_H
#define PL_ERR_H

#define PL_ERRORS(X)                                                         \
    X(OK,            "OK",            "success")                             \
    X(BAD_JSON,      "BAD_JSON",      "the frame is not valid JSON")         \
    X(BAD_FRAME,     "BAD_FRAME",     "malformed frame")                     \
    X(UNKNOWN_TYPE,  "UNKNOWN_TYPE",  "unknown message type")                \
    X(MISSING_FIELD, "MISSING_FIELD", "a required field is missing")         \
    X(EMPTY_MESSAGE, "EMPTY_MESSAGE", "the message is empty")                \
    X(TOO_LARGE,     "TOO_LARGE",     "too large")                           \
    X(AUTH_REQUIRED, "AUTH_REQUIRED", "authentication required")             \
    X(AUTH_FAILED,   "AUTH_FAILED",   "authentication failed")               \
    X(FORBIDDEN,     "FORBIDDEN",     "forbidden")                           \
    X(NOT_FOUND,     "NOT_FOUND",     "not found")                           \
    X(RATE_LIMIT,    "RATE_LIMIT",    "rate limit exceeded")                 \
    X(BUSY,          "BUSY",          "busy")                                \
    X(MODEL_ERROR,   "MODEL_ERROR",   "the model failed")                    \
    X(UPLOAD_ERROR,  "UPLOAD_ERROR",  "upload failed")                       \
    X(INTERNAL,      "INTERNAL",      "internal error")                      \
    X(NOMEM,         "INTERNAL",      "out of memory")                       \
    X(AGAIN,         "BUSY",          "try again")

typedef enum {
#define X(id, wire, text) PL_E_##id,
    PL_ERRORS(X)
#undef X
    PL_E_COUNT_
} pl_err_t;

/* Wire name of a code (positive or negative); "INTERNAL" for unknown. */
const char *pl_err_name(int code);
/* Human sentence for a code (positive or negative). */
const char *pl_strerror(int code);
/* Code for a wire name, or -1. */
int pl_err_from_name(const char *name);

#endif
