/*  pl_vendor — the model vendors' wire formats: the request body each one
    documents for a streamed chat, the URL path, and the meaning of one
    streamed item (an SSE event's data for OpenAI and Gemini, an NDJSON line
    for Ollama). The backends (libcurl) do the I/O; this module only turns
    an envelope into bytes and bytes into a pl_vendor_event_t.

    Pure: no I/O, no global state, any thread. Untrusted bytes never crash
    it: a malformed item is refused with -PL_E_BAD_FRAME.

    Mapping choices (one place, for every backend):
    - System text: the GENERATE's `system` and every history entry of role
      "system", in that order, joined with a blank line, in each vendor's
      system position (OpenAI/Ollama: one leading {"role":"system"} message;
      Gemini: systemInstruction). Other roles: "assistant" stays (Gemini:
      "model"); anything else is "user". Entries with empty text are left
      out (Gemini refuses an empty text part; elsewhere they carry nothing).
    - temperature is sent only when present and finite; max_tokens only
      when present and > 0.
    - OpenAI finish_reason: "length" → LENGTH; "stop", "content_filter" and
      any other value → STOP, with no error (the filtered text already
      streamed is kept; the client sees a normal end).
    - Gemini finishReason: "STOP" → STOP, "MAX_TOKENS" → LENGTH, any other
      ("SAFETY", "RECITATION", ...) → ERROR with "the model stopped: REASON".
      A promptFeedback.blockReason without candidates → ERROR, done.
      Parts marked "thought": true are not answer text and are skipped.
    - Ollama done_reason "length" → LENGTH, anything else or none → STOP.
    - An in-stream error ({"error": "..."} or {"error": {"message"}}) →
      error set, finish ERROR, done.
    - Usage counts absent from a usage object count 0 (Gemini's first events
      and Ollama's done line with a cached prompt omit some). */
#ifndef PL_VENDOR_H
#define PL_VENDOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pl_envelope.h"

/* Longest error message we pass on from a vendor, in bytes: one line a
   person reads; vendor messages past this are boilerplate and links. */
#define PL_VENDOR_ERROR_MAX 200

typedef enum { PL_VENDOR_OPENAI = 0, PL_VENDOR_GEMINI, PL_VENDOR_OLLAMA, PL_VENDOR_COUNT_ } pl_vendor_t;

/* "openai" | "gemini" | "ollama" → vendor, or -1 (NULL too). */
int pl_vendor_from_name(const char *name);
/* The vendor's name; "?" for an out-of-range value. */
const char *pl_vendor_name(pl_vendor_t v);

/* The request body for GENERATE `gen` (borrowed) and the upstream model id
   (borrowed; NULL → ""). A malloc'd JSON text, the caller's to free();
   *len set when len is not NULL. NULL on OOM or an unknown vendor.
   OpenAI: {"model","messages":[system?, {"role":"user"|"assistant","content"}...],
            "stream":true,"stream_options":{"include_usage":true},
            "temperature"?,"max_tokens"?}
   Gemini: {"contents":[{"role":"user"|"model","parts":[{"text"}]}...],
            "systemInstruction"?:{"parts":[{"text"}]},
            "generationConfig"?:{"temperature"?,"maxOutputTokens"?}}
            (consecutive same-role turns stay separate entries)
   Ollama: {"model","messages":[system?, ...],"stream":true,
            "options"?:{"temperature"?,"num_predict"?}} */
char *pl_vendor_request(pl_vendor_t v, const pl_env_t *gen, const char *model_id, size_t *len);

/* The URL path after the base URL: OpenAI "/chat/completions" (the base
   ends in /v1), Gemini "/v1beta/models/{model}:streamGenerateContent?alt=sse"
   ({model} percent-encoded, a leading "models/" dropped), Ollama
   "/api/chat". Writes a NUL-terminated path into out (size bytes).
   0, -PL_E_TOO_LARGE (out then ""), or -PL_E_INTERNAL for an unknown vendor. */
int pl_vendor_path(pl_vendor_t v, const char *model_id, char *out, size_t size);

/* What one streamed item means. Owned strings: free with
   pl_vendor_event_reset(). */
typedef struct {
    char *text;     /* content delta (malloc'd), NULL when empty */
    int finish;     /* -1: none yet; else a pl_finish_t (STOP, LENGTH, ERROR) */
    bool done;      /* the stream is over (OpenAI "[DONE]", Ollama done:true,
                       Gemini a finishReason, any in-stream error) */
    bool has_usage; /* prompt_tokens/completion_tokens are set */
    int64_t prompt_tokens, completion_tokens;
    char *error; /* an in-stream error, sanitised (malloc'd), or NULL */
} pl_vendor_event_t;

/* Interprets one item of `len` bytes (borrowed). `ev` is uninitialised on
   entry and filled. 0; or -PL_E_BAD_FRAME for a malformed item (not JSON,
   not an object, wrong types, missing fields, counts not integers in
   [0, 2^53]): the caller skips and counts it, ev is then empty;
   -PL_E_NOMEM, or -PL_E_INTERNAL for an unknown vendor (ev empty). Uses
   candidates[0] / choices[0] only: we never ask for more than one. Text is
   passed on as the vendor sent it (a \u0000 escape ends a string: ours are
   C strings; bytes are not UTF-8-checked, JSON text from a vendor is). */
int pl_vendor_parse(pl_vendor_t v, const char *data, size_t len, pl_vendor_event_t *ev);
/* Frees what ev owns and empties it (finish -1). */
void pl_vendor_event_reset(pl_vendor_event_t *ev);

/* A short message for a non-2xx response `body` (borrowed, `len` bytes):
   the vendor's error message (Gemini: "STATUS: message"), or
   "HTTP <status>" when there is none. At most PL_VENDOR_ERROR_MAX bytes,
   cut at a UTF-8 boundary; control characters and invalid UTF-8 removed,
   anything shaped like an API key ("sk-...", "AIza...") replaced by
   "[redacted]". malloc'd, the caller's; NULL only on OOM. It only ever
   sees the body, never request headers. */
char *pl_vendor_error_message(pl_vendor_t v, int status, const char *body, size_t len);

#endif
