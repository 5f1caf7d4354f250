/*  capfile — loading and writing capture files, and the small helpers
    the commands share (clock, usage errors, what an id key is). */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "pl_util.h"
#include "replay.h"

bool
rp_is_id_key(const char *key)
{
    size_t n = key ? strlen(key) : 0;
    return (n == 2 && strcmp(key, "id") == 0) || (n > 3 && strcmp(key + n - 3, "_id") == 0);
}

int
rp_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "parley-replay %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n(parley-replay %s --help for usage)\n", cmd);
    va_end(ap);
    return 2;
}

static rp_conn_t *
s_conn(rp_capture_t *cap, uint64_t id)
{
    /* Captures hold tens to thousands of connections: a scan from the
       newest is quick, as records cluster by connection in time. */
    for (size_t i = cap->nconns; i-- > 0;)
        if (cap->conns[i].id == id)
            return &cap->conns[i];
    rp_conn_t *v = realloc(cap->conns, (cap->nconns + 1) * sizeof *v);
    if (!v)
        return NULL;
    cap->conns = v;
    rp_conn_t *c = &v[cap->nconns++];
    memset(c, 0, sizeof *c);
    c->id = id;
    return c;
}

static int
s_index(rp_capture_t *cap)
{
    for (size_t i = 0; i < cap->n; i++) {
        const pl_cap_rec_t *r = &cap->recs[i];
        if (r->kind == PL_CAP_LOST) {
            cap->lost += r->count;
            continue;
        }
        rp_conn_t *c = s_conn(cap, r->conn);
        if (!c)
            return -1;
        if (r->kind == PL_CAP_OPEN) {
            c->open = r;
        } else if (r->kind == PL_CAP_CLOSE) {
            c->close = r;
        } else {
            if (c->n == c->cap) {
                size_t ncap = c->cap ? c->cap * 2 : 16;
                const pl_cap_rec_t **v = realloc(c->recs, ncap * sizeof *v);
                if (!v)
                    return -1;
                c->recs = v;
                c->cap = ncap;
            }
            c->recs[c->n++] = r;
        }
    }
    return 0;
}

int
rp_capture_load(const char *path, rp_capture_t *cap, char *err, size_t errsize)
{
    memset(cap, 0, sizeof *cap);
    int fd = open(path, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        snprintf(err, errsize, "%s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errsize, "%s: not a regular file", path);
        close(fd);
        return -1;
    }
    cap->size = (size_t) st.st_size;
    if (cap->size > 0) {
        cap->map = mmap(NULL, cap->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (cap->map == MAP_FAILED) {
            cap->map = NULL;
            snprintf(err, errsize, "%s: %s", path, strerror(errno));
            close(fd);
            return -1;
        }
    }
    close(fd);

    pl_cap_reader_t rd;
    if (pl_cap_reader_open(&rd, cap->map, cap->size) != 0) {
        snprintf(err, errsize, "%s: %s", path, rd.err);
        pl_cap_reader_close(&rd);
        rp_capture_free(cap);
        return -1;
    }
    cap->header = rd.header;
    size_t capn = 0;
    int rc;
    pl_cap_rec_t r;
    while ((rc = pl_cap_reader_next(&rd, &r)) == 1) {
        if (cap->n == capn) {
            capn = capn ? capn * 2 : 1024;
            pl_cap_rec_t *v = realloc(cap->recs, capn * sizeof *v);
            if (!v) {
                rc = PL_CAP_CORRUPT;
                snprintf(rd.err, sizeof rd.err, "out of memory");
                break;
            }
            cap->recs = v;
        }
        cap->recs[cap->n++] = r;
    }
    if (rc == PL_CAP_TRUNCATED)
        snprintf(cap->warning, sizeof cap->warning, "%s", rd.err);
    else if (rc != 0)
        snprintf(err, errsize, "%s: %s", path, rd.err);
    pl_cap_reader_close(&rd);
    if (rc == 0 || rc == PL_CAP_TRUNCATED) {
        if (s_index(cap) == 0)
            return 0;
        snprintf(err, errsize, "%s: out of memory", path);
    }
    rp_capture_free(cap);
    return -1;
}

void
rp_capture_free(rp_capture_t *cap)
{
    for (size_t i = 0; i < cap->nconns; i++)
        free(cap->conns[i].recs);
    free(cap->conns);
    free(cap->recs);
    if (cap->map)
        munmap(cap->map, cap->size);
    memset(cap, 0, sizeof *cap);
}

static int
s_write(void *data, const char *buf, size_t len)
{
    return fwrite(buf, 1, len, data) == len ? 0 : -1;
}

int
rp_writer_open(rp_writer_t *w, const char *path, const char *source, char *err, size_t errsize)
{
    memset(w, 0, sizeof *w);
    w->f = fopen(path, "wb");
    w->path = w->f ? strdup(path) : NULL;
    if (!w->f || !w->path) {
        snprintf(err, errsize, "%s: %s", path, strerror(errno));
        if (w->f)
            fclose(w->f);
        w->f = NULL;
        return -1;
    }
    pl_cap_header_t h = {.version = PL_CAP_VERSION, .created_us = pl_wall_us()};
    snprintf(h.source, sizeof h.source, "%s", source);
    msgpack_packer pk;
    msgpack_packer_init(&pk, w->f, s_write);
    pl_cap_pack_header(&pk, &h);
    if (fflush(w->f) != 0 || ferror(w->f)) {
        snprintf(err, errsize, "%s: %s", path, strerror(errno));
        rp_writer_close(w);
        return -1;
    }
    return 0;
}

int
rp_writer_add(rp_writer_t *w, const pl_cap_rec_t *r, bool flush)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, w->f, s_write);
    pl_cap_pack_rec(&pk, r);
    w->records++;
    if (ferror(w->f) || (flush && fflush(w->f) != 0))
        return -1;
    return 0;
}

int
rp_writer_close(rp_writer_t *w)
{
    int rc = 0;
    if (w->f) {
        rc = fflush(w->f) != 0 || ferror(w->f) ? -1 : 0;
        if (fclose(w->f) != 0)
            rc = -1;
    }
    free(w->path);
    memset(w, 0, sizeof *w);
    return rc;
}
