/*  pl_tap — the capture tap: every WebSocket frame in and out, published.

    parleyd --tap ENDPOINT binds an XPUB socket there and publishes one
    capture record (pl_capture.h) per ZeroMQ message: connection opens,
    frames with their bytes, closes. parley-replay record subscribes.

    It never blocks the server: each record is sent without waiting, and a
    recorder that is --tap-hwm records behind makes the next records fail;
    they are dropped and counted, and their sequence numbers are skipped so
    the recorder sees where and how many. When the tap is off the edge holds
    a NULL tap and pays one branch per frame.

    Only loopback endpoints are accepted (ipc://, tcp://127.0.0.1:, tcp://
    localhost:, tcp://[::1]:): a capture holds every user's messages. Query
    strings (which may carry tokens) are never published, only paths.

    One thread only: the tap is the edge thread's. */
#ifndef PL_TAP_H
#define PL_TAP_H

#include <stddef.h>
#include <stdint.h>

#include "../protocol/pl_capture.h"

typedef struct pl_tap pl_tap_t;

/* Binds `endpoint`. NULL with `err` saying why (not loopback, bind failed,
   out of memory). `hwm`: records queued per recorder before drops. */
pl_tap_t *pl_tap_new(const char *endpoint, int hwm, char *err, size_t errsize);
/* Closes the socket (queued records are not waited for). NULL-safe. */
void pl_tap_destroy(pl_tap_t **self_p);

void pl_tap_open(pl_tap_t *self, uint64_t conn, const char *path, const char *dialect);
/* dir: PL_CAP_IN or PL_CAP_OUT; opcode: PL_CAP_TEXT or PL_CAP_BINARY. */
void pl_tap_frame(pl_tap_t *self, uint64_t conn, int dir, int opcode, const void *data, size_t len);
/* by: PL_CAP_IN the client closed, PL_CAP_OUT the server did. */
void pl_tap_close(pl_tap_t *self, uint64_t conn, int code, int by);

/* Call every PL_TAP_SERVICE_MS: ZeroMQ attaches new recorders (and sends
   them PL_CAP_TAP_WELCOME) only when the socket is used, and XPUB queues
   their (un)subscriptions for us to read. */
#define PL_TAP_SERVICE_MS 100
void pl_tap_service(pl_tap_t *self);

/* Records published, and dropped because a recorder was too far behind. */
uint64_t pl_tap_published(const pl_tap_t *self);
uint64_t pl_tap_dropped(const pl_tap_t *self);

#endif
