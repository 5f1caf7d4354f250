/*  edge_ws — WebSocket connections at /ws: open, read, close.

    A connection is admitted before the upgrade (edge_limits.c), announced
    to its conn shard on ESTABLISHED and retired on CLOSED. Client frames
    are reassembled up to --max-frame (larger ones get TOO_LARGE; past
    --max-frame-hard the connection is closed with 1009), parsed once by the
    dialect and sent on as envelopes. Outbound frames go through the queue
    (edge_queue.c). Edge thread only. */
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "../protocol/pl_err.h"
#include "../protocol/pl_util.h"
#include "../transport/pl_log.h"
#include "edge_int.h"

/* Bytes past the hard frame limit we read and discard, as a multiple of it,
   before closing without waiting for the end of the message. */
#define S_DISCARD_FACTOR 16
/* ... or for this long. */
#define S_DISCARD_US (500 * LWS_US_PER_MS)

void
pl_edge_to_conn_actor(pl_edge_t *self, const pl_env_t *env)
{
    pl_outbox_send(self->out, PL_KIND_CONN, (unsigned) (env->conn % pl_runtime_shards(self->rt)), env);
}

void
pl_edge_send_error(pl_edge_t *self, pss_t *pss, const pl_env_t *err)
{
    if (err->code > 0 && err->code < PL_E_COUNT_)
        self->stats.errors[err->code]++;
    pl_edge_send_to(self, pss, err);
}

static int
s_open(pl_edge_t *self, struct lws *wsi, pss_t *pss)
{
    if (self->stopping)
        return -1;
    memset(pss, 0, sizeof *pss);
    pss->wsi = wsi;
    pss->is_ws = true;
    char key[24];
    do {
        pss->conn = pl_random_u64();
        pl_conn_name(pss->conn, key, sizeof key);
    } while (pl_map_get(self->conns, key));
    if (pl_map_put(self->conns, key, pss) != 0) {
        pss->conn = 0;
        return -1;
    }
    pl_edge_peer_add(self, wsi, pss);
    if (self->cfg->ws_sndbuf > 0) {
        /* Bounds the kernel's memory for a client that stops reading, and
           lets the queue see it sooner (the kernel doubles the value). */
        int size = (int) self->cfg->ws_sndbuf;
        setsockopt(lws_get_socket_fd(wsi), SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    }
    self->stats.conns_current++;
    self->stats.conns_total++;

    if (self->tap)
        pl_tap_open(self->tap, pss->conn, "/ws", "session");

    pl_env_t env;
    pl_env_init(&env, PL_MSG_CONN_OPEN);
    pl_env_set_u64(&env, PL_F_CONN, pss->conn);
    pl_edge_to_conn_actor(self, &env);
    env.type = PL_MSG_CONNECTED;
    pl_env_set_str(&env, PL_F_MODEL, self->cfg->model);
    pl_edge_send_to(self, pss, &env);
    pl_env_reset(&env);

    pl_log_info("connect", "conn=%s peer=%s path=/ws", key, pss->peer);
    return 0;
}

static void
s_closed(pl_edge_t *self, pss_t *pss)
{
    if (!pss->conn)
        return;
    char key[24];
    pl_conn_name(pss->conn, key, sizeof key);
    pl_map_take(self->conns, key);
    while (pss->nsessions > 0)
        pl_edge_index_remove(self, pss, pss->sessions[pss->nsessions - 1]);
    pl_edge_queue_free(self, pss);
    pl_edge_peer_remove(self, pss);
    free(pss->sessions);
    free(pss->rx);
    pss->sessions = NULL;
    pss->rx = NULL;
    self->stats.conns_current--;
    if (self->tap)
        pl_tap_close(self->tap, pss->conn, pss->close_code ? pss->close_code : pss->peer_close,
                     pss->close_code ? PL_CAP_OUT : PL_CAP_IN);

    pl_env_t env;
    pl_env_init(&env, PL_MSG_CONN_CLOSE);
    pl_env_set_u64(&env, PL_F_CONN, pss->conn);
    pl_edge_to_conn_actor(self, &env);
    pl_env_reset(&env);
    pl_log_info("disconnect", "conn=%s", key);
    pss->conn = 0;
}

static void
s_local_error(pl_edge_t *self, pss_t *pss, int code, const char *text)
{
    pl_env_t err;
    pl_env_init(&err, PL_MSG_ERROR);
    pl_env_set_u64(&err, PL_F_CONN, pss->conn);
    pl_env_set_i64(&err, PL_F_CODE, code);
    pl_env_set_str(&err, PL_F_TEXT, text);
    pl_edge_send_error(self, pss, &err);
    pl_env_reset(&err);
}

/* One whole client message has arrived. */
static void
s_message(pl_edge_t *self, pss_t *pss)
{
    self->stats.frames_in++;
    if (self->tap) /* a frame over --max-frame was not kept: it is captured empty */
        pl_tap_frame(self->tap, pss->conn, PL_CAP_IN, pss->rx_binary ? PL_CAP_BINARY : PL_CAP_TEXT, pss->rx,
                     pss->rxtotal > (size_t) self->cfg->max_frame ? 0 : pss->rxlen);
    if (pss->rx_binary) {
        s_local_error(self, pss, PL_E_BAD_FRAME, "binary frames are not accepted: send JSON text");
        return;
    }
    if (pss->rxtotal > (size_t) self->cfg->max_frame) {
        char text[128];
        snprintf(text, sizeof text, "frame of %zu bytes is over the limit of %ld", pss->rxtotal, self->cfg->max_frame);
        s_local_error(self, pss, PL_E_TOO_LARGE, text);
        return;
    }
    pl_env_t env;
    int rc = pl_session_parse(pss->rx ? pss->rx : "", pss->rxlen, &self->lim, &env);
    pl_env_set_u64(&env, PL_F_CONN, pss->conn);
    if (rc != 0) {
        pl_edge_send_error(self, pss, &env);
    } else if (env.type == PL_MSG_PING) {
        env.type = PL_MSG_PONG;
        pl_edge_send_to(self, pss, &env);
    } else {
        pl_log_info("message", "conn=c%016llx type=%s bytes=%zu", (unsigned long long) pss->conn, pl_msg_name(env.type),
                    pss->rxlen);
        pl_edge_to_conn_actor(self, &env);
    }
    pl_env_reset(&env);
}

static void
s_close_too_large(pl_edge_t *self, pss_t *pss)
{
    pl_log_warn("abuse", "conn=c%016llx frame_over=%ld action=close-1009", (unsigned long long) pss->conn,
                self->cfg->max_frame_hard);
    pl_edge_close(self, pss, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE);
}

static int
s_receive(pl_edge_t *self, struct lws *wsi, pss_t *pss, const void *in, size_t len)
{
    if (pss->close_code)
        return 0; /* closing: nothing more is read */
    if (pss->rxtotal == 0 && pss->rxlen == 0)
        pss->rx_binary = lws_frame_is_binary(wsi);
    pss->rxtotal += len;
    bool last = lws_is_final_fragment(wsi) && lws_remaining_packet_payload(wsi) == 0;
    if (pss->rxtotal > (size_t) self->cfg->max_frame_hard) {
        /* Over the hard limit: discard the rest of the message, then close with
           1009. Closing while the client is still sending would leave unread
           input, and the kernel's RST would destroy our close frame (the client
           would see 1006). A message that does not end within S_DISCARD_US
           or S_DISCARD_FACTOR times the limit is cut off anyway. */
        free(pss->rx);
        pss->rx = NULL;
        pss->rxlen = 0;
        if (!pss->discarding) {
            pss->discarding = true;
            lws_set_timer_usecs(wsi, S_DISCARD_US);
        }
        if (!last && pss->rxtotal / S_DISCARD_FACTOR <= (size_t) self->cfg->max_frame_hard)
            return 0;
        s_close_too_large(self, pss);
        return 0;
    }

    if (pss->rxtotal <= (size_t) self->cfg->max_frame && len > 0) {
        char *rx = realloc(pss->rx, pss->rxlen + len + 1);
        if (!rx)
            return -1;
        memcpy(rx + pss->rxlen, in, len);
        pss->rx = rx;
        pss->rxlen += len;
        rx[pss->rxlen] = '\0';
    }
    if (last) {
        s_message(self, pss);
        free(pss->rx);
        pss->rx = NULL;
        pss->rxlen = pss->rxtotal = 0;
        pss->rx_binary = false;
    }
    return 0;
}

/* The last word before the upgrade; pl_edge_admit() has answered whatever
   it refuses with a status, so this only guards paths it did not see. */
static int
s_filter(pl_edge_t *self, struct lws *wsi)
{
    char path[128] = "";
    lws_hdr_copy(wsi, path, sizeof path, WSI_TOKEN_GET_URI);
    if (self->stopping || self->draining || strcmp(path, "/ws") != 0)
        return -1;
    if (self->stats.conns_current >= self->stats.conns_limit) {
        self->stats.conns_rejected++;
        self->stats.rejected_max++;
        pl_log_warn("refused", "reason=max_connections limit=%lld", (long long) self->stats.conns_limit);
        return -1;
    }
    return 0;
}

int
pl_edge_ws_callback(pl_edge_t *self, struct lws *wsi, enum lws_callback_reasons reason, pss_t *pss, void *in,
                    size_t len)
{
    switch (reason) {
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        return s_filter(self, wsi);
    case LWS_CALLBACK_ESTABLISHED:
        return s_open(self, wsi, pss);
    case LWS_CALLBACK_RECEIVE:
        return s_receive(self, wsi, pss, in, len);
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        if (len >= 2) {
            int code = ((const unsigned char *) in)[0] << 8 | ((const unsigned char *) in)[1];
            pss->peer_close = code < 5000 ? code : LWS_CLOSE_STATUS_NO_STATUS;
        } else {
            pss->peer_close = LWS_CLOSE_STATUS_NO_STATUS; /* 1005: a close frame without a code */
        }
        return 0;
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return pl_edge_queue_write(self, wsi, pss);
    case LWS_CALLBACK_TIMER:
        if (pss->discarding && !pss->close_code)
            s_close_too_large(self, pss);
        return 0;
    case LWS_CALLBACK_CLOSED:
        s_closed(self, pss);
        return 0;
    default:
        return 0;
    }
}
