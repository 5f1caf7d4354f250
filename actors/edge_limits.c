/*  edge_limits — who may connect, and how long a request may take.

    Admission happens at HTTP_CONFIRM_UPGRADE, after the handshake's headers
    are in and before the 101: an upgrade to a path no dialect serves gets
    404; while the server stops, past --max-connections in total, or past
    --max-per-address from the client's IP address it gets 503 with
    Retry-After and a JSON body {"error","code":"BUSY"}. Either way the
    response is written and the connection dropped (we return -1 rather than
    let lws keep a "Connection: keep-alive, Upgrade" connection alive for
    another request). Refusals are counted per reason for /stats.

    Every step from the admission to ESTABLISHED (where the connection is
    counted) runs in one lws call on the edge thread, so a reconnect storm
    cannot overshoot a cap.

    Slow requests: lws closes a connection whose request headers or
    handshake are not complete within info.timeout_secs_ah_idle, which is
    --handshake-timeout. It restarts its own timeout on every piece of a
    request body, so a body gets our deadline instead (an lws timer, see
    edge_http.c), past which the connection is closed.

    The open-file limit: every WebSocket is a file, and the process may hold
    at most RLIMIT_NOFILE of them (20,000 on our machines, and the hard limit
    cannot be raised there). pl_edge_conn_limit() runs once everything the
    server opens at start is open (the database, ZeroMQ's sockets, the
    listener): what is left, less --fd-reserve for HTTP requests, model
    connections and the database's own files, is what WebSockets may use. A
    --max-connections above that is lowered with a warning that says so; the
    connection past the cap gets the same 503 as any other past the cap, so
    the server never runs out of files with a client half accepted.

    Edge thread only. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "../transport/pl_log.h"
#include "edge_int.h"

/* Seconds a refused client is told to wait: a slot frees as soon as any
   client leaves, and clients that honour it spread a reconnect storm. */
#define S_RETRY_AFTER "2"

/* Writes a whole response (status, JSON error body, Retry-After on 503) on
   a connection that asked to upgrade, in one write: lws's header helpers
   would write "HTTP/1.0" here (it records the request's version only for
   requests it serves itself). Returns -1: drop the connection. */
static int
s_refuse(struct lws *wsi, unsigned status, const char *code, const char *message)
{
    char *body = pl_http_json_error((int) status, code, message);
    unsigned char buf[LWS_PRE + 1024];
    char *start = (char *) buf + LWS_PRE;
    size_t room = sizeof buf - LWS_PRE;
    int n = body ? snprintf(start, room,
                            "HTTP/1.1 %u %s\r\n"
                            "content-type: application/json\r\n"
                            "content-length: %zu\r\n"
                            "%s"
                            "cache-control: no-store\r\n"
                            "connection: close\r\n"
                            "\r\n%s",
                            status, status == 503 ? "Service Unavailable" : "Not Found", strlen(body),
                            status == 503 ? "retry-after: " S_RETRY_AFTER "\r\n" : "", body)
                 : -1;
    if (n > 0 && (size_t) n < room)
        lws_write(wsi, (unsigned char *) start, (size_t) n, LWS_WRITE_HTTP);
    free(body);
    return -1;
}

static uintptr_t
s_peer_count(pl_edge_t *self, const char *peer)
{
    return (uintptr_t) pl_map_get(self->peers, peer);
}

/* Files this process has open now, or -1. */
static long
s_open_files(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    long n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n - 1; /* not the directory's own */
}

void
pl_edge_conn_limit(pl_edge_t *self)
{
    struct rlimit rl;
    long open = s_open_files();
    long want = self->cfg->max_connections;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY || open < 0) {
        self->stats.conns_limit = want ? want : 1000000;
        pl_log_info("limits", "max_connections=%lld files=unknown", (long long) self->stats.conns_limit);
        return;
    }
    long files = (long) rl.rlim_cur, reserve = self->cfg->fd_reserve;
    long room = files - open - reserve;
    if (room < 1) { /* the reserve does not fit: share what is left rather than serve one */
        room = (files - open) / 2 > 0 ? (files - open) / 2 : 1;
        pl_log_error("limits", "fd_reserve=%ld does_not_fit files=%ld open_at_start=%ld websockets=%ld", reserve, files,
                     open, room);
    }
    self->stats.conns_limit = want && want <= room ? want : room;
    if (want && want <= room)
        pl_log_info("limits", "max_connections=%ld files=%ld open_at_start=%ld fd_reserve=%ld", want, files, open,
                    reserve);
    else { /* the file limit decides: say so where the operator looks first */
        char asked[40] = "";
        if (want)
            snprintf(asked, sizeof asked, " asked=%ld", want);
        pl_log_warn("limits",
                    "max_connections=%ld reason=open_file_limit files=%ld open_at_start=%ld fd_reserve=%ld%s "
                    "note=\"the open-file limit (ulimit -n %ld) allows %ld WebSockets; past that an upgrade "
                    "gets 503 BUSY\"",
                    room, files, open, reserve, asked, files, room);
    }
}

int
pl_edge_admit(pl_edge_t *self, struct lws *wsi)
{
    char path[128] = "";
    lws_hdr_copy(wsi, path, sizeof path, WSI_TOKEN_GET_URI);
    if (strcmp(path, "/ws") != 0)
        return s_refuse(wsi, 404, "NOT_FOUND", "no WebSocket is served at this path");

    char peer[48] = "";
    lws_get_peer_simple(wsi, peer, sizeof peer);
    const char *reason = NULL, *message = NULL;
    long limit = 0;
    if (self->stopping || self->draining) {
        self->stats.rejected_stopping++;
        reason = "stopping";
        message = "the server is shutting down; reconnect shortly";
    } else if (self->stats.conns_current >= self->stats.conns_limit) {
        self->stats.rejected_max++;
        reason = "max_connections";
        limit = (long) self->stats.conns_limit;
        message = "the server is at its connection limit; try again";
    } else if (peer[0] && s_peer_count(self, peer) >= (uintptr_t) self->cfg->max_per_address) {
        self->stats.rejected_per_address++;
        reason = "max_per_address";
        limit = self->cfg->max_per_address;
        message = "too many connections from your address; try again";
    }
    if (!reason)
        return 0;
    self->stats.conns_rejected++;
    pl_log_warn("refused", "reason=%s peer=%s limit=%ld status=503", reason, peer, limit);
    return s_refuse(wsi, 503, "BUSY", message);
}

void
pl_edge_peer_add(pl_edge_t *self, struct lws *wsi, pss_t *pss)
{
    pss->peer[0] = '\0';
    lws_get_peer_simple(wsi, pss->peer, sizeof pss->peer);
    if (!pss->peer[0])
        return;
    uintptr_t n = s_peer_count(self, pss->peer);
    if (pl_map_put(self->peers, pss->peer, (void *) (n + 1)) != 0)
        pss->peer[0] = '\0'; /* not counted, so not uncounted either */
}

void
pl_edge_peer_remove(pl_edge_t *self, pss_t *pss)
{
    if (!pss->peer[0])
        return;
    uintptr_t n = s_peer_count(self, pss->peer);
    if (n <= 1)
        pl_map_take(self->peers, pss->peer);
    else
        pl_map_put(self->peers, pss->peer, (void *) (n - 1)); /* replaces: no allocation */
    pss->peer[0] = '\0';
}

void
pl_edge_body_deadline(pl_edge_t *self, struct lws *wsi, pss_t *pss, bool running)
{
    if (pss->body_pending == running)
        return;
    pss->body_pending = running;
    lws_set_timer_usecs(wsi, running ? (lws_usec_t) self->cfg->handshake_timeout * LWS_US_PER_SEC
                                     : LWS_SET_TIMER_USEC_CANCEL);
}
