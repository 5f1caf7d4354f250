/*  store_db — the SQLite database behind the store actor (see store_db.h).

    One connection, used from one thread. Every statement is prepared once at
    open (the table S_STMTS in store_db_int.h, SQLITE_PREPARE_PERSISTENT)
    and reset with its bindings cleared after each use; data is only ever
    bound, never pasted into SQL. Strings are bound SQLITE_STATIC: they are
    borrowed for the one call that steps the statement.

    A batch is the unit of atomicity. A write whose SQL fails rolls back the
    whole open batch; the writes after it are refused and the commit reports
    the loss, so the store actor refuses every acknowledgement it held for
    the batch. A write outside a batch runs in a transaction of its own.

    On disk the wide columns (system, text, body) come last in their rows, so
    keys and counters read without following overflow pages. messages and
    events are rowid tables, appended to in write order, each with a UNIQUE
    index on (session, ord) / (session, seq) that every read, update and
    delete of them goes through. Their rows are large next to a page:
    clustered by session (WITHOUT ROWID), the interleaved writes of many
    sessions split pages all over both trees (measured: 2.7x fewer writes a
    second at 1,000 sessions). The price is on loads, which read about one
    table page per message instead of a few for all. The tables of small
    rows (members, receipts, meta) stay clustered. The reads are in
    store_db_read.c. */
#include "store_db_int.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../protocol/pl_err.h"
#include "../protocol/pl_limits.h"
#include "../protocol/pl_util.h"
#include "../transport/pl_log.h"

/* How long a statement waits for a lock another connection holds (an
   operator's sqlite3 shell, a backup) before failing with BUSY. */
#define S_BUSY_TIMEOUT_MS 5000

/* s_migrations[v] takes a database from user_version v to v + 1, in one
   transaction. Append only: a shipped step is never edited. */
static const char *const s_migrations[] = {
    /* 0 -> 1: the schema of store_db.h */
    "CREATE TABLE sessions (id TEXT PRIMARY KEY NOT NULL, model TEXT NOT NULL, kind TEXT NOT NULL,"
    " name TEXT NOT NULL, created REAL NOT NULL, seq INTEGER NOT NULL DEFAULT 0,"
    " messages INTEGER NOT NULL DEFAULT 0, pruned INTEGER NOT NULL DEFAULT 0,"
    " open_turn INTEGER NOT NULL DEFAULT 0, system TEXT) STRICT;"
    "CREATE INDEX sessions_created ON sessions (created, id);"
    "CREATE INDEX sessions_open ON sessions (open_turn) WHERE open_turn > 0;"
    "CREATE TABLE messages (session TEXT NOT NULL, ord INTEGER NOT NULL, id TEXT NOT NULL, role TEXT NOT NULL,"
    " sender TEXT NOT NULL, ts REAL NOT NULL, finish INTEGER, text TEXT NOT NULL) STRICT;"
    "CREATE UNIQUE INDEX messages_session_ord ON messages (session, ord);"
    "CREATE TABLE events (session TEXT NOT NULL, seq INTEGER NOT NULL, type INTEGER NOT NULL, respid TEXT,"
    " body BLOB NOT NULL) STRICT;"
    "CREATE UNIQUE INDEX events_session_seq ON events (session, seq);"
    "CREATE TABLE members (session TEXT NOT NULL, member TEXT NOT NULL, joined REAL NOT NULL,"
    " PRIMARY KEY (session, member)) STRICT, WITHOUT ROWID;"
    "CREATE TABLE receipts (session TEXT NOT NULL, message TEXT NOT NULL, reader TEXT NOT NULL, ts REAL NOT NULL,"
    " PRIMARY KEY (session, message, reader)) STRICT, WITHOUT ROWID;"
    "CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL) STRICT, WITHOUT ROWID;"
    "INSERT INTO meta (key, value) VALUES ('clean', '1');",
};
#define S_VERSION ((int) (sizeof s_migrations / sizeof s_migrations[0]))

static const struct {
    const char *name, *sql;
} s_stmt_def[S_COUNT_] = {
#define X(id, sql) {#id, sql},
    S_STMTS(X)
#undef X
};

/* ---- errors ---- */

static int
s_code(int sqlite_rc)
{
    switch (sqlite_rc & 0xff) {
    case SQLITE_NOMEM:
        return -PL_E_NOMEM;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return -PL_E_BUSY;
    case SQLITE_TOOBIG:
        return -PL_E_TOO_LARGE;
    default:
        return -PL_E_INTERNAL;
    }
}

/* Session ids are logged only when they are plain ids. */
static const char *
s_loggable(const char *session)
{
    return session && pl_id_valid(session) ? session : "-";
}

/* Logs the connection's last SQLite error for `op`; returns it as -PL_E_x. */
int
store_db_log_sqlite(pl_store_db_t *self, const char *op, const char *session)
{
    int rc = sqlite3_extended_errcode(self->db);
    char msg[160];
    snprintf(msg, sizeof msg, "%s", sqlite3_errmsg(self->db));
    for (char *p = msg; *p; p++)
        if (*p == ' ' || *p == '=')
            *p = '_'; /* the log's values are single words */
    pl_log_error("store_db", "op=%s session=%s sqlite=%d error=%s", op, s_loggable(session), rc, msg);
    return s_code(rc);
}

/* Logs a refused argument; returns `rc`. */
int
store_db_refuse(const char *op, const char *session, int rc)
{
    pl_log_error("store_db", "op=%s session=%s error=%s", op, s_loggable(session), pl_err_name(rc));
    return rc;
}

/* 0 when `db` can be used now: open, and not called back into from a
   list / events callback (its statement is mid-step). */
int
store_db_enter(const pl_store_db_t *db, const char *op)
{
    if (!db)
        return store_db_refuse(op, NULL, -PL_E_INTERNAL);
    if (db->in_fn)
        return store_db_refuse(op, NULL, -PL_E_BUSY);
    return 0;
}

/* ---- arguments ---- */

/* 0 when `s` is an id: 1..PL_ID_MAX bytes. */
int
store_db_check_id(const char *s)
{
    if (!s || !*s)
        return -PL_E_MISSING_FIELD;
    return strnlen(s, PL_ID_MAX + 1) > PL_ID_MAX ? -PL_E_TOO_LARGE : 0;
}

/* Length of optional string `s` (NULL reads as "") into *n, at most `max`. */
static int
s_check_len(const char *s, size_t max, size_t *n)
{
    *n = s ? strnlen(s, max + 1) : 0;
    return *n > max ? -PL_E_TOO_LARGE : 0;
}

static int
s_bind_str(sqlite3_stmt *st, int i, const char *s, size_t n)
{
    return sqlite3_bind_text(st, i, s ? s : "", (int) n, SQLITE_STATIC);
}

/* ---- statements ---- */

void
store_db_done(sqlite3_stmt *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

/* Rolls back the open transaction, if any; an open batch is then lost. */
static void
s_abort(pl_store_db_t *self)
{
    if (self->in_batch)
        self->batch_lost = true;
    if (sqlite3_get_autocommit(self->db))
        return;
    sqlite3_stmt *st = self->stmt[S_ROLLBACK];
    if (sqlite3_step(st) != SQLITE_DONE)
        store_db_log_sqlite(self, "rollback", NULL);
    store_db_done(st);
}

/* Steps write statement `st` to its end; `bound` is the OR of its bind
   results (SQLITE_OK is 0). Returns the rows it changed, or < 0 with the
   reason logged and the open batch rolled back. */
static int
s_run(pl_store_db_t *self, sqlite3_stmt *st, int bound, const char *op, const char *session)
{
    int rc = bound == SQLITE_OK ? sqlite3_step(st) : bound;
    if (rc != SQLITE_DONE) {
        rc = store_db_log_sqlite(self, op, session);
        store_db_done(st);
        s_abort(self);
        return rc;
    }
    store_db_done(st);
    return sqlite3_changes(self->db);
}

/* Opens the transaction of one write: none when a batch is open (refused
   when that batch is already lost), else the write's own. */
static int
s_write_begin(pl_store_db_t *self, const char *op, bool *own)
{
    *own = !self->in_batch;
    if (self->batch_lost)
        return -PL_E_INTERNAL; /* logged when the batch failed */
    if (self->in_batch) {
        if (!sqlite3_get_autocommit(self->db))
            return 0;
        self->batch_lost = true; /* SQLite rolled it back (I/O error, out of memory) */
        pl_log_error("store_db", "op=%s error=batch_rolled_back", op);
        return -PL_E_INTERNAL;
    }
    return pl_store_db_begin(self);
}

/* Ends one write begun by s_write_begin: commits its own transaction. */
static int
s_write_end(pl_store_db_t *self, bool own, int rc)
{
    if (!own)
        return rc;
    if (rc < 0 && self->batch_lost) { /* already rolled back and logged */
        self->in_batch = self->batch_lost = false;
        return rc;
    }
    int c = pl_store_db_commit(self);
    return rc < 0 ? rc : c;
}

/* ---- open and close ---- */

static void
s_self_destroy(pl_store_db_t **self_p)
{
    pl_store_db_t *self = *self_p;
    for (int i = 0; i < S_COUNT_; i++)
        sqlite3_finalize(self->stmt[i]);
    sqlite3_close_v2(self->db);
    free(self);
    *self_p = NULL;
}

/* Runs static SQL (never data) during open; writes the reason to err. */
static int
s_exec(pl_store_db_t *self, const char *sql, const char *what, char *err, size_t errlen)
{
    if (sqlite3_exec(self->db, sql, NULL, NULL, NULL) == SQLITE_OK)
        return 0;
    snprintf(err, errlen, "%s: %s", what, sqlite3_errmsg(self->db));
    return -1;
}

/* Runs a PRAGMA that answers one row; its first column into out (text)
   and *num (integer), each when given. */
static int
s_pragma(pl_store_db_t *self, const char *sql, char *out, size_t outlen, int64_t *num, char *err, size_t errlen)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(self->db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const unsigned char *v = sqlite3_column_text(st, 0);
        if (out)
            snprintf(out, outlen, "%s", v ? (const char *) v : "");
        if (num)
            *num = sqlite3_column_int64(st, 0);
    } else {
        snprintf(err, errlen, "%s: %s", sql, sqlite3_errmsg(self->db));
    }
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 0 : -1;
}

static int
s_configure(pl_store_db_t *self, char *err, size_t errlen)
{
    sqlite3_extended_result_codes(self->db, 1);
    sqlite3_busy_timeout(self->db, S_BUSY_TIMEOUT_MS);
    sqlite3_db_config(self->db, SQLITE_DBCONFIG_DQS_DDL, 0, NULL);
    sqlite3_db_config(self->db, SQLITE_DBCONFIG_DQS_DML, 0, NULL);
    char mode[16];
    if (s_pragma(self, "PRAGMA journal_mode = WAL", mode, sizeof mode, NULL, err, errlen) < 0)
        return -1;
    if (strcmp(mode, "wal") != 0) {
        snprintf(err, errlen, "journal_mode=WAL refused (the database stays in '%s' mode)", mode);
        return -1;
    }
    /* FULL until the open is marked: the unclean mark must be durable */
    return s_exec(self, "PRAGMA synchronous = FULL", "synchronous", err, errlen);
}

/* Applies the migrations this database lacks, each in its own transaction. */
static int
s_migrate(pl_store_db_t *self, char *err, size_t errlen)
{
    for (;;) {
        if (s_exec(self, "BEGIN IMMEDIATE", "migrate", err, errlen) < 0)
            return -1;
        int64_t version = 0;
        if (s_pragma(self, "PRAGMA user_version", NULL, 0, &version, err, errlen) < 0)
            goto out_rollback;
        if (version < 0 || version > S_VERSION) {
            snprintf(err, errlen, "database version %lld is newer than this binary (%d): refusing to open it",
                     (long long) version, S_VERSION);
            goto out_rollback;
        }
        if (version == S_VERSION)
            return s_exec(self, "COMMIT", "migrate", err, errlen);
        char set[48];
        snprintf(set, sizeof set, "PRAGMA user_version = %d", (int) version + 1); /* ours, not data */
        char what[48];
        snprintf(what, sizeof what, "migration to version %d", (int) version + 1);
        if (s_exec(self, s_migrations[version], what, err, errlen) < 0 || s_exec(self, set, what, err, errlen) < 0 ||
            s_exec(self, "COMMIT", what, err, errlen) < 0)
            goto out_rollback;
    }
out_rollback:
    sqlite3_exec(self->db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

static int
s_prepare(pl_store_db_t *self, char *err, size_t errlen)
{
    for (int i = 0; i < S_COUNT_; i++) {
        if (sqlite3_prepare_v3(self->db, s_stmt_def[i].sql, -1, SQLITE_PREPARE_PERSISTENT, &self->stmt[i], NULL) !=
            SQLITE_OK) {
            snprintf(err, errlen, "prepare %s: %s", s_stmt_def[i].name, sqlite3_errmsg(self->db));
            return -1;
        }
    }
    return 0;
}

/* Sets meta 'clean' to `value` in a transaction of its own. */
static int
s_set_clean(pl_store_db_t *self, const char *value)
{
    sqlite3_stmt *st = self->stmt[S_META_SET];
    int bound =
        sqlite3_bind_text(st, 1, "clean", -1, SQLITE_STATIC) | sqlite3_bind_text(st, 2, value, -1, SQLITE_STATIC);
    return s_run(self, st, bound, "mark_clean", NULL) < 0 ? -1 : 0;
}

/* Reads whether the last close was clean, then marks this open unclean. */
static int
s_mark_open(pl_store_db_t *self, bool *was_clean, char *err, size_t errlen)
{
    sqlite3_stmt *st = self->stmt[S_META_GET];
    int rc = sqlite3_bind_text(st, 1, "clean", -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    bool clean = false; /* no mark: not known to be clean */
    if (rc == SQLITE_ROW) {
        const unsigned char *v = sqlite3_column_text(st, 0);
        clean = v && strcmp((const char *) v, "1") == 0;
    } else if (rc != SQLITE_DONE) {
        snprintf(err, errlen, "reading the clean mark: %s", sqlite3_errmsg(self->db));
    }
    store_db_done(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return -1;
    if (s_set_clean(self, "0") < 0) {
        snprintf(err, errlen, "cannot write the clean mark (the reason is logged)");
        return -1;
    }
    if (was_clean)
        *was_clean = clean;
    return 0;
}

pl_store_db_t *
pl_store_db_open(const char *path, bool sync_full, bool *was_clean, char *err, size_t errlen)
{
    char none[1];
    if (!err || errlen == 0)
        err = none, errlen = sizeof none;
    err[0] = '\0';
    if (!path || !*path) {
        snprintf(err, errlen, "no database path");
        return NULL;
    }
    pl_store_db_t *self = calloc(1, sizeof *self);
    if (!self) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    if (sqlite3_open_v2(path, &self->db, flags, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "open %s: %s", path, self->db ? sqlite3_errmsg(self->db) : "out of memory");
        goto out_destroy;
    }
    if (s_configure(self, err, errlen) < 0 || s_migrate(self, err, errlen) < 0 || s_prepare(self, err, errlen) < 0 ||
        s_mark_open(self, was_clean, err, errlen) < 0)
        goto out_destroy;
    if (!sync_full && s_exec(self, "PRAGMA synchronous = NORMAL", "synchronous", err, errlen) < 0)
        goto out_destroy;
    return self;
out_destroy:
    s_self_destroy(&self);
    return NULL;
}

void
pl_store_db_close(pl_store_db_t **db_p, bool clean)
{
    if (!db_p || !*db_p)
        return;
    pl_store_db_t *self = *db_p;
    if (self->in_fn) {
        store_db_refuse("close", NULL, -PL_E_BUSY);
        return;
    }
    /* a batch that fails to commit leaves the database unclean: seqs it
       handed out may be lost, and the next open must recover past them */
    if (pl_store_db_commit(self) == 0 && clean)
        s_set_clean(self, "1"); /* closing checkpoints the WAL, with a sync */
    s_self_destroy(db_p);
}

/* ---- group commit ---- */

int
pl_store_db_begin(pl_store_db_t *db)
{
    int rc = store_db_enter(db, "begin");
    if (rc < 0 || db->in_batch)
        return rc;
    rc = s_run(db, db->stmt[S_BEGIN], SQLITE_OK, "begin", NULL);
    if (rc < 0)
        return rc;
    db->in_batch = true;
    db->batch_lost = false;
    return 0;
}

int
pl_store_db_commit(pl_store_db_t *db)
{
    int rc = store_db_enter(db, "commit");
    if (rc < 0 || !db->in_batch)
        return rc;
    bool lost = db->batch_lost || sqlite3_get_autocommit(db->db);
    db->in_batch = db->batch_lost = false;
    if (lost) {
        pl_log_error("store_db", "op=commit error=batch_rolled_back");
        return -PL_E_INTERNAL;
    }
    rc = s_run(db, db->stmt[S_COMMIT], SQLITE_OK, "commit", NULL);
    return rc < 0 ? rc : 0;
}

bool
pl_store_db_in_batch(const pl_store_db_t *db)
{
    return db && db->in_batch;
}

/* ---- writes ---- */

int
pl_store_db_put_session(pl_store_db_t *db, const pl_store_session_t *s)
{
    static const char op[] = "put_session";
    int rc = store_db_enter(db, op);
    if (rc < 0)
        return rc;
    size_t nmodel = 0, nkind = 0, nname = 0, nsys = 0;
    rc = s ? store_db_check_id(s->id) : -PL_E_MISSING_FIELD;
    if (rc == 0 && (s_check_len(s->model, PL_NAME_MAX, &nmodel) < 0 || s_check_len(s->kind, PL_NAME_MAX, &nkind) < 0 ||
                    s_check_len(s->name, PL_NAME_MAX, &nname) < 0 || s_check_len(s->system, PL_ENV_MAX, &nsys) < 0))
        rc = -PL_E_TOO_LARGE;
    if (rc < 0)
        return store_db_refuse(op, s ? s->id : NULL, rc);
    bool own;
    rc = s_write_begin(db, op, &own);
    if (rc < 0)
        return rc;
    sqlite3_stmt *st = db->stmt[S_SESS_PUT];
    int bound = sqlite3_bind_text(st, 1, s->id, -1, SQLITE_STATIC) | s_bind_str(st, 2, s->model, nmodel) |
                s_bind_str(st, 3, s->kind, nkind) | s_bind_str(st, 4, s->name, nname) |
                sqlite3_bind_double(st, 5, s->created) |
                (s->system ? s_bind_str(st, 6, s->system, nsys) : sqlite3_bind_null(st, 6));
    rc = s_run(db, st, bound, op, s->id);
    return s_write_end(db, own, rc < 0 ? rc : 0);
}

/* Lengths of a message's strings, checked once. */
typedef struct {
    size_t role, conn, text;
} s_msg_len_t;

/* Binds ?1..?8 of MSG_INSERT and MSG_UPDATE; the OR of the bind results. */
static int
s_bind_msg(sqlite3_stmt *st, const char *session, const pl_store_msg_t *m, const s_msg_len_t *n)
{
    return sqlite3_bind_text(st, 1, session, -1, SQLITE_STATIC) | sqlite3_bind_int64(st, 2, m->ord) |
           sqlite3_bind_text(st, 3, m->e.id, -1, SQLITE_STATIC) | s_bind_str(st, 4, m->e.role, n->role) |
           s_bind_str(st, 5, m->e.conn, n->conn) | sqlite3_bind_double(st, 6, m->e.ts) |
           (m->finish < 0 ? sqlite3_bind_null(st, 7) : sqlite3_bind_int64(st, 7, m->finish)) |
           s_bind_str(st, 8, m->e.text, n->text);
}

/* Binds ?1 = session to statement `id` and runs it. */
static int
s_run_session(pl_store_db_t *self, s_stmt_t id, const char *op, const char *session)
{
    sqlite3_stmt *st = self->stmt[id];
    return s_run(self, st, sqlite3_bind_text(st, 1, session, -1, SQLITE_STATIC), op, session);
}

int
pl_store_db_put_message(pl_store_db_t *db, const char *session, const pl_store_msg_t *m)
{
    static const char op[] = "put_message";
    int rc = store_db_enter(db, op);
    if (rc < 0)
        return rc;
    s_msg_len_t n = {0, 0, 0};
    rc = store_db_check_id(session);
    if (rc == 0)
        rc = m ? store_db_check_id(m->e.id) : -PL_E_MISSING_FIELD;
    if (rc == 0 && (s_check_len(m->e.role, PL_NAME_MAX, &n.role) < 0 ||
                    s_check_len(m->e.conn, PL_ID_MAX, &n.conn) < 0 || s_check_len(m->e.text, PL_ENV_MAX, &n.text) < 0))
        rc = -PL_E_TOO_LARGE;
    if (rc == 0 && (m->ord < 0 || m->finish >= PL_FINISH_COUNT_))
        rc = -PL_E_BAD_FRAME;
    if (rc < 0)
        return store_db_refuse(op, session, rc);
    bool own;
    rc = s_write_begin(db, op, &own);
    if (rc < 0)
        return rc;
    sqlite3_stmt *st = db->stmt[S_MSG_INSERT];
    int changed = s_run(db, st, s_bind_msg(st, session, m, &n), op, session);
    if (changed == 1) { /* a new message: count it */
        changed = s_run_session(db, S_SESS_MSG_ADDED, op, session);
    } else if (changed == 0) { /* stored already (rewrite it), or no such session */
        st = db->stmt[S_MSG_UPDATE];
        changed = s_run(db, st, s_bind_msg(st, session, m, &n), op, session);
        if (changed == 0)
            changed = -PL_E_NOT_FOUND;
    }
    return s_write_end(db, own, changed < 0 ? changed : 0);
}

/* One write of two bound statements: `first` updates the session's row
   (none changed: -PL_E_NOT_FOUND, nothing written), then `then` runs. */
static int
s_write_pair(pl_store_db_t *self, const char *op, const char *session, sqlite3_stmt *first, int bound_first,
             sqlite3_stmt *then, int bound_then)
{
    bool own;
    int rc = s_write_begin(self, op, &own);
    if (rc < 0)
        store_db_done(first);
    int changed = rc < 0 ? rc : s_run(self, first, bound_first, op, session);
    if (changed == 0)
        changed = -PL_E_NOT_FOUND;
    if (changed > 0)
        changed = s_run(self, then, bound_then, op, session);
    else
        store_db_done(then); /* not run: drop its borrowed bindings */
    return s_write_end(self, own, changed < 0 ? changed : 0);
}

/* Binds ?1 = session, ?2 = n; the OR of the bind results. */
static int
s_bind_session_i64(sqlite3_stmt *st, const char *session, int64_t n)
{
    return sqlite3_bind_text(st, 1, session, -1, SQLITE_STATIC) | sqlite3_bind_int64(st, 2, n);
}

/* The checks of a write naming a session and a count: 0, or < 0 (refused
   arguments logged). */
static int
s_check_session_n(pl_store_db_t *db, const char *op, const char *session, int64_t n)
{
    int rc = store_db_enter(db, op);
    if (rc < 0)
        return rc;
    rc = store_db_check_id(session);
    if (rc == 0 && n < 0)
        rc = -PL_E_BAD_FRAME;
    return rc < 0 ? store_db_refuse(op, session, rc) : 0;
}

int
pl_store_db_set_open_turn(pl_store_db_t *db, const char *session, int64_t seq)
{
    static const char op[] = "set_open_turn";
    int rc = s_check_session_n(db, op, session, seq);
    if (rc < 0)
        return rc;
    bool own;
    rc = s_write_begin(db, op, &own);
    if (rc < 0)
        return rc;
    sqlite3_stmt *st = db->stmt[S_SESS_OPEN_SET];
    int changed = s_run(db, st, s_bind_session_i64(st, session, seq), op, session);
    return s_write_end(db, own, changed < 0 ? changed : 0);
}

int
pl_store_db_put_event(pl_store_db_t *db, const char *session, int64_t seq, int type, const char *respid,
                      const void *body, size_t len)
{
    static const char op[] = "put_event";
    int rc = store_db_enter(db, op);
    if (rc < 0)
        return rc;
    rc = store_db_check_id(session);
    if (rc == 0 && respid)
        rc = store_db_check_id(respid);
    if (rc == 0 && len > PL_ENV_MAX)
        rc = -PL_E_TOO_LARGE;
    if (rc == 0 && (seq < 0 || (!body && len > 0)))
        rc = -PL_E_BAD_FRAME;
    if (rc < 0)
        return store_db_refuse(op, session, rc);
    sqlite3_stmt *raise = db->stmt[S_SESS_SEQ], *put = db->stmt[S_EVT_PUT];
    int bound = s_bind_session_i64(put, session, seq) | sqlite3_bind_int(put, 3, type) |
                (respid ? sqlite3_bind_text(put, 4, respid, -1, SQLITE_STATIC) : sqlite3_bind_null(put, 4)) |
                sqlite3_bind_blob(put, 5, len ? body : "", (int) len, SQLITE_STATIC);
    return s_write_pair(db, op, session, raise, s_bind_session_i64(raise, session, seq), put, bound);
}

int
pl_store_db_prune_events(pl_store_db_t *db, const char *session, int64_t upto)
{
    static const char op[] = "prune_events";
    int rc = s_check_session_n(db, op, session, upto);
    if (rc < 0)
        return rc;
    sqlite3_stmt *raise = db->stmt[S_SESS_PRUNE], *del = db->stmt[S_EVT_PRUNE];
    return s_write_pair(db, op, session, raise, s_bind_session_i64(raise, session, upto), del,
                        s_bind_session_i64(del, session, upto));
}

/* 1 when `session` is stored, 0 when not, or < 0. */
static int
s_session_exists(pl_store_db_t *self, const char *op, const char *session)
{
    sqlite3_stmt *st = self->stmt[S_SESS_EXISTS];
    int rc = sqlite3_bind_text(st, 1, session, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    int found = rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : store_db_log_sqlite(self, op, session);
    store_db_done(st);
    return found;
}

/* Runs an insert that keeps the first row of its key and writes nothing
   when the session is not stored; -PL_E_NOT_FOUND then. */
static int
s_put_first(pl_store_db_t *self, sqlite3_stmt *st, int bound, const char *op, const char *session)
{
    bool own;
    int rc = s_write_begin(self, op, &own);
    if (rc < 0) {
        store_db_done(st);
        return rc;
    }
    int changed = s_run(self, st, bound, op, session);
    if (changed == 0) { /* a duplicate, or no such session */
        changed = s_session_exists(self, op, session);
        if (changed == 0)
            changed = -PL_E_NOT_FOUND;
    }
    return s_write_end(self, own, changed < 0 ? changed : 0);
}

int
pl_store_db_put_member(pl_store_db_t *db, const char *session, const char *member, double joined)
{
    static const char op[] = "put_member";
    int rc = store_db_enter(db, op);
    if (rc < 0)
        return rc;
    rc = store_db_check_id(session);
    if (rc == 0)
        rc = store_db_check_id(member);
    if (rc < 0)
        return store_db_refuse(op, session, rc);
    sqlite3_stmt *st = db->stmt[S_MEM_PUT];
    int bound = sqlite3_bind_text(st, 1, session, -1, SQLITE_STATIC) |
                sqlite3_bind_text(st, 2, member, -1, SQLITE_STATIC) | sqlite3_bind_double(st, 3, joined);
    return s_put_first(db, st, bound, op, session);
}

int
pl_store_db_put_receipt(pl_store_db_t *db, const char *session, const char *message, const char *reader, double ts)
{
    static const char op[] = "put_receipt";
    int rc = store_db_enter(db, op);
    if (rc < 0)
        return rc;
    rc = store_db_check_id(session);
    if (rc == 0)
        rc = store_db_check_id(message);
    if (rc == 0)
        rc = store_db_check_id(reader);
    if (rc < 0)
        return store_db_refuse(op, session, rc);
    sqlite3_stmt *st = db->stmt[S_RCP_PUT];
    int bound = sqlite3_bind_text(st, 1, session, -1, SQLITE_STATIC) |
                sqlite3_bind_text(st, 2, message, -1, SQLITE_STATIC) |
                sqlite3_bind_text(st, 3, reader, -1, SQLITE_STATIC) | sqlite3_bind_double(st, 4, ts);
    return s_put_first(db, st, bound, op, session);
}

/* Runs statements `ids` (each binding ?1 = session) in one write. The
   first must change the session's row: none changed is -PL_E_NOT_FOUND. */
static int
s_session_write(pl_store_db_t *db, const char *op, const char *session, const s_stmt_t *ids, size_t n)
{
    int rc = store_db_enter(db, op);
    if (rc < 0)
        return rc;
    rc = store_db_check_id(session);
    if (rc < 0)
        return store_db_refuse(op, session, rc);
    bool own;
    rc = s_write_begin(db, op, &own);
    if (rc < 0)
        return rc;
    int changed = s_run_session(db, ids[0], op, session);
    if (changed == 0)
        changed = -PL_E_NOT_FOUND;
    for (size_t i = 1; i < n && changed >= 0; i++)
        changed = s_run_session(db, ids[i], op, session);
    return s_write_end(db, own, changed < 0 ? changed : 0);
}

int
pl_store_db_clear(pl_store_db_t *db, const char *session)
{
    static const s_stmt_t ids[] = {S_SESS_CLEARED, S_MSG_DEL, S_RCP_DEL};
    return s_session_write(db, "clear", session, ids, sizeof ids / sizeof ids[0]);
}

int
pl_store_db_delete(pl_store_db_t *db, const char *session)
{
    static const s_stmt_t ids[] = {S_SESS_DEL, S_MSG_DEL, S_EVT_DEL, S_MEM_DEL, S_RCP_DEL};
    return s_session_write(db, "delete", session, ids, sizeof ids / sizeof ids[0]);
}

long
pl_store_db_recover(pl_store_db_t *db, int64_t skip)
{
    static const char op[] = "recover";
    int rc = store_db_enter(db, op);
    if (rc < 0)
        return rc;
    if (skip < 0)
        return store_db_refuse(op, NULL, -PL_E_BAD_FRAME);
    bool own;
    rc = s_write_begin(db, op, &own);
    if (rc < 0)
        return rc;
    sqlite3_stmt *st = db->stmt[S_SESS_RECOVER];
    int changed = s_run(db, st, sqlite3_bind_int64(st, 1, skip), op, NULL);
    rc = s_write_end(db, own, changed < 0 ? changed : 0);
    return rc < 0 ? rc : changed;
}
