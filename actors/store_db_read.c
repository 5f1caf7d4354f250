/*  store_db_read — the reads of store_db (see store_db.h): a session with
    its newest messages, a session's events after a seq, whether a resume
    has a gap, the list and count of sessions; and the frees of what a read
    returns.

    Every read of messages or events is a range of its UNIQUE (session, …)
    index (tests/test_store_db.c checks the query plans): the newest
    messages walk messages_session_ord backwards from the session's end,
    LIMIT rows, one table row per message; events walk events_session_seq
    forwards from `after`. The list and events callbacks run while their
    statement is mid-step: db->in_fn refuses calls back into db meanwhile. */
#include <sqlite3.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../protocol/pl_err.h"
#include "store_db_int.h"

/* A copy of text column i (NULL when the column is NULL or memory ran out). */
static char *
s_col_dup(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    if (!t)
        return NULL;
    size_t n = (size_t) sqlite3_column_bytes(st, i);
    char *out = malloc(n + 1);
    if (out) {
        memcpy(out, t, n);
        out[n] = '\0';
    }
    return out;
}

void
pl_store_session_free(pl_store_session_t *s)
{
    if (!s)
        return;
    free(s->id);
    free(s->model);
    free(s->kind);
    free(s->name);
    free(s->system);
    memset(s, 0, sizeof *s);
}

void
pl_store_msgs_free(pl_store_msg_t *msgs, size_t n)
{
    for (size_t i = 0; msgs && i < n; i++) {
        free(msgs[i].e.id);
        free(msgs[i].e.role);
        free(msgs[i].e.text);
        free(msgs[i].e.conn);
    }
    free(msgs);
}

/* Session `id` into *s (SESS_GET). 0, -PL_E_NOT_FOUND, or < 0. */
static int
s_read_session(pl_store_db_t *self, const char *id, pl_store_session_t *s)
{
    sqlite3_stmt *st = self->stmt[S_SESS_GET];
    int rc = sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        store_db_done(st);
        return -PL_E_NOT_FOUND;
    }
    if (rc != SQLITE_ROW) {
        rc = store_db_log_sqlite(self, "load", id);
        store_db_done(st);
        return rc;
    }
    s->id = strdup(id);
    s->model = s_col_dup(st, 0);
    s->kind = s_col_dup(st, 1);
    s->name = s_col_dup(st, 2);
    s->created = sqlite3_column_double(st, 3);
    s->seq = sqlite3_column_int64(st, 4);
    s->messages = sqlite3_column_int64(st, 5);
    bool has_system = sqlite3_column_type(st, 6) != SQLITE_NULL;
    s->system = has_system ? s_col_dup(st, 6) : NULL;
    store_db_done(st);
    if (!s->id || !s->model || !s->kind || !s->name || (has_system && !s->system)) {
        pl_store_session_free(s);
        return store_db_refuse("load", id, -PL_E_NOMEM);
    }
    return 0;
}

/* Fills *m from the current row of MSG_NEWEST. 0 or -PL_E_NOMEM. */
static int
s_read_msg(sqlite3_stmt *st, pl_store_msg_t *m)
{
    m->ord = sqlite3_column_int64(st, 0);
    m->e.id = s_col_dup(st, 1);
    m->e.role = s_col_dup(st, 2);
    m->e.conn = s_col_dup(st, 3);
    m->e.ts = sqlite3_column_double(st, 4);
    m->finish = sqlite3_column_type(st, 5) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, 5);
    m->e.text = s_col_dup(st, 6);
    return m->e.id && m->e.role && m->e.conn && m->e.text ? 0 : -PL_E_NOMEM;
}

/* The newest `max` messages of `id`, oldest first, into *msgs / *n. */
static int
s_read_msgs(pl_store_db_t *self, const char *id, size_t max, pl_store_msg_t **msgs, size_t *n)
{
    pl_store_msg_t *v = NULL;
    size_t k = 0, cap = 0;
    sqlite3_stmt *st = self->stmt[S_MSG_NEWEST];
    int rc = sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC) |
             sqlite3_bind_int64(st, 2, max > INT64_MAX ? INT64_MAX : (int64_t) max);
    while (rc == SQLITE_OK || rc == SQLITE_ROW) {
        rc = sqlite3_step(st);
        if (rc != SQLITE_ROW)
            break;
        if (k == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            pl_store_msg_t *nv = realloc(v, ncap * sizeof *nv);
            if (!nv)
                goto out_nomem;
            v = nv, cap = ncap;
        }
        memset(&v[k], 0, sizeof v[k]);
        if (s_read_msg(st, &v[k++]) < 0)
            goto out_nomem;
    }
    if (rc != SQLITE_DONE) {
        rc = store_db_log_sqlite(self, "load", id);
        store_db_done(st);
        pl_store_msgs_free(v, k);
        return rc;
    }
    store_db_done(st);
    for (size_t i = 0; i < k / 2; i++) { /* newest first -> oldest first */
        pl_store_msg_t t = v[i];
        v[i] = v[k - 1 - i];
        v[k - 1 - i] = t;
    }
    *msgs = v;
    *n = k;
    return 0;
out_nomem:
    store_db_done(st);
    pl_store_msgs_free(v, k);
    return store_db_refuse("load", id, -PL_E_NOMEM);
}

int
pl_store_db_load(pl_store_db_t *db, const char *id, size_t max_history, pl_store_session_t *s, pl_store_msg_t **msgs,
                 size_t *n)
{
    if (s)
        memset(s, 0, sizeof *s);
    if (msgs)
        *msgs = NULL;
    if (n)
        *n = 0;
    int rc = store_db_enter(db, "load");
    if (rc < 0)
        return rc;
    rc = s && msgs && n ? store_db_check_id(id) : -PL_E_MISSING_FIELD;
    if (rc < 0)
        return store_db_refuse("load", id, rc);
    rc = s_read_session(db, id, s);
    if (rc == 0 && max_history > 0) {
        rc = s_read_msgs(db, id, max_history, msgs, n);
        if (rc < 0)
            pl_store_session_free(s);
    }
    return rc;
}

long
pl_store_db_events(pl_store_db_t *db, const char *session, int64_t after, size_t max_bytes, pl_store_event_fn fn,
                   void *arg)
{
    static const char op[] = "events";
    int rc = store_db_enter(db, op);
    if (rc < 0)
        return rc;
    rc = fn ? store_db_check_id(session) : -PL_E_MISSING_FIELD;
    if (rc < 0)
        return store_db_refuse(op, session, rc);
    sqlite3_stmt *st = db->stmt[S_EVT_AFTER];
    rc = sqlite3_bind_text(st, 1, session, -1, SQLITE_STATIC) | sqlite3_bind_int64(st, 2, after);
    long given = 0;
    size_t bytes = 0;
    db->in_fn = true;
    while (rc == SQLITE_OK || rc == SQLITE_ROW) {
        rc = sqlite3_step(st);
        if (rc != SQLITE_ROW)
            break;
        const void *body = sqlite3_column_blob(st, 2);
        size_t len = (size_t) sqlite3_column_bytes(st, 2);
        if (!body && len > 0) {
            rc = SQLITE_NOMEM;
            break;
        }
        given++;
        bytes += len;
        if (fn(sqlite3_column_int64(st, 0), sqlite3_column_int(st, 1), body ? body : "", len, arg) != 0 ||
            bytes >= max_bytes) {
            rc = SQLITE_DONE;
            break;
        }
    }
    db->in_fn = false;
    long out = rc == SQLITE_DONE ? given : store_db_log_sqlite(db, op, session);
    store_db_done(st);
    return out;
}

bool
pl_store_db_events_gap(pl_store_db_t *db, const char *session, int64_t after)
{
    static const char op[] = "events_gap";
    if (store_db_enter(db, op) < 0)
        return true;
    int rc = store_db_check_id(session);
    if (rc < 0)
        return store_db_refuse(op, session, rc) < 0;
    sqlite3_stmt *st = db->stmt[S_SESS_PRUNED];
    rc = sqlite3_bind_text(st, 1, session, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    bool gap = true; /* on error: the caller resends the whole history */
    if (rc == SQLITE_ROW)
        gap = after < sqlite3_column_int64(st, 0);
    else if (rc == SQLITE_DONE)
        gap = false;
    else
        store_db_log_sqlite(db, op, session);
    store_db_done(st);
    return gap;
}

long
pl_store_db_open_turns(pl_store_db_t *db, pl_store_open_fn fn, void *arg)
{
    static const char op[] = "open_turns";
    int rc = store_db_enter(db, op);
    if (rc < 0)
        return rc;
    if (!fn)
        return store_db_refuse(op, NULL, -PL_E_MISSING_FIELD);
    sqlite3_stmt *st = db->stmt[S_SESS_OPEN_LIST];
    long given = 0;
    db->in_fn = true;
    for (;;) {
        rc = sqlite3_step(st);
        if (rc != SQLITE_ROW)
            break;
        const char *id = (const char *) sqlite3_column_text(st, 0);
        if (!id) {
            rc = SQLITE_NOMEM;
            break;
        }
        given++;
        if (fn(id, sqlite3_column_int64(st, 1), arg) != 0) {
            rc = SQLITE_DONE;
            break;
        }
    }
    db->in_fn = false;
    long out = rc == SQLITE_DONE ? given : store_db_log_sqlite(db, op, NULL);
    store_db_done(st);
    return out;
}

long
pl_store_db_list(pl_store_db_t *db, size_t limit, pl_store_session_fn fn, void *arg)
{
    static const char op[] = "list";
    int rc = store_db_enter(db, op);
    if (rc < 0)
        return rc;
    if (!fn)
        return store_db_refuse(op, NULL, -PL_E_MISSING_FIELD);
    sqlite3_stmt *st = db->stmt[S_SESS_LIST];
    rc = sqlite3_bind_int64(st, 1, limit > INT64_MAX ? INT64_MAX : (int64_t) limit);
    long given = 0;
    db->in_fn = true;
    while (rc == SQLITE_OK || rc == SQLITE_ROW) {
        rc = sqlite3_step(st);
        if (rc != SQLITE_ROW)
            break;
        /* borrowed: the column texts live until the next step */
        pl_store_session_t s = {
            (char *) sqlite3_column_text(st, 0), (char *) sqlite3_column_text(st, 1),
            (char *) sqlite3_column_text(st, 2), (char *) sqlite3_column_text(st, 3),
            (char *) sqlite3_column_text(st, 7), sqlite3_column_double(st, 4),
            sqlite3_column_int64(st, 5),         sqlite3_column_int64(st, 6),
        };
        if (!s.id || !s.model || !s.kind || !s.name || (!s.system && sqlite3_column_type(st, 7) != SQLITE_NULL)) {
            rc = SQLITE_NOMEM;
            break;
        }
        given++;
        if (fn(&s, arg) != 0) {
            rc = SQLITE_DONE;
            break;
        }
    }
    db->in_fn = false;
    long out = rc == SQLITE_DONE ? given : store_db_log_sqlite(db, op, NULL);
    store_db_done(st);
    return out;
}

long
pl_store_db_count(pl_store_db_t *db)
{
    int rc = store_db_enter(db, "count");
    if (rc < 0)
        return rc;
    sqlite3_stmt *st = db->stmt[S_SESS_COUNT];
    rc = sqlite3_step(st);
    long out = rc == SQLITE_ROW ? (long) sqlite3_column_int64(st, 0) : store_db_log_sqlite(db, "count", NULL);
    store_db_done(st);
    return out;
}
