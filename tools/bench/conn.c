/*  conn — one connection's life with lws: opening (paced by --rate, at
    most S_INFLIGHT handshakes at once, from its source address), its
    frames in (whole messages to turns.c or counted here), its frames out
    (one per WRITEABLE), and its end (a clean close from the bench, at most
    S_INFLIGHT at once; anything else is a drop). A connection is open when
    the server's `connected` arrives.

    On the worker's loop thread, like everything in a worker. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "worker_int.h"

/* Handshakes (and closes) in flight per worker: more only overflows the
   server's accept queue, which turns into SYN retries a second later; and
   each close arms an lws timeout in lws's one sorted timer list. */
#define S_INFLIGHT 512
/* A message arriving in pieces larger than this is an error (parleyd's
   frames are far smaller). */
#define S_RX_MAX (8u << 20)

/* --------------------------------------------------------- connecting -- */

static void
s_connect_timer(lws_sorted_usec_list_t *sul)
{
    pb_conn_pump(lws_container_of(sul, pb_worker_t, connect_sul));
}

/* A connection is settled: open, refused or failed. */
static void
s_settle(pb_worker_t *w)
{
    w->connecting--;
    w->settled++;
    pb_conn_pump(w);
    pb_worker_check(w);
}

static void
s_failed(pb_conn_t *k, const char *why, unsigned status)
{
    pb_worker_t *w = k->w;
    if (k->state != PB_C_CONNECTING && k->state != PB_C_HELLO)
        return;
    k->state = PB_C_FAILED;
    k->wsi = NULL;
    w->live--;
    if (w->tearing_down)
        return;
    if (status == 503) {
        w->c.refused++;
        pb_errs_add(&w->errs, 1, "refused by the server (503 BUSY)");
    } else {
        w->c.failed++;
        if (status)
            pb_errs_add(&w->errs, 1, "connection failed: the server answered the upgrade with HTTP %u", status);
        else
            pb_errs_add(&w->errs, 1, "connection failed: %s", why);
    }
    if (k->sess)
        pb_turns_lost_member(k);
    s_settle(w);
}

/* No lws validity timer per connection: lws keeps its timers in one
   sorted list, and re-arming one per connection on every frame received
   walks that list (quadratic at thousands of connections). The server's
   own heartbeat pings are answered by lws regardless. */
static const lws_retry_bo_t s_no_validity = {.secs_since_valid_ping = 0, .secs_since_valid_hangup = 0};

static void
s_source(uint32_t gidx, long per_address, char *buf, size_t size)
{
    uint32_t a = 0x7f000001u + gidx / (uint32_t) per_address;
    snprintf(buf, size, "%u.%u.%u.%u", a >> 24, (a >> 16) & 255, (a >> 8) & 255, a & 255);
}

static void
s_open(pb_worker_t *w, pb_conn_t *k)
{
    const pb_opts_t *o = w->o;
    char iface[20];
    struct lws_client_connect_info i;
    memset(&i, 0, sizeof i);
    i.context = w->ctx;
    i.address = o->host;
    i.port = o->port;
    i.path = o->path;
    i.host = o->host;
    i.origin = o->host;
    i.ietf_version_or_minus_one = -1;
    i.userdata = k;
    i.pwsi = &k->wsi;
    i.retry_and_idle_policy = &s_no_validity;
    if (o->spread) {
        s_source(k->gidx, o->per_address, iface, sizeof iface);
        /* lws 4.1.6 binds the socket to it before connect()
           (lws_socket_bind: lws_interface_to_sa matches an interface
           name, else parses a numeric address), port 0; every
           127.0.0.0/8 address is local on Linux. */
        i.iface = iface;
    }
    k->state = PB_C_CONNECTING;
    w->connecting++;
    w->live++;
    if (!w->c.first_connect_us)
        w->c.first_connect_us = pb_now_us();
    if (!lws_client_connect_via_info(&i))
        s_failed(k, "lws could not start the connection", 0);
}

/* Starts the connections that are due, up to S_INFLIGHT at once. A call
   from inside (a failure while starting one) makes the outer call go
   round again instead. */
void
pb_conn_pump(pb_worker_t *w)
{
    if (w->pumping) {
        w->again = true;
        return;
    }
    w->pumping = true;
    do {
        w->again = false;
        int64_t now = pb_now_us();
        while (w->next_connect < w->nconns && w->connecting < S_INFLIGHT && !w->tearing_down) {
            if (w->sl.conn_rate > 0) {
                int64_t due = w->connect_t0 + (int64_t) ((double) w->next_connect * 1e6 / w->sl.conn_rate);
                if (now < due) {
                    lws_sul_schedule(w->ctx, 0, &w->connect_sul, s_connect_timer, due - now);
                    break;
                }
            }
            s_open(w, &w->conns[w->next_connect++]);
        }
    } while (w->again);
    w->pumping = false;
}

/* ------------------------------------------------------------- frames -- */

void
pb_conn_error_frame(pb_worker_t *w, const char *buf, size_t len)
{
    cJSON *j = cJSON_ParseWithLength(buf, len);
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(j, "code");
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(j, "message");
    pb_errs_add(&w->errs, 1, "error frame %s: %s", cJSON_IsString(code) ? code->valuestring : "(no code)",
                cJSON_IsString(msg) ? msg->valuestring : "(no message)");
    cJSON_Delete(j);
}

/* One whole server message. */
static void
s_message(pb_conn_t *k, const char *buf, size_t len)
{
    pb_worker_t *w = k->w;
    int64_t now = pb_now_us();
    w->c.frames_total++;
    if (w->phase == PB_PH_RUN && now >= w->t_measure && now < w->t_stop)
        w->c.frames_window++;
    pb_frame_t f;
    pb_scan(buf, len, &f);
    if (!f.ok) {
        /* buf is not NUL-terminated: at most len bytes of it */
        pb_errs_add(&w->errs, 1, "a server frame that is not a JSON object with a type: %.*s",
                    (int) (len < 60 ? len : 60), buf);
        return;
    }
    switch (f.type) {
    case PB_F_CONNECTED:
        if (k->state != PB_C_HELLO)
            return;
        k->state = PB_C_OPEN;
        w->open_now++;
        w->c.opened++;
        w->c.last_connected_us = now;
        if (k->sess)
            pb_turns_open(k);
        s_settle(w);
        return;
    case PB_F_PONG:
        if (k->pinged && !k->ponged) {
            k->ponged = true;
            w->c.pongs++;
            w->ping_waiting--;
            pb_worker_check(w);
        }
        return;
    default:
        break;
    }
    if (k->sess) {
        pb_turns_frame(k, &f, buf, len, now);
    } else if (f.type == PB_F_ERROR) {
        pb_conn_error_frame(w, buf, len);
    }
}

static int
s_receive(pb_conn_t *k, struct lws *wsi, const char *in, size_t len)
{
    pb_worker_t *w = k->w;
    bool whole = lws_is_final_fragment(wsi) && lws_remaining_packet_payload(wsi) == 0;
    if (lws_frame_is_binary(wsi)) {
        pb_errs_add(&w->errs, 1, "a binary frame from the server");
        return 0;
    }
    if (whole && k->rx_len == 0) { /* the usual case: no copy */
        s_message(k, in, len);
        return 0;
    }
    if (len > S_RX_MAX - k->rx_len) {
        pb_errs_add(&w->errs, 1, "a server message over %u bytes", S_RX_MAX);
        return -1;
    }
    if (k->rx_len + len > k->rx_cap) {
        uint32_t ncap = k->rx_cap ? k->rx_cap : 4096;
        while (ncap < k->rx_len + len)
            ncap *= 2;
        char *v = realloc(k->rx, ncap);
        if (!v)
            return -1;
        k->rx = v;
        k->rx_cap = ncap;
    }
    memcpy(k->rx + k->rx_len, in, len);
    k->rx_len += (uint32_t) len;
    if (whole) {
        s_message(k, k->rx, k->rx_len);
        k->rx_len = 0;
    }
    return 0;
}

/* ------------------------------------------------------------ writing -- */

void
pb_worker_send(pb_conn_t *k, unsigned tx)
{
    k->tx |= (uint8_t) tx;
    if (k->wsi && k->state == PB_C_OPEN)
        lws_callback_on_writable(k->wsi);
}

static int
s_writeable(pb_conn_t *k, struct lws *wsi)
{
    pb_worker_t *w = k->w;
    if (k->state != PB_C_OPEN)
        return 0;
    if (k->tx & PB_TX_CLOSE) {
        k->state = PB_C_CLOSING;
        w->open_now--;
        lws_close_reason(wsi, LWS_CLOSE_STATUS_NORMAL, NULL, 0);
        return -1;
    }
    int64_t now = pb_now_us();
    char *out = (char *) w->txbuf + LWS_PRE;
    size_t n = 0;
    if (k->tx & (PB_TX_CREATE | PB_TX_JOIN)) {
        unsigned what = k->tx & PB_TX_CREATE ? PB_TX_CREATE : PB_TX_JOIN;
        k->tx &= (uint8_t) ~what;
        n = pb_turns_render_setup(k, what);
    } else if (k->chats) {
        n = pb_turns_render_chat(k, now);
    } else if (k->tx & PB_TX_PING) {
        k->tx &= (uint8_t) ~PB_TX_PING;
        n = (size_t) snprintf(out, PB_TX_MAX, "{\"type\":\"ping\"}");
    }
    if (n) {
        int m = lws_write(wsi, (unsigned char *) out, n, LWS_WRITE_TEXT);
        if (m < (int) n) {
            pb_errs_add(&w->errs, 1, "a write failed; the connection is closed");
            return -1;
        }
        w->c.frames_sent++;
    }
    if (k->tx || k->chats)
        lws_callback_on_writable(wsi);
    return 0;
}

/* Closes the open connections, at most S_INFLIGHT at once: each close
   arms an lws timeout (waiting for the server's close frame), and lws
   keeps its timeouts in one sorted list that every insertion walks. */
void
pb_conn_close_pump(pb_worker_t *w)
{
    while (!w->tearing_down && w->closing < S_INFLIGHT && w->close_next < w->nconns) {
        pb_conn_t *k = &w->conns[w->close_next++];
        if (k->state != PB_C_OPEN)
            continue;
        w->closing++;
        pb_worker_send(k, PB_TX_CLOSE);
    }
}

static void
s_closed(pb_conn_t *k)
{
    pb_worker_t *w = k->w;
    int st = k->state;
    if (st != PB_C_CONNECTING && st != PB_C_HELLO && st != PB_C_OPEN && st != PB_C_CLOSING)
        return; /* settled already (a connection error) */
    k->wsi = NULL;
    free(k->rx);
    k->rx = NULL;
    k->rx_len = k->rx_cap = 0;
    if (st == PB_C_CONNECTING || st == PB_C_HELLO) {
        k->state = PB_C_HELLO; /* s_failed wants one of the two */
        s_failed(k, "closed before the server's `connected`", 0);
        return;
    }
    k->state = PB_C_CLOSED;
    w->live--;
    if (k->tx & PB_TX_CLOSE) {
        w->closing--;
        pb_conn_close_pump(w);
    }
    if (k->pinged && !k->ponged && w->ping_waiting) {
        k->ponged = true; /* no longer waited for; the drop is counted below */
        w->ping_waiting--;
    }
    if (st != PB_C_OPEN || w->tearing_down) {
        pb_worker_check(w);
        return;
    }
    w->open_now--;
    w->c.dropped++;
    if (k->close_code)
        pb_errs_add(&w->errs, 1, "a connection was closed by the server (code %d)", k->close_code);
    else
        pb_errs_add(&w->errs, 1, "a connection was closed without a close frame");
    if (k->sess)
        pb_turns_lost_member(k);
    pb_worker_check(w);
}

int
pb_conn_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
    pb_conn_t *k = user;
    if (!k)
        return 0;
    switch (reason) {
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        /* lws 4.1 reports a refused upgrade here ("HS: ws upgrade response
           not 101"); the status line is still readable. */
        s_failed(k, in ? (const char *) in : "connection error", lws_http_client_http_response(wsi));
        return 0;
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        if (k->state == PB_C_CONNECTING)
            k->state = PB_C_HELLO;
        return 0;
    case LWS_CALLBACK_CLIENT_RECEIVE:
        return s_receive(k, wsi, in, len);
    case LWS_CALLBACK_CLIENT_WRITEABLE:
        return s_writeable(k, wsi);
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        if (len >= 2)
            k->close_code = ((const unsigned char *) in)[0] << 8 | ((const unsigned char *) in)[1];
        else
            k->close_code = LWS_CLOSE_STATUS_NO_STATUS;
        return 0;
    case LWS_CALLBACK_CLIENT_CLOSED:
        s_closed(k);
        return 0;
    default:
        return 0;
    }
}
