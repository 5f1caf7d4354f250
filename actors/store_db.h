/*  store_db — the SQLite database behind the store actor.

    Plain synchronous functions over one sqlite3 connection, used only from
    the store actor's thread (actors/store.c): no ZeroMQ, no envelopes
    beyond the shared value types. The store actor batches writes: it calls
    pl_store_db_begin() before the first write of a batch and
    pl_store_db_commit() a few milliseconds later (group commit); reads issued
    inside an open batch see its writes. A batch commits all its writes or
    none: a write whose SQL fails rolls the batch back, the writes after it
    are refused and the commit returns < 0. A write outside a batch is a
    transaction of its own.

    Schema (versioned with PRAGMA user_version; migrations run in order at
    open, each in its own transaction; a database newer than this binary is
    refused):
      sessions(id PK, model, kind, name, system NULL, created, seq, messages,
               pruned, open_turn)
        seq: the highest event seq known durable for the session (raised by
        every put_event, and by pl_store_db_recover); messages: count of its
        rows in messages; pruned: the highest event seq deleted by retention
        (0: none), so a resume from before it has a gap; open_turn: the seq
        of the response_start of an answer still streaming (0: none).
      messages(session, ord, id, role, text, sender, ts, finish) UNIQUE(session,ord)
        history order is ord: a user message's ord is 2 x the seq of its
        message_added event; its answer's ord is that + 1.
        finish: NULL for user messages, else a pl_finish_t.
      events(session, seq, type, respid, body) UNIQUE(session,seq)
        one persistent session event (msgpack envelope bytes, opaque here);
        respid is the response id for turn events, else NULL.
      members(session, member, joined) PK(session,member)
        who joined, when (informational).
      receipts(session, message, reader, ts)  PK(session,message,reader)
      meta(key PK, value)                     'clean' = '1' after a clean close
    messages and events are rowid tables (written in arrival order) with a
    UNIQUE index on their key; the others are clustered on theirs (WITHOUT
    ROWID). See store_db.c.
    WAL mode; synchronous FULL (or NORMAL when asked); busy_timeout set. */
#ifndef STORE_DB_H
#define STORE_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../protocol/pl_envelope.h"

typedef struct pl_store_db pl_store_db_t;

/* A session row. Strings owned by the row when returned by a read
   (pl_store_session_free), borrowed when passed to a write. */
typedef struct {
    char *id, *model, *kind, *name;
    char *system; /* NULL: none */
    double created;
    int64_t seq;      /* see the schema note */
    int64_t messages; /* total stored messages */
} pl_store_session_t;

void pl_store_session_free(pl_store_session_t *s);

/* One stored message: the history entry, its order key and how an answer
   ended (finish < 0 for user messages). */
typedef struct {
    pl_histent_t e;
    int64_t ord;
    int64_t finish;
} pl_store_msg_t;

/* Opens (creating if absent) and migrates `path`. `sync_full` false selects
   synchronous=NORMAL. On failure returns NULL and writes a one-line reason
   to err. *was_clean tells whether the previous process closed it cleanly
   (a new database counts as clean). After a successful open the database is
   marked not clean until pl_store_db_close(…, true). */
pl_store_db_t *pl_store_db_open(const char *path, bool sync_full, bool *was_clean, char *err, size_t errlen);
/* Commits an open batch, marks the database clean when `clean` (and that
   commit worked), closes. */
void pl_store_db_close(pl_store_db_t **db_p, bool clean);

/* After an unclean stop: in one transaction, for every session set
   seq = max(seq, highest stored event seq) + skip, so that seq numbers a
   crashed process handed out but never stored are never reused. Returns
   the number of sessions updated, or < 0. */
long pl_store_db_recover(pl_store_db_t *db, int64_t skip);

/* Group commit. begin is a no-op when a batch is open; commit when none. 0 or < 0. */
int pl_store_db_begin(pl_store_db_t *db);
int pl_store_db_commit(pl_store_db_t *db);
bool pl_store_db_in_batch(const pl_store_db_t *db);

/* ---- writes (inside a batch) — 0, or < 0 with the reason logged ----
   A write naming a session that is not stored writes nothing and returns
   -PL_E_NOT_FOUND (not logged). Refused arguments: -PL_E_MISSING_FIELD (a
   NULL or empty id), -PL_E_TOO_LARGE (an id over PL_ID_MAX, a model, kind,
   name or role over PL_NAME_MAX, a text or body over PL_ENV_MAX),
   -PL_E_BAD_FRAME (a negative seq or ord, an unknown finish). */

/* Inserts the session, or updates its metadata when it exists. s->seq and
   s->messages are not written: a new session starts at 0 and put_event /
   put_message keep them. */
int pl_store_db_put_session(pl_store_db_t *db, const pl_store_session_t *s);
/* Inserts or replaces message (session, m->ord); keeps sessions.messages. */
int pl_store_db_put_message(pl_store_db_t *db, const char *session, const pl_store_msg_t *m);
/* Inserts or replaces event (session, seq); raises sessions.seq to seq. */
int pl_store_db_put_event(pl_store_db_t *db, const char *session, int64_t seq, int type, const char *respid,
                          const void *body, size_t len);
/* Records that the answer whose response_start has `seq` is streaming
   (0: none is), so that recovery after a crash can close it. */
int pl_store_db_set_open_turn(pl_store_db_t *db, const char *session, int64_t seq);

/* Deletes events of `session` with seq <= upto (retention); raises
   sessions.pruned to upto. */
int pl_store_db_prune_events(pl_store_db_t *db, const char *session, int64_t upto);
/* A member or receipt already stored keeps its first time. */
int pl_store_db_put_member(pl_store_db_t *db, const char *session, const char *member, double joined);
int pl_store_db_put_receipt(pl_store_db_t *db, const char *session, const char *message, const char *reader,
                            double ts);
/* Deletes the session's messages and receipts (messages = 0); its events and
   seq stay. */
int pl_store_db_clear(pl_store_db_t *db, const char *session);
/* Deletes the session and everything of it. */
int pl_store_db_delete(pl_store_db_t *db, const char *session);

/* ---- reads ---- */

/* Loads session `id` and its newest `max_history` messages (oldest first)
   into *s, *msgs and *n (caller frees: pl_store_session_free, and
   pl_store_msgs_free). 0, -PL_E_NOT_FOUND, or < 0. */
int pl_store_db_load(pl_store_db_t *db, const char *id, size_t max_history, pl_store_session_t *s,
                     pl_store_msg_t **msgs, size_t *n);
void pl_store_msgs_free(pl_store_msg_t *msgs, size_t n);

/* Calls fn for each stored event of `session` with seq > after, in seq
   order, stopping after the event that brings the total body bytes to
   max_bytes or more (so at least one is given) or when fn returns nonzero.
   fn must not call into db (such calls return -PL_E_BUSY). Returns the
   number of events given, or < 0. */
typedef int (*pl_store_event_fn)(int64_t seq, int type, const void *body, size_t len, void *arg);
long pl_store_db_events(pl_store_db_t *db, const char *session, int64_t after, size_t max_bytes,
                        pl_store_event_fn fn, void *arg);
/* True when a resume of `session` from `after` has a gap: events after it
   were pruned (after < sessions.pruned). False for a session not stored;
   true on an error, so that the caller resends history rather than risk
   a silent gap. */
bool pl_store_db_events_gap(pl_store_db_t *db, const char *session, int64_t after);

/* Lists up to `limit` sessions, newest first (by created). fn gets a
   borrowed row; nonzero from fn stops the listing after that row. fn must
   not call into db. Returns the number listed, or < 0. */
typedef int (*pl_store_session_fn)(const pl_store_session_t *s, void *arg);
long pl_store_db_list(pl_store_db_t *db, size_t limit, pl_store_session_fn fn, void *arg);
/* Calls fn(session, response_start seq) for every session whose answer was
   streaming when the database was last written (set_open_turn). fn gets a
   borrowed id and must not call into the database; nonzero stops. Returns
   how many were given, or < 0. */
typedef int (*pl_store_open_fn)(const char *session, int64_t start_seq, void *arg);
long pl_store_db_open_turns(pl_store_db_t *db, pl_store_open_fn fn, void *arg);
/* Number of stored sessions, or < 0. */
long pl_store_db_count(pl_store_db_t *db);

#endif
