/*  capture — the capture-file reader (protocol/pl_capture.c) that every
    parley-replay command runs on files it is given.

    (An empty string may come back as a NULL pointer: lengths are compared
    first, bytes only when there are some.)

    Input: a capture file. The reader must refuse or accept it with a
    reason, never crash; every record it yields must point inside the input,
    obey the header's limits, and re-pack (pl_cap_pack_rec) to an object
    that reads back as the same record. An error leaves the reader at its
    end, and a file cut short is reported as such. */
#include <string.h>

#include "fuzz.h"
#include "pl_capture.h"

static bool
s_inside(const uint8_t *data, size_t size, const char *p, size_t n)
{
    return n == 0 || ((const uint8_t *) p >= data && (const uint8_t *) p + n <= data + size);
}

static void
s_same(const pl_cap_rec_t *a, const pl_cap_rec_t *b)
{
    FUZZ_CHECK(a->kind == b->kind && a->seq == b->seq && a->t_us == b->t_us && a->conn == b->conn);
    switch (a->kind) {
    case PL_CAP_OPEN:
        FUZZ_CHECK(a->path_len == b->path_len && (!a->path_len || memcmp(a->path, b->path, a->path_len) == 0));
        FUZZ_CHECK(a->dialect_len == b->dialect_len &&
                   (!a->dialect_len || memcmp(a->dialect, b->dialect, a->dialect_len) == 0));
        break;
    case PL_CAP_FRAME:
        FUZZ_CHECK(a->dir == b->dir && a->opcode == b->opcode && a->len == b->len);
        FUZZ_CHECK(a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
        break;
    case PL_CAP_CLOSE:
        FUZZ_CHECK(a->code == b->code && a->by == b->by);
        break;
    default:
        FUZZ_CHECK(a->count == b->count);
        break;
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pl_cap_reader_t rd;
    if (pl_cap_reader_open(&rd, (const char *) data, size) != 0) {
        FUZZ_CHECK(rd.err[0] != '\0');
        pl_cap_reader_close(&rd);
        return 0;
    }
    FUZZ_CHECK(rd.header.version == PL_CAP_VERSION);
    FUZZ_CHECK(strlen(rd.header.source) <= PL_CAP_NAME_MAX);

    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    pl_cap_rec_t r;
    int rc;
    uint64_t n = 0;
    while ((rc = pl_cap_reader_next(&rd, &r)) == 1) {
        n++;
        FUZZ_CHECK(r.kind >= PL_CAP_OPEN && r.kind < PL_CAP_KIND_COUNT_);
        FUZZ_CHECK(s_inside(data, size, r.path, r.path_len) && r.path_len <= PL_CAP_NAME_MAX);
        FUZZ_CHECK(s_inside(data, size, r.dialect, r.dialect_len) && r.dialect_len <= PL_CAP_NAME_MAX);
        FUZZ_CHECK(s_inside(data, size, r.data, r.len) && r.len <= PL_CAP_PAYLOAD_MAX);
        FUZZ_CHECK(r.t_us >= 0 && r.code >= 0 && r.code <= 4999);

        msgpack_sbuffer_clear(&sb);
        pl_cap_pack_rec(&pk, &r);
        size_t off = 0;
        FUZZ_CHECK(msgpack_unpack_next(&u, sb.data, sb.size, &off) == MSGPACK_UNPACK_SUCCESS && off == sb.size);
        pl_cap_rec_t again;
        char why[120];
        FUZZ_CHECK(pl_cap_rec_from(&u.data, &again, why, sizeof why) == 0);
        s_same(&r, &again);
    }
    FUZZ_CHECK(rc == 0 || rc == PL_CAP_CORRUPT || rc == PL_CAP_TRUNCATED);
    FUZZ_CHECK(rd.records == n);
    if (rc != 0) {
        FUZZ_CHECK(rd.err[0] != '\0');
        FUZZ_CHECK(pl_cap_reader_next(&rd, &r) == 0); /* it stays at its end */
    }
    msgpack_unpacked_destroy(&u);
    msgpack_sbuffer_destroy(&sb);
    pl_cap_reader_close(&rd);
    return 0;
}
