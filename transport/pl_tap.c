/*  pl_tap — the capture tap on a ZeroMQ XPUB socket. */
#include "pl_tap.h"

#include <errno.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zmq.h>

#include "../protocol/pl_capture.h"
#include "../protocol/pl_util.h"

struct pl_tap {
    void *zctx, *sock;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    uint64_t seq, published, dropped;
};

/* ipc:// paths (not the abstract namespace, "ipc://@...", which has no
   permissions) or loopback TCP. */
static bool
s_loopback(const char *ep)
{
    static const char *const ok[] = {"ipc://", "tcp://127.0.0.1:", "tcp://localhost:", "tcp://[::1]:"};
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        const char *rest = ep + strlen(ok[i]);
        if (strncmp(ep, ok[i], strlen(ok[i])) == 0 && *rest != '\0' && (i > 0 || *rest != '@'))
            return true;
    }
    return false;
}

pl_tap_t *
pl_tap_new(const char *endpoint, int hwm, char *err, size_t errsize)
{
    if (!s_loopback(endpoint)) {
        snprintf(err, errsize,
                 "--tap %s: only ipc://PATH or tcp://127.0.0.1:PORT (loopback) are allowed, not the abstract "
                 "ipc://@NAME: a capture holds every user's messages",
                 endpoint);
        return NULL;
    }
    pl_tap_t *self = calloc(1, sizeof *self);
    if (!self || !(self->zctx = zmq_ctx_new()) || !(self->sock = zmq_socket(self->zctx, ZMQ_XPUB))) {
        snprintf(err, errsize, "--tap: out of memory");
        pl_tap_destroy(&self);
        return NULL;
    }
    int one = 1, zero = 0;
    zmq_setsockopt(self->sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(self->sock, ZMQ_XPUB_NODROP, &one, sizeof one); /* EAGAIN at the HWM: we count drops */
    zmq_setsockopt(self->sock, ZMQ_LINGER, &zero, sizeof zero);
    /* Each recorder gets this first: once it has it, it is subscribed. */
    zmq_setsockopt(self->sock, ZMQ_XPUB_WELCOME_MSG, PL_CAP_TAP_WELCOME, strlen(PL_CAP_TAP_WELCOME));
    if (zmq_bind(self->sock, endpoint) != 0) {
        snprintf(err, errsize, "--tap %s: cannot bind: %s", endpoint, zmq_strerror(errno));
        pl_tap_destroy(&self);
        return NULL;
    }
    /* Only the server's own user may attach to an ipc:// socket. */
    if (strncmp(endpoint, "ipc://", 6) == 0 && chmod(endpoint + 6, 0600) != 0) {
        snprintf(err, errsize, "--tap %s: cannot restrict the socket to its owner: %s", endpoint, strerror(errno));
        pl_tap_destroy(&self);
        return NULL;
    }
    msgpack_sbuffer_init(&self->sb);
    msgpack_packer_init(&self->pk, &self->sb, msgpack_sbuffer_write);
    return self;
}

void
pl_tap_destroy(pl_tap_t **self_p)
{
    pl_tap_t *self = *self_p;
    if (!self)
        return;
    if (self->sock)
        zmq_close(self->sock);
    if (self->zctx)
        zmq_ctx_term(self->zctx);
    msgpack_sbuffer_destroy(&self->sb);
    free(self);
    *self_p = NULL;
}

static void
s_publish(pl_tap_t *self, pl_cap_rec_t *r)
{
    r->seq = ++self->seq;
    r->t_us = pl_wall_us();
    msgpack_sbuffer_clear(&self->sb);
    pl_cap_pack_rec(&self->pk, r);
    if (zmq_send(self->sock, self->sb.data, self->sb.size, ZMQ_DONTWAIT) < 0)
        self->dropped++;
    else
        self->published++;
}

void
pl_tap_service(pl_tap_t *self)
{
    char sub[256];
    while (zmq_recv(self->sock, sub, sizeof sub, ZMQ_DONTWAIT) >= 0)
        ;
}

void
pl_tap_open(pl_tap_t *self, uint64_t conn, const char *path, const char *dialect)
{
    pl_cap_rec_t r = {.kind = PL_CAP_OPEN, .conn = conn, .path = path, .dialect = dialect};
    r.path_len = strnlen(path, PL_CAP_NAME_MAX);
    r.dialect_len = strnlen(dialect, PL_CAP_NAME_MAX);
    s_publish(self, &r);
}

void
pl_tap_frame(pl_tap_t *self, uint64_t conn, int dir, int opcode, const void *data, size_t len)
{
    if (len > PL_CAP_PAYLOAD_MAX)
        len = PL_CAP_PAYLOAD_MAX;
    pl_cap_rec_t r = {.kind = PL_CAP_FRAME, .conn = conn, .dir = (pl_cap_dir_t) dir, .opcode = opcode,
                      .data = data, .len = len};
    s_publish(self, &r);
}

void
pl_tap_close(pl_tap_t *self, uint64_t conn, int code, int by)
{
    pl_cap_rec_t r = {.kind = PL_CAP_CLOSE, .conn = conn, .code = code, .by = (pl_cap_dir_t) by};
    s_publish(self, &r);
}

uint64_t
pl_tap_published(const pl_tap_t *self)
{
    return self ? self->published : 0;
}

uint64_t
pl_tap_dropped(const pl_tap_t *self)
{
    return self ? self->dropped : 0;
}
