/*  test_store_db — the SQLite database behind the store actor (actors/store_db.c).

    Every test opens its own database file in one temporary directory. Some
    open the file directly with sqlite3 as well: to see what store_db wrote
    (user_version, WAL, the clean mark, what another connection sees of an
    open batch) or to set up what it must cope with (a newer schema, a seq
    behind its events, a write that fails). The suite runs under ASan and
    LeakSanitizer in the sanitizer build, so error paths that leak fail. */
#include <setjmp.h> /* cmocka needs these three first */
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <dirent.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pl_err.h"
#include "pl_limits.h"
#include "pl_log.h"
#include "store_db.h"
#include "store_db_int.h" /* the statements, for their query plans */

#define S_MIB (1024u * 1024u)

static char s_dir[256];

/* ---- files ---- */

static const char *
s_path(const char *name)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s.db", s_dir, name);
    return path;
}

static pl_store_db_t *
s_open(const char *name, bool *was_clean)
{
    char err[256] = "";
    bool clean = false;
    pl_store_db_t *db = pl_store_db_open(s_path(name), true, &clean, err, sizeof err);
    if (!db)
        fail_msg("open %s: %s", name, err);
    if (was_clean)
        *was_clean = clean;
    return db;
}

/* Runs `sql` on its own connection to database `name`; the first column of
   its first row (0 when none). */
static int64_t
s_raw_int(const char *name, const char *sql)
{
    sqlite3 *raw = NULL;
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_open_v2(s_path(name), &raw, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    sqlite3_busy_timeout(raw, 5000);
    if (sqlite3_prepare_v2(raw, sql, -1, &st, NULL) != SQLITE_OK)
        fail_msg("%s: %s", sql, sqlite3_errmsg(raw));
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        fail_msg("%s: %s", sql, sqlite3_errmsg(raw));
    int64_t v = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_finalize(st);
    sqlite3_close(raw);
    return v;
}

/* Like s_raw_int for a text answer, copied into out. */
static const char *
s_raw_text(const char *name, const char *sql, char *out, size_t size)
{
    sqlite3 *raw = NULL;
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_open_v2(s_path(name), &raw, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(raw, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    snprintf(out, size, "%s", (const char *) sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    sqlite3_close(raw);
    return out;
}

/* ---- rows ---- */

static void
s_put_session(pl_store_db_t *db, const char *id, double created)
{
    pl_store_session_t s = {(char *) id, "echo", "private", "a name", NULL, created, 0, 0};
    assert_int_equal(pl_store_db_put_session(db, &s), 0);
}

static int
s_put_msg(pl_store_db_t *db, const char *session, int64_t ord, const char *id, const char *text)
{
    bool answer = ord % 2 == 1;
    pl_store_msg_t m = {.e = {.id = (char *) id,
                              .role = answer ? "assistant" : "user",
                              .text = (char *) text,
                              .conn = answer ? "" : "c0123456789abcdef",
                              .ts = (double) ord},
                        .ord = ord,
                        .finish = answer ? PL_FINISH_STOP : -1};
    return pl_store_db_put_message(db, session, &m);
}

static int
s_put_event(pl_store_db_t *db, const char *session, int64_t seq)
{
    char body[100];
    memset(body, 'a' + (int) (seq % 26), sizeof body);
    return pl_store_db_put_event(db, session, seq, 7, NULL, body, sizeof body);
}

/* Loads `id`, checks the load worked, and frees it all but the numbers. */
static pl_store_session_t
s_load_numbers(pl_store_db_t *db, const char *id)
{
    pl_store_session_t s, out;
    pl_store_msg_t *msgs = NULL;
    size_t n = 0;
    assert_int_equal(pl_store_db_load(db, id, 0, &s, &msgs, &n), 0);
    out = (pl_store_session_t){NULL, NULL, NULL, NULL, NULL, s.created, s.seq, s.messages};
    pl_store_session_free(&s);
    pl_store_msgs_free(msgs, n);
    return out;
}

/* Events as fn saw them. */
typedef struct {
    int64_t seq[32];
    size_t n, bytes;
    size_t stop_at;    /* fn returns nonzero on this event (1-based); 0: never */
    pl_store_db_t *db; /* when set, fn tries to call back into the db */
    int reentry_rc;
} s_got_t;

static int
s_collect(int64_t seq, int type, const void *body, size_t len, void *arg)
{
    s_got_t *g = arg;
    assert_int_equal(type, 7);
    assert_non_null(body);
    if (g->n < 32)
        g->seq[g->n] = seq;
    g->n++;
    g->bytes += len;
    if (g->db)
        g->reentry_rc = (int) pl_store_db_count(g->db);
    return g->stop_at && g->n == g->stop_at;
}

/* ---- schema, migration, the clean mark ---- */

static void
test_open_new(void **state)
{
    (void) state;
    const char *name = __func__;
    bool clean = false;
    pl_store_db_t *db = s_open(name, &clean);
    assert_true(clean); /* a new database counts as clean */
    assert_int_equal(pl_store_db_count(db), 0);
    assert_false(pl_store_db_in_batch(db));

    char text[512];
    assert_int_equal(s_raw_int(name, "PRAGMA user_version"), 1);
    assert_string_equal(s_raw_text(name, "PRAGMA journal_mode", text, sizeof text), "wal");
    /* marked unclean, committed: another connection sees it */
    assert_string_equal(s_raw_text(name, "SELECT value FROM meta WHERE key = 'clean'", text, sizeof text), "0");
    /* small rows stay clustered by their key; messages and events are
       rowid tables with a unique (session, …) index */
    static const char *const clustered[] = {"receipts", "members", "meta"};
    for (size_t i = 0; i < sizeof clustered / sizeof clustered[0]; i++) {
        char sql[128];
        snprintf(sql, sizeof sql, "SELECT sql FROM sqlite_schema WHERE name = '%s'", clustered[i]);
        if (!strstr(s_raw_text(name, sql, text, sizeof text), "WITHOUT ROWID"))
            fail_msg("%s: %s", clustered[i], text);
    }
    static const struct {
        const char *table, *index, *columns;
    } indexed[] = {
        {"messages", "messages_session_ord", "session,ord"},
        {"events", "events_session_seq", "session,seq"},
    };
    for (size_t i = 0; i < sizeof indexed / sizeof indexed[0]; i++) {
        char sql[256];
        snprintf(sql, sizeof sql, "SELECT sql FROM sqlite_schema WHERE name = '%s'", indexed[i].table);
        if (strstr(s_raw_text(name, sql, text, sizeof text), "WITHOUT ROWID") || !strstr(text, "STRICT"))
            fail_msg("%s: %s", indexed[i].table, text);
        snprintf(sql, sizeof sql, "SELECT count(*) FROM pragma_index_list('%s') WHERE name = '%s' AND \"unique\" = 1",
                 indexed[i].table, indexed[i].index);
        assert_int_equal(s_raw_int(name, sql), 1);
        snprintf(sql, sizeof sql,
                 "SELECT group_concat(name) FROM (SELECT name FROM pragma_index_info('%s') ORDER BY seqno)",
                 indexed[i].index);
        assert_string_equal(s_raw_text(name, sql, text, sizeof text), indexed[i].columns);
    }
    pl_store_db_close(&db, true);
    assert_null(db);
    pl_store_db_close(&db, true); /* idempotent */

    db = s_open(name, &clean);
    assert_true(clean);
    assert_int_equal(s_raw_int(name, "PRAGMA user_version"), 1);
    pl_store_db_close(&db, true);
}

static void
test_newer_version_refused(void **state)
{
    (void) state;
    const char *name = __func__;
    pl_store_db_t *db = s_open(name, NULL);
    pl_store_db_close(&db, true);
    s_raw_int(name, "PRAGMA user_version = 1000");

    char err[256] = "";
    bool clean = false;
    assert_null(pl_store_db_open(s_path(name), true, &clean, err, sizeof err));
    if (!strstr(err, "newer") || !strstr(err, "1000"))
        fail_msg("err: %s", err);
    assert_int_equal(s_raw_int(name, "PRAGMA user_version"), 1000); /* untouched */
}

static void
test_clean_flag(void **state)
{
    (void) state;
    const char *name = __func__;
    /* each row: how this process closes, and what the next open must say */
    static const bool closes[] = {false, true, true, false, false, true};
    bool expect = true; /* new */
    for (size_t i = 0; i < sizeof closes / sizeof closes[0]; i++) {
        bool clean = !expect;
        pl_store_db_t *db = s_open(name, &clean);
        if (clean != expect)
            fail_msg("row %zu: was_clean %d, expected %d", i, clean, expect);
        pl_store_db_close(&db, closes[i]);
        expect = closes[i];
    }
}

/* A process that dies mid-batch: what it committed stays, what it had not
   is gone, and the next open is told the stop was unclean. */
static void
test_crash(void **state)
{
    (void) state;
    const char *name = __func__;
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char err[256];
        pl_store_db_t *db = pl_store_db_open(s_path(name), false, NULL, err, sizeof err);
        pl_store_session_t s = {"s1", "echo", "private", "", NULL, 1.0, 0, 0};
        bool ok = db && pl_store_db_begin(db) == 0 && pl_store_db_put_session(db, &s) == 0 &&
                  s_put_event(db, "s1", 1) == 0 && pl_store_db_commit(db) == 0 && pl_store_db_begin(db) == 0 &&
                  s_put_event(db, "s1", 2) == 0 && s_put_msg(db, "s1", 2, "m1", "hello") == 0;
        _exit(ok ? 0 : 1); /* no commit, no close */
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);

    bool clean = true;
    pl_store_db_t *db = s_open(name, &clean);
    assert_false(clean);
    pl_store_session_t s = s_load_numbers(db, "s1");
    assert_int_equal(s.seq, 1);
    assert_int_equal(s.messages, 0);
    s_got_t got = {0};
    assert_int_equal(pl_store_db_events(db, "s1", 0, SIZE_MAX, s_collect, &got), 1);
    pl_store_db_close(&db, true);
}

/* ---- sessions ---- */

/* Sessions as fn saw them: "id " each, "id+ " when it has a system prompt. */
typedef struct {
    char ids[64];
    size_t n, stop_at;
} s_listed_t;

static int
s_list_ids(const pl_store_session_t *s, void *arg)
{
    s_listed_t *l = arg;
    size_t len = strlen(l->ids);
    snprintf(l->ids + len, sizeof l->ids - len, "%s%s ", s->id, s->system ? "+" : "");
    return ++l->n == l->stop_at;
}

static void
test_sessions(void **state)
{
    (void) state;
    pl_store_db_t *db = s_open(__func__, NULL);
    s_put_session(db, "sa", 1.0);
    s_put_session(db, "sb", 3.0);
    s_put_session(db, "sc", 2.0);
    assert_int_equal(pl_store_db_count(db), 3);
    assert_int_equal(s_put_event(db, "sa", 5), 0);
    assert_int_equal(s_put_msg(db, "sa", 10, "m1", "hi"), 0);
    assert_int_equal(pl_store_db_put_member(db, "sa", "c1", 1.5), 0);
    assert_int_equal(pl_store_db_put_member(db, "sa", "c1", 9.5), 0); /* the first stays */
    assert_int_equal(pl_store_db_put_receipt(db, "sa", "m1", "c1", 2.5), 0);

    /* update: metadata changes, seq and messages stay */
    pl_store_session_t up = {"sa", "other-model", "group", "renamed", "be brief", 1.0, 99, 99};
    assert_int_equal(pl_store_db_put_session(db, &up), 0);
    pl_store_session_t s;
    pl_store_msg_t *msgs = NULL;
    size_t n = 0;
    assert_int_equal(pl_store_db_load(db, "sa", 10, &s, &msgs, &n), 0);
    assert_string_equal(s.id, "sa");
    assert_string_equal(s.model, "other-model");
    assert_string_equal(s.kind, "group");
    assert_string_equal(s.name, "renamed");
    assert_string_equal(s.system, "be brief");
    assert_true(s.created == 1.0);
    assert_int_equal(s.seq, 5);
    assert_int_equal(s.messages, 1);
    assert_int_equal(n, 1);
    pl_store_session_free(&s);
    pl_store_msgs_free(msgs, n);
    assert_int_equal(s_raw_int(__func__, "SELECT joined = 1.5 FROM members WHERE member = 'c1'"), 1);

    /* list: newest first; a limit; fn stops it */
    static const struct {
        size_t limit, stop_at;
        long n;
        const char *ids;
    } rows[] = {{10, 0, 3, "sb sc sa+ "}, {2, 0, 2, "sb sc "}, {10, 2, 2, "sb sc "}, {0, 0, 0, ""}};
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
        s_listed_t l = {.stop_at = rows[r].stop_at};
        long listed = pl_store_db_list(db, rows[r].limit, s_list_ids, &l);
        if (listed != rows[r].n || strcmp(l.ids, rows[r].ids) != 0)
            fail_msg("row %zu: %ld \"%s\"", r, listed, l.ids);
    }

    /* delete: the session and everything of it */
    assert_int_equal(pl_store_db_delete(db, "sa"), 0);
    assert_int_equal(pl_store_db_delete(db, "sa"), -PL_E_NOT_FOUND);
    assert_int_equal(pl_store_db_count(db), 2);
    assert_int_equal(pl_store_db_load(db, "sa", 10, &s, &msgs, &n), -PL_E_NOT_FOUND);
    assert_null(s.id);
    assert_null(msgs);
    static const char *const tables[] = {"messages", "events", "members", "receipts"};
    for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++) {
        char sql[96];
        snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE session = 'sa'", tables[i]);
        assert_int_equal(s_raw_int(__func__, sql), 0);
    }
    pl_store_db_close(&db, true);
}

/* ---- messages ---- */

static void
test_message_order(void **state)
{
    (void) state;
    pl_store_db_t *db = s_open(__func__, NULL);
    s_put_session(db, "s1", 1.0);
    /* questions at seq 1, 2 and 5; their answers (2k+1) stored later */
    assert_int_equal(s_put_msg(db, "s1", 2, "q1", "first?"), 0);
    assert_int_equal(s_put_msg(db, "s1", 4, "q2", "second?"), 0);
    assert_int_equal(s_put_msg(db, "s1", 3, "a1", "first."), 0);
    assert_int_equal(s_put_msg(db, "s1", 10, "q3", "third?"), 0);
    assert_int_equal(s_put_msg(db, "s1", 5, "a2", "second."), 0);
    assert_int_equal(s_put_msg(db, "s1", 3, "a1", "first, rewritten."), 0); /* replace: not counted */

    static const struct {
        int64_t ord;
        const char *id, *role, *text;
        int64_t finish;
    } want[] = {
        {2, "q1", "user", "first?", -1},  {3, "a1", "assistant", "first, rewritten.", PL_FINISH_STOP},
        {4, "q2", "user", "second?", -1}, {5, "a2", "assistant", "second.", PL_FINISH_STOP},
        {10, "q3", "user", "third?", -1},
    };
    pl_store_session_t s;
    pl_store_msg_t *msgs = NULL;
    size_t n = 0;
    assert_int_equal(pl_store_db_load(db, "s1", 100, &s, &msgs, &n), 0);
    assert_int_equal(s.messages, 5);
    assert_int_equal(n, 5);
    for (size_t i = 0; i < n; i++) {
        if (msgs[i].ord != want[i].ord || strcmp(msgs[i].e.id, want[i].id) != 0 ||
            strcmp(msgs[i].e.role, want[i].role) != 0 || strcmp(msgs[i].e.text, want[i].text) != 0 ||
            msgs[i].finish != want[i].finish || msgs[i].e.ts != (double) want[i].ord)
            fail_msg("row %zu: ord %lld id %s", i, (long long) msgs[i].ord, msgs[i].e.id);
        assert_string_equal(msgs[i].e.conn, want[i].finish < 0 ? "c0123456789abcdef" : "");
    }
    pl_store_session_free(&s);
    pl_store_msgs_free(msgs, n);
    pl_store_db_close(&db, true);
}

static void
test_load_window(void **state)
{
    (void) state;
    pl_store_db_t *db = s_open(__func__, NULL);
    s_put_session(db, "s1", 1.0);
    assert_int_equal(pl_store_db_begin(db), 0);
    for (int64_t ord = 20; ord >= 2; ord -= 2) { /* stored newest first */
        char id[16];
        snprintf(id, sizeof id, "m%lld", (long long) ord);
        assert_int_equal(s_put_msg(db, "s1", ord, id, id), 0);
    }
    assert_int_equal(pl_store_db_commit(db), 0);

    static const struct {
        size_t max, n;
        int64_t first;
    } rows[] = {{0, 0, 0}, {1, 1, 20}, {3, 3, 16}, {10, 10, 2}, {11, 10, 2}, {SIZE_MAX, 10, 2}};
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
        pl_store_session_t s;
        pl_store_msg_t *msgs = (pl_store_msg_t *) &s; /* must be reset */
        size_t n = 99;
        assert_int_equal(pl_store_db_load(db, "s1", rows[r].max, &s, &msgs, &n), 0);
        if (n != rows[r].n || s.messages != 10 || (n > 0 && msgs[0].ord != rows[r].first))
            fail_msg("row %zu: n %zu messages %lld", r, n, (long long) s.messages);
        for (size_t i = 1; i < n; i++)
            assert_int_equal(msgs[i].ord, msgs[i - 1].ord + 2);
        if (n == 0)
            assert_null(msgs);
        pl_store_session_free(&s);
        pl_store_msgs_free(msgs, n);
    }
    pl_store_db_close(&db, true);
}

static void
test_clear(void **state)
{
    (void) state;
    const char *name = __func__;
    pl_store_db_t *db = s_open(name, NULL);
    s_put_session(db, "s1", 1.0);
    for (int64_t seq = 1; seq <= 4; seq++)
        assert_int_equal(s_put_event(db, "s1", seq), 0);
    assert_int_equal(s_put_msg(db, "s1", 2, "q1", "?"), 0);
    assert_int_equal(s_put_msg(db, "s1", 3, "a1", "!"), 0);
    assert_int_equal(pl_store_db_put_receipt(db, "s1", "a1", "c1", 2.0), 0);
    assert_int_equal(pl_store_db_put_member(db, "s1", "c1", 1.0), 0);

    assert_int_equal(pl_store_db_clear(db, "s1"), 0);
    pl_store_session_t s = s_load_numbers(db, "s1");
    assert_int_equal(s.messages, 0);
    assert_int_equal(s.seq, 4);
    s_got_t got = {0};
    assert_int_equal(pl_store_db_events(db, "s1", 0, SIZE_MAX, s_collect, &got), 4);
    assert_int_equal(s_raw_int(name, "SELECT count(*) FROM messages"), 0);
    assert_int_equal(s_raw_int(name, "SELECT count(*) FROM receipts"), 0);
    assert_int_equal(s_raw_int(name, "SELECT count(*) FROM members"), 1);

    assert_int_equal(s_put_msg(db, "s1", 10, "q2", "again"), 0);
    assert_int_equal(s_load_numbers(db, "s1").messages, 1);
    assert_int_equal(pl_store_db_clear(db, "nope"), -PL_E_NOT_FOUND);
    pl_store_db_close(&db, true);
}

/* ---- events ---- */

static void
test_events(void **state)
{
    (void) state;
    pl_store_db_t *db = s_open(__func__, NULL);
    s_put_session(db, "s1", 1.0);
    s_put_session(db, "s2", 1.0);
    static const int64_t order[] = {3, 1, 2, 10, 4, 5, 9, 6, 8, 7}; /* stored out of order */
    for (size_t i = 0; i < 10; i++)
        assert_int_equal(s_put_event(db, "s1", order[i]), 0);
    assert_int_equal(pl_store_db_put_event(db, "s1", 4, 7, "r123", "replaced", 8), 0);
    assert_int_equal(s_load_numbers(db, "s1").seq, 10);

    static const struct {
        int64_t after;
        size_t max_bytes, stop_at;
        long n;
        int64_t first;
    } rows[] = {
        {0, SIZE_MAX, 0, 10, 1}, /* all, in seq order */
        {4, SIZE_MAX, 0, 6, 5},  /* after a seq */
        {10, SIZE_MAX, 0, 0, 0}, /* none newer */
        {0, 250, 0, 3, 1},       /* 100 + 100 + 100 >= 250: the third is the last */
        {0, 300, 0, 3, 1},       /* exactly the budget */
        {0, 0, 0, 1, 1},         /* at least one */
        {2, SIZE_MAX, 2, 2, 3},  /* fn stops after its second */
        {3, 108, 0, 2, 4},       /* 8 (replaced body) + 100 */
    };
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
        s_got_t got = {.stop_at = rows[r].stop_at};
        long n = pl_store_db_events(db, "s1", rows[r].after, rows[r].max_bytes, s_collect, &got);
        if (n != rows[r].n || (size_t) n != got.n || (n > 0 && got.seq[0] != rows[r].first))
            fail_msg("row %zu: %ld events, first %lld", r, n, (long long) got.seq[0]);
        for (size_t i = 1; i < got.n; i++)
            assert_int_equal(got.seq[i], got.seq[i - 1] + 1);
    }
    s_got_t got = {0};
    assert_int_equal(pl_store_db_events(db, "s2", 0, SIZE_MAX, s_collect, &got), 0);
    assert_int_equal(pl_store_db_events(db, "nope", 0, SIZE_MAX, s_collect, &got), 0);

    /* fn may not call back into the db; the iteration itself goes on */
    got = (s_got_t){.db = db};
    assert_int_equal(pl_store_db_events(db, "s1", 8, SIZE_MAX, s_collect, &got), 2);
    assert_int_equal(got.reentry_rc, -PL_E_BUSY);
    assert_int_equal(pl_store_db_count(db), 2);
    pl_store_db_close(&db, true);
}

static void
test_prune_gap(void **state)
{
    (void) state;
    pl_store_db_t *db = s_open(__func__, NULL);
    s_put_session(db, "s1", 1.0);
    for (int64_t seq = 1; seq <= 10; seq++)
        assert_int_equal(s_put_event(db, "s1", seq), 0);
    assert_false(pl_store_db_events_gap(db, "s1", 0)); /* nothing pruned yet */
    assert_int_equal(pl_store_db_prune_events(db, "s1", 4), 0);
    assert_int_equal(pl_store_db_prune_events(db, "s1", 2), 0); /* pruned never goes back */

    static const struct {
        int64_t after;
        bool gap;
    } rows[] = {{0, true}, {3, true}, {4, false}, {8, false}, {10, false}};
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++)
        if (pl_store_db_events_gap(db, "s1", rows[r].after) != rows[r].gap)
            fail_msg("row %zu: after %lld", r, (long long) rows[r].after);
    s_got_t got = {0};
    assert_int_equal(pl_store_db_events(db, "s1", 0, SIZE_MAX, s_collect, &got), 6);
    assert_int_equal(got.seq[0], 5);
    assert_false(pl_store_db_events_gap(db, "nope", 0));
    assert_int_equal(pl_store_db_prune_events(db, "nope", 4), -PL_E_NOT_FOUND);
    assert_int_equal(s_load_numbers(db, "s1").seq, 10);
    pl_store_db_close(&db, true);
}

static void
test_recover(void **state)
{
    (void) state;
    const char *name = __func__;
    pl_store_db_t *db = s_open(name, NULL);
    s_put_session(db, "sa", 1.0);
    s_put_session(db, "sb", 1.0);
    s_put_session(db, "sc", 1.0);
    for (int64_t seq = 1; seq <= 5; seq++)
        assert_int_equal(s_put_event(db, "sa", seq), 0);
    assert_int_equal(s_put_event(db, "sb", 9), 0);
    pl_store_db_close(&db, false);
    s_raw_int(name, "UPDATE sessions SET seq = 2 WHERE id = 'sb'"); /* seq behind its events */

    bool clean = true;
    db = s_open(name, &clean);
    assert_false(clean);
    assert_int_equal(pl_store_db_recover(db, 1000), 3);
    static const struct {
        const char *id;
        int64_t seq;
    } rows[] = {{"sa", 1005}, {"sb", 1009}, {"sc", 1000}};
    for (size_t r = 0; r < 3; r++)
        assert_int_equal(s_load_numbers(db, rows[r].id).seq, rows[r].seq);
    assert_int_equal(pl_store_db_recover(db, 10), 3);
    assert_int_equal(s_load_numbers(db, "sa").seq, 1015);
    assert_true(pl_store_db_recover(db, -1) < 0);
    pl_store_db_close(&db, true);
}

/* ---- batches ---- */

static void
test_batch(void **state)
{
    (void) state;
    const char *name = __func__;
    pl_store_db_t *db = s_open(name, NULL);
    assert_int_equal(pl_store_db_commit(db), 0); /* none open: no-op */
    assert_int_equal(pl_store_db_begin(db), 0);
    assert_int_equal(pl_store_db_begin(db), 0); /* open: no-op */
    assert_true(pl_store_db_in_batch(db));
    s_put_session(db, "s1", 1.0);
    assert_int_equal(s_put_event(db, "s1", 1), 0);
    assert_int_equal(s_put_msg(db, "s1", 2, "q1", "inside"), 0);

    /* the batch sees itself; another connection does not yet */
    assert_int_equal(pl_store_db_count(db), 1);
    pl_store_session_t s = s_load_numbers(db, "s1");
    assert_int_equal(s.seq, 1);
    assert_int_equal(s.messages, 1);
    s_got_t got = {0};
    assert_int_equal(pl_store_db_events(db, "s1", 0, SIZE_MAX, s_collect, &got), 1);
    assert_int_equal(s_raw_int(name, "SELECT count(*) FROM sessions"), 0);

    assert_int_equal(pl_store_db_commit(db), 0);
    assert_false(pl_store_db_in_batch(db));
    assert_int_equal(s_raw_int(name, "SELECT count(*) FROM sessions"), 1);

    /* a batch still open at close is committed by it */
    assert_int_equal(pl_store_db_begin(db), 0);
    assert_int_equal(s_put_msg(db, "s1", 3, "a1", "answer"), 0);
    pl_store_db_close(&db, false);
    db = s_open(name, NULL);
    assert_int_equal(s_load_numbers(db, "s1").messages, 2);
    pl_store_db_close(&db, true);
}

/* A write that fails inside a batch loses the whole batch; the next works. */
static void
test_batch_failure(void **state)
{
    (void) state;
    const char *name = __func__;
    pl_store_db_t *db = s_open(name, NULL);
    pl_store_db_close(&db, true);
    s_raw_int(name, "CREATE TRIGGER fail BEFORE INSERT ON events WHEN NEW.type = 666"
                    " BEGIN SELECT RAISE(ABORT, 'injected failure'); END");
    db = s_open(name, NULL);

    assert_int_equal(pl_store_db_begin(db), 0);
    s_put_session(db, "s1", 1.0);
    assert_int_equal(s_put_event(db, "s1", 1), 0);
    assert_true(pl_store_db_put_event(db, "s1", 2, 666, NULL, "x", 1) < 0);
    assert_true(s_put_msg(db, "s1", 2, "q1", "after the failure") < 0); /* refused */
    assert_true(pl_store_db_in_batch(db));
    assert_true(pl_store_db_commit(db) < 0);
    assert_false(pl_store_db_in_batch(db));
    pl_store_session_t s;
    pl_store_msg_t *msgs = NULL;
    size_t n = 0;
    assert_int_equal(pl_store_db_load(db, "s1", 10, &s, &msgs, &n), -PL_E_NOT_FOUND);

    /* outside a batch a failed write loses only itself */
    s_put_session(db, "s1", 1.0);
    assert_true(pl_store_db_put_event(db, "s1", 3, 666, NULL, "x", 1) < 0);
    assert_int_equal(s_put_event(db, "s1", 4), 0);
    assert_int_equal(pl_store_db_begin(db), 0);
    assert_int_equal(s_put_msg(db, "s1", 8, "q1", "fine"), 0);
    assert_int_equal(pl_store_db_commit(db), 0);
    s = s_load_numbers(db, "s1");
    assert_int_equal(s.seq, 4);
    assert_int_equal(s.messages, 1);
    pl_store_db_close(&db, true);
}

/* ---- data ---- */

static void
test_round_trip(void **state)
{
    (void) state;
    const char *name = __func__;
    static const char *const texts[] = {
        "it's \"quoted\"",
        "'); DROP TABLE sessions; --",
        "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\x8e\x89 caf\xc3\xa9",
        "line\nbreak\ttab\\backslash %s %n",
        "",
    };
    size_t big = S_MIB;
    char *text = malloc(big + 1);
    unsigned char *body = malloc(big);
    assert_non_null(text);
    assert_non_null(body);
    for (size_t i = 0; i < big; i++) {
        text[i] = "'\"x\xc3\xa9\n"[i % 6];
        body[i] = (unsigned char) (i * 131);
    }
    text[big] = '\0';

    pl_store_db_t *db = s_open(name, NULL);
    pl_store_session_t in = {"s1", "m'odel", "k\"ind", (char *) texts[2], (char *) texts[1], 1.5, 0, 0};
    assert_int_equal(pl_store_db_put_session(db, &in), 0);
    size_t nt = sizeof texts / sizeof texts[0];
    for (size_t i = 0; i < nt; i++)
        assert_int_equal(s_put_msg(db, "s1", 2 * (int64_t) (i + 1), "m", texts[i]), 0);
    assert_int_equal(s_put_msg(db, "s1", 100, "big", text), 0);
    assert_int_equal(pl_store_db_put_event(db, "s1", 1, 7, NULL, body, big), 0);
    assert_int_equal(pl_store_db_put_event(db, "s1", 2, 7, NULL, NULL, 0), 0);
    pl_store_db_close(&db, true);

    db = s_open(name, NULL);
    pl_store_session_t s;
    pl_store_msg_t *msgs = NULL;
    size_t n = 0;
    assert_int_equal(pl_store_db_load(db, "s1", 100, &s, &msgs, &n), 0);
    assert_string_equal(s.model, in.model);
    assert_string_equal(s.kind, in.kind);
    assert_string_equal(s.name, in.name);
    assert_string_equal(s.system, in.system);
    assert_int_equal(n, nt + 1);
    for (size_t i = 0; i < nt; i++)
        assert_string_equal(msgs[i].e.text, texts[i]);
    assert_int_equal(strlen(msgs[nt].e.text), big);
    assert_memory_equal(msgs[nt].e.text, text, big);
    pl_store_session_free(&s);
    pl_store_msgs_free(msgs, n);
    assert_int_equal(s_raw_int(name, "SELECT count(*) FROM sessions"), 1); /* not dropped */

    s_got_t got = {0};
    assert_int_equal(pl_store_db_events(db, "s1", 0, SIZE_MAX, s_collect, &got), 2);
    assert_int_equal(got.bytes, big);
    assert_int_equal(s_raw_int(name, "SELECT count(*) FROM events WHERE length(body) = 1048576"), 1);
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM events WHERE seq = 1 AND substr(body, 1000, 1) = x'%02x'",
             body[999]);
    assert_int_equal(s_raw_int(name, sql), 1);
    pl_store_db_close(&db, true);
    free(text);
    free(body);
}

/* ---- refusals ---- */

/* The calls that name a session; delete last, so the others find it. */
typedef enum { OP_MESSAGE, OP_EVENT, OP_PRUNE, OP_MEMBER, OP_RECEIPT, OP_CLEAR, OP_LOAD, OP_DELETE, OP_COUNT_ } s_op_t;

static int
s_call(pl_store_db_t *db, s_op_t op, const char *id)
{
    pl_store_session_t s;
    pl_store_msg_t *msgs = NULL;
    size_t n = 0;
    int rc;
    switch (op) {
    case OP_MESSAGE:
        return s_put_msg(db, id, 2, "m1", "hi");
    case OP_EVENT:
        return s_put_event(db, id, 1);
    case OP_PRUNE:
        return pl_store_db_prune_events(db, id, 1);
    case OP_MEMBER:
        return pl_store_db_put_member(db, id, "c1", 1.0);
    case OP_RECEIPT:
        return pl_store_db_put_receipt(db, id, "m1", "c1", 1.0);
    case OP_CLEAR:
        return pl_store_db_clear(db, id);
    case OP_DELETE:
        return pl_store_db_delete(db, id);
    case OP_LOAD:
        rc = pl_store_db_load(db, id, 10, &s, &msgs, &n);
        if (rc != 0) { /* failed: nothing to free */
            assert_null(s.id);
            assert_null(msgs);
            assert_int_equal(n, 0);
        }
        pl_store_session_free(&s);
        pl_store_msgs_free(msgs, n);
        return rc;
    default:
        return 0;
    }
}

static void
test_refusals(void **state)
{
    (void) state;
    const char *name = __func__;
    char id64[PL_ID_MAX + 1], id65[PL_ID_MAX + 2];
    memset(id64, 'x', sizeof id64 - 1);
    id64[PL_ID_MAX] = '\0';
    memset(id65, 'y', sizeof id65 - 1);
    id65[PL_ID_MAX + 1] = '\0';
    const struct {
        const char *id;
        int rc;
    } ids[] = {{NULL, -PL_E_MISSING_FIELD},
               {"", -PL_E_MISSING_FIELD},
               {id65, -PL_E_TOO_LARGE},
               {id64, -PL_E_NOT_FOUND}}; /* a valid id, not stored */

    pl_store_db_t *db = s_open(name, NULL);
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++)
        for (s_op_t op = 0; op < OP_COUNT_; op++)
            if (s_call(db, op, ids[i].id) != ids[i].rc)
                fail_msg("id %zu op %d: %d", i, (int) op, s_call(db, op, ids[i].id));
    assert_int_equal(s_raw_int(name, "SELECT count(*) FROM messages"), 0); /* nothing orphaned */
    assert_int_equal(s_raw_int(name, "SELECT count(*) FROM events"), 0);

    /* a 64-byte id is fine once stored */
    s_put_session(db, id64, 1.0);
    for (s_op_t op = 0; op < OP_COUNT_; op++)
        if (s_call(db, op, id64) != 0)
            fail_msg("op %d on a stored id", (int) op);
    s_put_session(db, "s1", 1.0);

    /* arguments of one call */
    pl_store_msg_t m = {.e = {.id = "m1", .role = "user", .text = "x", .conn = "", .ts = 1.0}, .ord = 2, .finish = -1};
    pl_store_msg_t bad = m;
    assert_int_equal(pl_store_db_put_message(db, "s1", NULL), -PL_E_MISSING_FIELD);
    bad.e.id = NULL;
    assert_int_equal(pl_store_db_put_message(db, "s1", &bad), -PL_E_MISSING_FIELD);
    bad = m, bad.e.id = id65;
    assert_int_equal(pl_store_db_put_message(db, "s1", &bad), -PL_E_TOO_LARGE);
    bad = m, bad.ord = -2;
    assert_int_equal(pl_store_db_put_message(db, "s1", &bad), -PL_E_BAD_FRAME);
    bad = m, bad.finish = PL_FINISH_COUNT_;
    assert_int_equal(pl_store_db_put_message(db, "s1", &bad), -PL_E_BAD_FRAME);
    bad = m, bad.e.conn = id65;
    assert_int_equal(pl_store_db_put_message(db, "s1", &bad), -PL_E_TOO_LARGE);
    assert_int_equal(pl_store_db_put_event(db, "s1", 1, 7, NULL, "x", (size_t) PL_ENV_MAX + 1), -PL_E_TOO_LARGE);
    assert_int_equal(pl_store_db_put_event(db, "s1", -1, 7, NULL, "x", 1), -PL_E_BAD_FRAME);
    assert_int_equal(pl_store_db_put_event(db, "s1", 1, 7, NULL, NULL, 1), -PL_E_BAD_FRAME);
    assert_int_equal(pl_store_db_put_event(db, "s1", 1, 7, id65, "x", 1), -PL_E_TOO_LARGE);
    assert_int_equal(pl_store_db_put_member(db, "s1", id65, 1.0), -PL_E_TOO_LARGE);
    assert_int_equal(pl_store_db_put_receipt(db, "s1", "m1", NULL, 1.0), -PL_E_MISSING_FIELD);
    assert_int_equal(pl_store_db_put_session(db, NULL), -PL_E_MISSING_FIELD);
    char longname[PL_NAME_MAX + 2];
    memset(longname, 'n', sizeof longname - 1);
    longname[PL_NAME_MAX + 1] = '\0';
    pl_store_session_t ls = {"s2", "echo", "private", longname, NULL, 1.0, 0, 0};
    assert_int_equal(pl_store_db_put_session(db, &ls), -PL_E_TOO_LARGE);
    assert_int_equal(pl_store_db_prune_events(db, "s1", -1), -PL_E_BAD_FRAME);
    assert_true(pl_store_db_events(db, "s1", 0, 10, NULL, NULL) < 0);
    assert_true(pl_store_db_list(db, 10, NULL, NULL) < 0);
    assert_true(pl_store_db_load(db, "s1", 10, NULL, NULL, NULL) < 0);
    assert_int_equal(pl_store_db_count(db), 1); /* s1; id64 was deleted */
    pl_store_db_close(&db, true);

    /* a closed database */
    assert_null(db);
    for (s_op_t op = 0; op < OP_COUNT_; op++)
        assert_true(s_call(db, op, "s1") < 0);
    assert_true(pl_store_db_put_session(db, &ls) < 0);
    assert_true(pl_store_db_begin(db) < 0);
    assert_true(pl_store_db_commit(db) < 0);
    assert_false(pl_store_db_in_batch(db));
    assert_true(pl_store_db_count(db) < 0);
    assert_true(pl_store_db_recover(db, 1) < 0);
    assert_true(pl_store_db_events_gap(db, "s1", 0));
    s_listed_t l = {.n = 0};
    assert_true(pl_store_db_list(db, 10, s_list_ids, &l) < 0);
    pl_store_db_close(NULL, true);
    pl_store_session_free(NULL);
    pl_store_msgs_free(NULL, 3);

    /* paths that cannot be opened */
    char err[256];
    assert_null(pl_store_db_open(NULL, true, NULL, err, sizeof err));
    assert_true(strlen(err) > 0);
    assert_null(pl_store_db_open("/nonexistent-dir/x.db", true, NULL, err, sizeof err));
    assert_non_null(strstr(err, "nonexistent-dir"));
    assert_null(pl_store_db_open(s_dir, true, NULL, NULL, 0)); /* a directory; no err buffer */
}

/* ---- query plans ---- */

/* Every statement of S_STMTS, by its enum value. */
static const char *const s_stmt_sql[S_COUNT_] = {
#define X(id, sql) [S_##id] = sql,
    S_STMTS(X)
#undef X
};

/* What the plan of a statement must hold: each read or write of messages
   and events goes through its (session, …) index. */
static const struct {
    s_stmt_t stmt;
    const char *plan;
} s_plans[] = {
    {S_MSG_NEWEST, "SEARCH messages USING INDEX messages_session_ord (session=?)"},
    {S_MSG_UPDATE, "SEARCH messages USING INDEX messages_session_ord (session=? AND ord=?)"},
    {S_MSG_DEL, "SEARCH messages USING INDEX messages_session_ord (session=?)"},
    {S_EVT_AFTER, "SEARCH events USING INDEX events_session_seq (session=? AND seq>?)"},
    {S_EVT_PRUNE, "SEARCH events USING INDEX events_session_seq (session=?"},
    {S_EVT_DEL, "SEARCH events USING INDEX events_session_seq (session=?)"},
    {S_SESS_RECOVER, "SEARCH e USING COVERING INDEX events_session_seq (session=?)"},
    {S_SESS_GET, "SEARCH sessions USING INDEX sqlite_autoindex_sessions_1 (id=?)"},
    {S_SESS_PRUNED, "SEARCH sessions USING INDEX sqlite_autoindex_sessions_1 (id=?)"},
    {S_SESS_LIST, "SCAN sessions USING INDEX sessions_created"},
    {S_MEM_DEL, "SEARCH members USING PRIMARY KEY (session=?)"},
    {S_RCP_DEL, "SEARCH receipts USING PRIMARY KEY (session=?)"},
};

/* The lines of statement `sql`'s EXPLAIN QUERY PLAN, one a line, into out. */
static void
s_plan(sqlite3 *raw, const char *sql, char *out, size_t size)
{
    char explain[2048];
    snprintf(explain, sizeof explain, "EXPLAIN QUERY PLAN %s", sql);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(raw, explain, -1, &st, NULL) != SQLITE_OK)
        fail_msg("%s: %s", sql, sqlite3_errmsg(raw));
    size_t n = 0;
    out[0] = '\0';
    while (sqlite3_step(st) == SQLITE_ROW && n < size)
        n += (size_t) snprintf(out + n, size - n, "%s\n", (const char *) sqlite3_column_text(st, 3));
    sqlite3_finalize(st);
}

static void
test_query_plans(void **state)
{
    (void) state;
    const char *name = __func__;
    pl_store_db_t *db = s_open(name, NULL);
    pl_store_db_close(&db, true);
    sqlite3 *raw = NULL;
    assert_int_equal(sqlite3_open_v2(s_path(name), &raw, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    char plan[1024];
    for (size_t i = 0; i < S_COUNT_; i++) {
        s_plan(raw, s_stmt_sql[i], plan, sizeof plan);
        /* every ORDER BY is an index's order; a full scan only of sessions,
           and only where every session is wanted (list, count, recover) */
        if (strstr(plan, "TEMP B-TREE"))
            fail_msg("a sort: %s\n%s", s_stmt_sql[i], plan);
        bool all_sessions = i == S_SESS_LIST || i == S_SESS_COUNT || i == S_SESS_RECOVER;
        for (const char *p = strstr(plan, "SCAN "); p; p = strstr(p + 1, "SCAN "))
            if (strncmp(p, "SCAN CONSTANT ROW", 17) != 0 && !(all_sessions && strncmp(p, "SCAN sessions", 13) == 0))
                fail_msg("a scan: %s\n%s", s_stmt_sql[i], plan);
    }
    for (size_t i = 0; i < sizeof s_plans / sizeof s_plans[0]; i++) {
        s_plan(raw, s_stmt_sql[s_plans[i].stmt], plan, sizeof plan);
        if (!strstr(plan, s_plans[i].plan))
            fail_msg("%s\nplan:\n%swanted: %s", s_stmt_sql[s_plans[i].stmt], plan, s_plans[i].plan);
    }
    sqlite3_close(raw);
}

/* ---- the suite ---- */

static int
s_setup(void **state)
{
    (void) state;
    const char *tmp = getenv("TMPDIR");
    snprintf(s_dir, sizeof s_dir, "%s/test_store_db.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    return mkdtemp(s_dir) ? 0 : -1;
}

static int
s_teardown(void **state)
{
    (void) state;
    DIR *d = opendir(s_dir);
    if (!d)
        return -1;
    struct dirent *e;
    for (e = readdir(d); e; e = readdir(d)) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            char path[600];
            snprintf(path, sizeof path, "%s/%s", s_dir, e->d_name);
            unlink(path);
        }
    }
    closedir(d);
    return rmdir(s_dir);
}

int
main(void)
{
    pl_log_init(PL_LOG_TEXT, PL_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_new),      cmocka_unit_test(test_newer_version_refused),
        cmocka_unit_test(test_clean_flag),    cmocka_unit_test(test_crash),
        cmocka_unit_test(test_sessions),      cmocka_unit_test(test_message_order),
        cmocka_unit_test(test_load_window),   cmocka_unit_test(test_clear),
        cmocka_unit_test(test_events),        cmocka_unit_test(test_prune_gap),
        cmocka_unit_test(test_recover),       cmocka_unit_test(test_batch),
        cmocka_unit_test(test_batch_failure), cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_refusals),      cmocka_unit_test(test_query_plans),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
