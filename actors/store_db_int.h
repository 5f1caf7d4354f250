/*  store_db_int — what store_db's files share (store_db.c: open, the
    schema, group commit, the writes; store_db_read.c: the reads): the
    connection's struct, the table of statements and the helpers both use.
    Internal to store_db; like it, used from the store actor's thread only. */
#ifndef STORE_DB_INT_H
#define STORE_DB_INT_H

#include <sqlite3.h>
#include <stdbool.h>

#include "store_db.h"

#define S_SESSION_EXISTS "EXISTS (SELECT 1 FROM sessions WHERE id = ?1)"

/* Every statement the store runs: one row each, prepared at open
   (test_store_db checks the query plan of each). */
#define S_STMTS(X)                                                                                                     \
    X(BEGIN, "BEGIN IMMEDIATE")                                                                                        \
    X(COMMIT, "COMMIT")                                                                                                \
    X(ROLLBACK, "ROLLBACK")                                                                                            \
    X(META_GET, "SELECT value FROM meta WHERE key = ?1")                                                               \
    X(META_SET, "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")                                            \
    X(SESS_PUT, "INSERT INTO sessions (id, model, kind, name, created, system) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"        \
                " ON CONFLICT (id) DO UPDATE SET model = excluded.model, kind = excluded.kind,"                        \
                " name = excluded.name, created = excluded.created, system = excluded.system")                         \
    X(SESS_GET, "SELECT model, kind, name, created, seq, messages, system FROM sessions WHERE id = ?1")                \
    X(SESS_LIST, "SELECT id, model, kind, name, created, seq, messages, system FROM sessions"                          \
                 " ORDER BY created DESC, id DESC LIMIT ?1")                                                           \
    X(SESS_COUNT, "SELECT count(*) FROM sessions")                                                                     \
    X(SESS_EXISTS, "SELECT 1 FROM sessions WHERE id = ?1")                                                             \
    X(SESS_PRUNED, "SELECT pruned FROM sessions WHERE id = ?1")                                                        \
    X(SESS_SEQ, "UPDATE sessions SET seq = max(seq, ?2) WHERE id = ?1")                                                \
    X(SESS_MSG_ADDED, "UPDATE sessions SET messages = messages + 1 WHERE id = ?1")                                     \
    X(SESS_CLEARED, "UPDATE sessions SET messages = 0 WHERE id = ?1")                                                  \
    X(SESS_PRUNE, "UPDATE sessions SET pruned = max(pruned, ?2) WHERE id = ?1")                                        \
    X(SESS_RECOVER, "UPDATE sessions SET seq = max(seq, coalesce((SELECT max(e.seq) FROM events e"                     \
                    " WHERE e.session = sessions.id), 0)) + ?1")                                                       \
    X(SESS_OPEN_SET, "UPDATE sessions SET open_turn = ?2 WHERE id = ?1")                                             \
    X(SESS_OPEN_LIST, "SELECT id, open_turn FROM sessions WHERE open_turn > 0")                                       \
    X(SESS_DEL, "DELETE FROM sessions WHERE id = ?1")                                                                  \
    X(MSG_INSERT,                                                                                                      \
      "INSERT INTO messages (session, ord, id, role, sender, ts, finish, text)"                                        \
      " SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8 WHERE " S_SESSION_EXISTS " ON CONFLICT (session, ord) DO NOTHING")       \
    X(MSG_UPDATE, "UPDATE messages SET id = ?3, role = ?4, sender = ?5, ts = ?6, finish = ?7, text = ?8"               \
                  " WHERE session = ?1 AND ord = ?2")                                                                  \
    X(MSG_NEWEST, "SELECT ord, id, role, sender, ts, finish, text FROM messages WHERE session = ?1"                    \
                  " ORDER BY ord DESC LIMIT ?2")                                                                       \
    X(MSG_DEL, "DELETE FROM messages WHERE session = ?1")                                                              \
    X(EVT_PUT, "INSERT OR REPLACE INTO events (session, seq, type, respid, body) VALUES (?1, ?2, ?3, ?4, ?5)")         \
    X(EVT_AFTER, "SELECT seq, type, body FROM events WHERE session = ?1 AND seq > ?2 ORDER BY seq")                    \
    X(EVT_PRUNE, "DELETE FROM events WHERE session = ?1 AND seq <= ?2")                                                \
    X(EVT_DEL, "DELETE FROM events WHERE session = ?1")                                                                \
    X(MEM_PUT, "INSERT INTO members (session, member, joined) SELECT ?1, ?2, ?3 WHERE " S_SESSION_EXISTS               \
               " ON CONFLICT (session, member) DO NOTHING")                                                            \
    X(MEM_DEL, "DELETE FROM members WHERE session = ?1")                                                               \
    X(RCP_PUT, "INSERT INTO receipts (session, message, reader, ts) SELECT ?1, ?2, ?3, ?4 WHERE " S_SESSION_EXISTS     \
               " ON CONFLICT (session, message, reader) DO NOTHING")                                                   \
    X(RCP_DEL, "DELETE FROM receipts WHERE session = ?1")

typedef enum {
#define X(id, sql) S_##id,
    S_STMTS(X)
#undef X
        S_COUNT_
} s_stmt_t;

struct pl_store_db {
    sqlite3 *db;
    sqlite3_stmt *stmt[S_COUNT_];
    bool in_batch;   /* a batch (explicit or one write's own) is open */
    bool batch_lost; /* a write failed: the open batch was rolled back */
    bool in_fn;      /* a list / events callback is running */
};

/* 0 when `db` can be used now: open, and not called back into from a
   list / events callback (its statement is mid-step); else refused, logged. */
int store_db_enter(const pl_store_db_t *db, const char *op);
/* Logs a refused argument; returns `rc`. */
int store_db_refuse(const char *op, const char *session, int rc);
/* Logs the connection's last SQLite error for `op`; returns it as -PL_E_x. */
int store_db_log_sqlite(pl_store_db_t *self, const char *op, const char *session);
/* 0 when `s` is an id: 1..PL_ID_MAX bytes; else -PL_E_MISSING_FIELD or -PL_E_TOO_LARGE. */
int store_db_check_id(const char *s);
/* Resets a statement after use and clears its (borrowed) bindings. */
void store_db_done(sqlite3_stmt *st);

#endif
