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

/* After an unclean stop (SIGKILL, power loss) every session's seq jumps by
   this much, past any seq the dead process broadcast but had not yet stored:
   a session emits at most a few thousand events per commit window (a few
   ms), so 2^20 is far beyond it and still leaves 2^33 crashes of headroom
   below 2^53, the largest integer a JavaScript client reads exactly. */
#define PL_SEQ_CRASH_SKIP (1ll << 20)

/* Writes in one group commit before it commits early: bounds the acks held
   back and the transaction's size. */
#define PL_STORE_BATCH_MAX 20000

/* Event bytes the store sends per replay answer; a longer resume asks again
   from where it stopped. */
#define PL_REPLAY_BATCH_BYTES (1u * 1024u * 1024u)

/* Most sessions GET /sessions lists (newest first). */
#define PL_LIST_MAX 1000

/* Bytes of encoded events one session's recent ring holds, at most (besides
   --replay-ring events): bounds a busy session's memory; older events are
   resumed from the store. */
#define PL_RING_BYTES_MAX (64u * 1024u)

/* Chunk events stored as one row: a streaming answer costs the store one
   write per this many chunks instead of one per chunk. */
#define PL_CHUNKS_PER_ROW 64

/* Envelopes held for one session while it is being loaded from the store;
   past it they are answered BUSY. */
#define PL_PARKED_MAX 256

#endif
