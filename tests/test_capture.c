/*  test_capture — the capture format (protocol/pl_capture.c): what is
    packed reads back the same; a file cut anywhere reads as its whole
    records plus "cut short"; wrong headers, versions, kinds, arities and
    types are refused with the record's number and offset. */
#include <setjmp.h> /* cmocka needs these three first */
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "pl_capture.h"

typedef struct {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} buf_t;

static void
buf_init(buf_t *b)
{
    msgpack_sbuffer_init(&b->sb);
    msgpack_packer_init(&b->pk, &b->sb, msgpack_sbuffer_write);
}

/* A capture with one record of each kind; returns their count. */
static int
sample(buf_t *b, size_t *header_len)
{
    buf_init(b);
    pl_cap_header_t h = {.version = PL_CAP_VERSION, .created_us = 1700000000000000};
    snprintf(h.source, sizeof h.source, "parleyd tap ipc:///tmp/t");
    pl_cap_pack_header(&b->pk, &h);
    *header_len = b->sb.size;
    static const char payload[] = "{\"type\":\"chat\",\"message\":\"hi\\u0000\"}\0binary";
    pl_cap_rec_t r[] = {
        {.kind = PL_CAP_OPEN, .seq = 1, .t_us = 10, .conn = 7, .path = "/ws", .path_len = 3, .dialect = "session",
         .dialect_len = 7},
        {.kind = PL_CAP_FRAME, .seq = 2, .t_us = 11, .conn = 7, .dir = PL_CAP_IN, .opcode = PL_CAP_TEXT,
         .data = payload, .len = sizeof payload - 1},
        {.kind = PL_CAP_FRAME, .seq = 3, .t_us = 12, .conn = 7, .dir = PL_CAP_OUT, .opcode = PL_CAP_BINARY,
         .data = "", .len = 0},
        {.kind = PL_CAP_LOST, .seq = 4, .t_us = 13, .count = 5},
        {.kind = PL_CAP_CLOSE, .seq = 10, .t_us = 14, .conn = UINT64_MAX, .code = 1001, .by = PL_CAP_OUT},
    };
    for (size_t i = 0; i < sizeof r / sizeof *r; i++)
        pl_cap_pack_rec(&b->pk, &r[i]);
    return (int) (sizeof r / sizeof *r);
}

static void
test_round_trip(void **state)
{
    (void) state;
    buf_t b;
    size_t hl;
    int n = sample(&b, &hl);
    pl_cap_reader_t rd;
    assert_int_equal(pl_cap_reader_open(&rd, b.sb.data, b.sb.size), 0);
    assert_int_equal(rd.header.version, 1);
    assert_true(rd.header.created_us == 1700000000000000);
    assert_string_equal(rd.header.source, "parleyd tap ipc:///tmp/t");
    pl_cap_rec_t r;
    assert_int_equal(pl_cap_reader_next(&rd, &r), 1);
    assert_int_equal(r.kind, PL_CAP_OPEN);
    assert_int_equal(r.conn, 7);
    assert_int_equal(r.path_len, 3);
    assert_memory_equal(r.path, "/ws", 3);
    assert_memory_equal(r.dialect, "session", 7);
    assert_int_equal(pl_cap_reader_next(&rd, &r), 1);
    assert_int_equal(r.kind, PL_CAP_FRAME);
    assert_int_equal(r.dir, PL_CAP_IN);
    assert_int_equal(r.opcode, PL_CAP_TEXT);
    assert_true(r.len > 40 && memchr(r.data, '\0', r.len)); /* NULs survive */
    const char *payload = r.data;
    assert_int_equal(pl_cap_reader_next(&rd, &r), 1);
    assert_int_equal(r.opcode, PL_CAP_BINARY);
    assert_int_equal(r.len, 0);
    /* records point into the buffer, not the reader: still valid */
    assert_memory_equal(payload, "{\"type\":\"chat\"", 14);
    assert_true(payload >= b.sb.data && payload < b.sb.data + b.sb.size);
    assert_int_equal(pl_cap_reader_next(&rd, &r), 1);
    assert_int_equal(r.kind, PL_CAP_LOST);
    assert_int_equal(r.count, 5);
    assert_int_equal(pl_cap_reader_next(&rd, &r), 1);
    assert_int_equal(r.kind, PL_CAP_CLOSE);
    assert_int_equal(r.code, 1001);
    assert_int_equal(r.by, PL_CAP_OUT);
    assert_true(r.conn == UINT64_MAX);
    assert_int_equal(pl_cap_reader_next(&rd, &r), 0);
    assert_int_equal(pl_cap_reader_next(&rd, &r), 0);
    assert_int_equal(rd.records, (uint64_t) n);
    pl_cap_reader_close(&rd);
    msgpack_sbuffer_destroy(&b.sb);
}

/* Cut at every byte: the header must be whole, then every whole record
   reads and the cut one is reported as cut short, never as corrupt. */
static void
test_cut_anywhere(void **state)
{
    (void) state;
    buf_t b;
    size_t hl;
    int n = sample(&b, &hl);
    for (size_t cut = 0; cut <= b.sb.size; cut++) {
        pl_cap_reader_t rd;
        int rc = pl_cap_reader_open(&rd, b.sb.data, cut);
        if (cut < hl) {
            assert_int_equal(rc, -1);
            assert_true(strstr(rd.err, cut ? "cut short" : "empty"));
            pl_cap_reader_close(&rd);
            continue;
        }
        assert_int_equal(rc, 0);
        pl_cap_rec_t r;
        int got = 0;
        while ((rc = pl_cap_reader_next(&rd, &r)) == 1)
            got++;
        if (cut == b.sb.size) {
            assert_int_equal(rc, 0);
            assert_int_equal(got, n);
        } else {
            assert_true(rc == 0 || rc == PL_CAP_TRUNCATED);
            if (rc == PL_CAP_TRUNCATED)
                assert_non_null(strstr(rd.err, "cut short"));
            assert_true(got < n);
        }
        pl_cap_reader_close(&rd);
    }
    msgpack_sbuffer_destroy(&b.sb);
}

static void
test_bad_headers(void **state)
{
    (void) state;
    struct {
        const char *bytes;
        size_t len;
        const char *err;
    } rows[] = {
        {"{\"json\":1}", 10, "not a Parley capture"},
        {"\x91\x01", 2, "not a Parley capture"},
        /* {"format":"parley-capture"} without a version */
        {"\x81\xa6" "format" "\xae" "parley-capture", 23, "not a Parley capture"},
        /* version 2 */
        {"\x82\xa6" "format" "\xae" "parley-capture" "\xa7" "version" "\x02", 32, "version 2"},
        {"\xc1", 1, "not msgpack"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof *rows; i++) {
        pl_cap_reader_t rd;
        assert_int_equal(pl_cap_reader_open(&rd, rows[i].bytes, rows[i].len), -1);
        if (!strstr(rd.err, rows[i].err))
            fail_msg("row %zu: '%s' lacks '%s'", i, rd.err, rows[i].err);
        pl_cap_reader_close(&rd);
    }
}

static void
test_bad_records(void **state)
{
    (void) state;
    struct {
        const char *bytes; /* msgpack of one record */
        size_t len;
        const char *err;
    } rows[] = {
        {"\x05", 1, "array"},
        {"\x94\x09\x01\x01\x01", 5, "unknown record kind"},
        {"\x95\x00\x01\x01\x01\xa3/ws", 8, "has 6 elements, not 5"},
        {"\x96\x00\xff\x01\x01\xa3/ws\xa1s", 10, "seq"},
        {"\x96\x00\x01\xff\x01\xa3/ws\xa1s", 10, "time"},
        {"\x96\x00\x01\x01\x01\x01\xa1s", 8, "path and dialect"},
        {"\x97\x01\x01\x01\x01\x02\x01\xc4\x00", 9, "direction"},
        {"\x97\x01\x01\x01\x01\x00\x03\xc4\x00", 9, "opcode"},
        {"\x97\x01\x01\x01\x01\x00\x01\xa0", 8, "payload"},
        {"\x96\x02\x01\x01\x01\xcd\x13\x88\x00", 9, "close code"},
        {"\x96\x02\x01\x01\x01\xcd\x03\xe8\x02", 9, "closed by"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof *rows; i++) {
        buf_t b;
        buf_init(&b);
        pl_cap_header_t h = {.version = 1};
        pl_cap_pack_header(&b.pk, &h);
        size_t at = b.sb.size;
        msgpack_sbuffer_write(&b.sb, rows[i].bytes, rows[i].len);
        msgpack_sbuffer_write(&b.sb, "\x94\x03\x01\x01\x00", 5); /* never reached */
        pl_cap_reader_t rd;
        assert_int_equal(pl_cap_reader_open(&rd, b.sb.data, b.sb.size), 0);
        pl_cap_rec_t r;
        assert_int_equal(pl_cap_reader_next(&rd, &r), PL_CAP_CORRUPT);
        char where[40];
        snprintf(where, sizeof where, "record 1 at byte %zu", at);
        if (!strstr(rd.err, rows[i].err) || !strstr(rd.err, where))
            fail_msg("row %zu: '%s' lacks '%s' or '%s'", i, rd.err, rows[i].err, where);
        assert_int_equal(pl_cap_reader_next(&rd, &r), 0); /* stays at its end */
        pl_cap_reader_close(&rd);
        msgpack_sbuffer_destroy(&b.sb);
    }
}

/* msgpack-c allocates what a container declares before reading it: a
   record "of 2^32 elements" must be refused before it asks for 32 GiB. */
static void
test_declared_counts(void **state)
{
    (void) state;
    static const char *const tails[] = {"\xdd\xff\xff\xff\xff\x00", "\xdf\xff\xff\xff\xff",
                                        "\xc6\xff\xff\xff\xff"};
    for (size_t i = 0; i < sizeof tails / sizeof *tails; i++) {
        buf_t b;
        buf_init(&b);
        pl_cap_header_t h = {.version = 1};
        pl_cap_pack_header(&b.pk, &h);
        msgpack_sbuffer_write(&b.sb, tails[i], strlen(tails[i]) + (i == 0));
        pl_cap_reader_t rd;
        assert_int_equal(pl_cap_reader_open(&rd, b.sb.data, b.sb.size), 0);
        pl_cap_rec_t r;
        assert_int_equal(pl_cap_reader_next(&rd, &r), PL_CAP_TRUNCATED);
        pl_cap_reader_close(&rd);
        msgpack_sbuffer_destroy(&b.sb);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_cut_anywhere),
        cmocka_unit_test(test_bad_headers),
        cmocka_unit_test(test_bad_records),
        cmocka_unit_test(test_declared_counts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
