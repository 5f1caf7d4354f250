/*  pl_limits — every fixed size in Parley, named once, with its reason.
    Limits an operator may want to change are configuration (actors/pl_config.def);
    these are the compile-time ceilings and the defaults behind them. */
#ifndef PL_LIMITS_H
#define PL_LIMITS_H

/* Longest id a client may name (session ids, message ids): ids we mint are 17
   chars; clients of other servers use UUIDs (36). 64 leaves room, stays small. */
#define PL_ID_MAX 64

/* Longest model name / session name / kind we accept from a client. */
#define PL_NAME_MAX 128

/* The client's correlation `id`, kept as raw JSON text. A scalar; 128 bytes is
   ample for any UUID or number and bounds what we echo back. */
#define PL_CID_MAX 128

/* Default soft frame limit (TOO_LARGE error, connection stays): a chat message
   of 32 KiB in JSON with escapes fits. */
#define PL_DEFAULT_MAX_FRAME 65536
/* Default hard frame limit (close 1009): beyond this a frame is abuse. */
#define PL_DEFAULT_MAX_FRAME_HARD 1048576
/* Default longest chat message and system prompt, in bytes. */
#define PL_DEFAULT_MAX_MESSAGE 32768

/* An envelope larger than this is refused by the decoder: a whole session
   history of 1000 messages of 32 KiB fits with margin. */
#define PL_ENV_MAX (64u * 1024u * 1024u)
/* Most entries in one history or session list carried by one envelope. */
#define PL_ENV_LIST_MAX 100000

/* Shards per actor kind: at most this many (ids hash into them). */
#define PL_SHARDS_MAX 64
/* Worker threads: at most this many. */
#define PL_WORKERS_MAX 64

/* Most message text one GET /sessions/{id} returns: the newest messages that
   fit; the reply says "truncated". Bounds one envelope and one response. */
#define PL_HTTP_HISTORY_MAX (8u * 1024u * 1024u)

/* Largest single SSE event / NDJSON line from a model API: a streamed delta
   is tens of bytes; a final usage or error object a few KB. */
#define PL_UPSTREAM_EVENT_MAX (1024u * 1024u)

/* Longest model answer kept in history: a long-form answer is ~100 KB; past
   4 MiB the rest still streams to clients but is not stored. */
#define PL_ANSWER_MAX (4u * 1024u * 1024u)

#endif
