/*  upstream — HTTP streams to model APIs through libcurl's multi interface.

    Event-loop integration (curl's "multi_socket" API): curl tells us which
    sockets to watch (CURLMOPT_SOCKETFUNCTION) and when to call back
    (CURLMOPT_TIMERFUNCTION); the worker polls those sockets with the shard's
    mailbox, so one thread serves the mailbox and every transfer, and no
    extra doorbell is needed. Each transfer's body runs through the SSE or
    NDJSON framer, then pl_vendor_parse(); deltas go to the sink as they
    arrive. Keys are read from the environment per request and placed only
    in the request header; they are never logged or echoed. */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../protocol/pl_err.h"
#include "../../protocol/pl_ndjson.h"
#include "../../protocol/pl_sse.h"
#include "../../protocol/pl_util.h"
#include "../../protocol/pl_vendor.h"
#include "../../protocol/pl_version.h"
#include "../../transport/pl_log.h"
#include "pl_upstream.h"

/* Bytes of a failed response's body kept to explain the failure. */
#define S_ERRBODY_MAX 8192

typedef struct s_xfer {
    struct s_xfer *next;
    pl_upstream_t *up;
    uint64_t tag;
    CURL *easy;
    pl_vendor_t vendor;
    pl_sse_t *sse;
    pl_ndjson_t *nd;
    struct curl_slist *headers;
    char *body;
    long status;
    char *errbody;
    size_t errlen;
    bool done;
    int64_t finish; /* -1: not said */
    int64_t ptok, ctok;
    char *error;
    size_t malformed;
    char key_env[PL_ENV_NAME_MAX + 1]; /* to redact the key's value from error texts */
    int64_t last_ms; /* start, then the last byte received: the idle clock */
    bool got_byte;   /* the first-byte limit applies until then, the idle one after */
} s_xfer_t;

struct pl_upstream {
    CURLM *multi;
    pl_upstream_sink_t sink;
    void *arg;
    pl_upstream_limits_t lim;
    s_xfer_t *xfers;
    size_t nxfers;
    pl_pollfd_t socks[PL_POLL_FDS_MAX];
    int nsocks;
    int64_t deadline;
};

static int
s_socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    (void) easy;
    (void) socketp;
    pl_upstream_t *self = userp;
    int i = 0;
    while (i < self->nsocks && self->socks[i].fd != s)
        i++;
    if (what == CURL_POLL_REMOVE) {
        if (i < self->nsocks)
            self->socks[i] = self->socks[--self->nsocks];
        return 0;
    }
    short ev = (short) (((what & CURL_POLL_IN) ? PL_POLL_IN : 0) | ((what & CURL_POLL_OUT) ? PL_POLL_OUT : 0));
    if (i == self->nsocks) {
        /* CURLMOPT_MAX_TOTAL_CONNECTIONS keeps curl well under this; -1
           would mark the whole multi handle dead, not one transfer. */
        if (self->nsocks >= PL_POLL_FDS_MAX)
            return -1;
        self->nsocks++;
    }
    self->socks[i] = (pl_pollfd_t){(int) s, ev, 0};
    return 0;
}

static int
s_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    (void) multi;
    pl_upstream_t *self = userp;
    self->deadline = timeout_ms < 0 ? -1 : pl_now_ms() + timeout_ms;
    return 0;
}

static int
s_on_item(s_xfer_t *x, const char *data, size_t len)
{
    pl_vendor_event_t ev;
    if (pl_vendor_parse(x->vendor, data, len, &ev) != 0) {
        x->malformed++;
        return 0;
    }
    if (ev.text && ev.text[0] && !x->done) {
        pl_utf8_scrub(ev.text); /* a client's text frame must stay valid UTF-8 */
        x->up->sink.chunk(x->up->arg, x->tag, ev.text);
    }
    if (ev.has_usage) {
        x->ptok = ev.prompt_tokens;
        x->ctok = ev.completion_tokens;
    }
    if (ev.finish >= 0)
        x->finish = ev.finish;
    if (ev.error && !x->error) {
        x->error = ev.error;
        ev.error = NULL;
        x->finish = PL_FINISH_ERROR;
    }
    if (ev.done)
        x->done = true;
    pl_vendor_event_reset(&ev);
    return 0;
}

static int
s_on_sse(void *arg, const pl_sse_event_t *ev)
{
    return s_on_item(arg, ev->data, ev->data_len);
}

static int
s_on_line(void *arg, const char *line, size_t len)
{
    return s_on_item(arg, line, len);
}

static size_t
s_write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    s_xfer_t *x = userdata;
    size_t n = size * nmemb;
    x->last_ms = pl_now_ms();
    x->got_byte = true;
    if (!x->status)
        curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &x->status);
    if (x->status >= 300) {
        size_t take = n < S_ERRBODY_MAX - x->errlen ? n : S_ERRBODY_MAX - x->errlen;
        if (take > 0) {
            char *b = realloc(x->errbody, x->errlen + take + 1);
            if (b) {
                memcpy(b + x->errlen, ptr, take);
                x->errbody = b;
                x->errlen += take;
                b[x->errlen] = '\0';
            }
        }
        return n;
    }
    int rc = x->nd ? pl_ndjson_feed(x->nd, ptr, n, s_on_line, x) : pl_sse_feed(x->sse, ptr, n, s_on_sse, x);
    return rc < 0 ? 0 : n; /* 0 aborts the transfer (out of memory) */
}

static void
s_xfer_free(pl_upstream_t *self, s_xfer_t *x)
{
    for (s_xfer_t **p = &self->xfers; *p; p = &(*p)->next)
        if (*p == x) {
            *p = x->next;
            self->nxfers--;
            break;
        }
    if (x->easy) {
        curl_multi_remove_handle(self->multi, x->easy);
        curl_easy_cleanup(x->easy);
    }
    curl_slist_free_all(x->headers);
    pl_sse_destroy(&x->sse);
    pl_ndjson_destroy(&x->nd);
    free(x->body);
    free(x->errbody);
    free(x->error);
    free(x);
}

/* Replaces every occurrence of the transfer's API key in `text` (in place)
   with "[redacted]": an upstream error body may echo the key, and the
   vendor module only recognises some key shapes. */
static void
s_redact(const s_xfer_t *x, char *text, size_t size)
{
    const char *key = x->key_env[0] ? getenv(x->key_env) : NULL;
    size_t klen = key ? strlen(key) : 0;
    if (klen < 4 || !strstr(text, key))
        return;
    char out[512];
    size_t o = 0;
    for (const char *p = text; *p && o + 1 < sizeof out;) {
        if (strncmp(p, key, klen) == 0) {
            o += (size_t) snprintf(out + o, sizeof out - o, "[redacted]");
            p += klen;
        } else {
            out[o++] = *p++;
        }
    }
    o = o < sizeof out ? o : sizeof out - 1;
    out[o] = '\0';
    size_t n = o < size ? o : size - 1;
    memcpy(text, out, n);
    text[n] = '\0';
}

/* Hands finished transfers to the sink. */
static void
s_reap(pl_upstream_t *self)
{
    CURLMsg *m;
    int queued;
    while ((m = curl_multi_info_read(self->multi, &queued))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        s_xfer_t *x = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **) &x);
        CURLcode res = m->data.result;
        if (x->nd)
            pl_ndjson_finish(x->nd, s_on_line, x);
        else
            pl_sse_finish(x->sse, s_on_sse, x);
        curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &x->status);
        char why[256];
        char *msg = NULL;
        int64_t finish;
        if (res != CURLE_OK) {
            finish = PL_FINISH_ERROR;
            snprintf(why, sizeof why, "model upstream failed: %s", curl_easy_strerror(res));
        } else if (x->status >= 300) {
            finish = PL_FINISH_ERROR;
            msg = pl_vendor_error_message(x->vendor, (int) x->status, x->errbody ? x->errbody : "", x->errlen);
            snprintf(why, sizeof why, "model upstream answered %ld: %s", x->status, msg ? msg : "");
        } else if (x->error) {
            finish = PL_FINISH_ERROR;
            snprintf(why, sizeof why, "model upstream error: %s", x->error);
        } else if (!x->done && x->finish < 0) {
            finish = PL_FINISH_ERROR;
            snprintf(why, sizeof why, "the model's stream ended before the answer was complete");
        } else {
            finish = x->finish >= 0 ? x->finish : PL_FINISH_STOP;
        }
        free(msg);
        s_redact(x, why, sizeof why);
        curl_off_t retry = 0;
        if (finish == PL_FINISH_ERROR && curl_easy_getinfo(x->easy, CURLINFO_RETRY_AFTER, &retry) != CURLE_OK)
            retry = 0;
        if (x->malformed)
            pl_log_warn("upstream", "tag=%llu malformed_items=%zu", (unsigned long long) x->tag, x->malformed);
        self->sink.done(self->arg, x->tag, finish, x->ptok, x->ctok, finish == PL_FINISH_ERROR ? why : NULL,
                        x->status, (long) retry, x->malformed);
        s_xfer_free(self, x);
    }
}

pl_upstream_t *
pl_upstream_new(const pl_upstream_sink_t *sink, void *arg, const pl_upstream_limits_t *lim)
{
    pl_upstream_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->multi = curl_multi_init();
    if (!self->multi) {
        free(self);
        return NULL;
    }
    self->sink = *sink;
    self->arg = arg;
    self->lim = *lim;
    self->deadline = -1;
    curl_multi_setopt(self->multi, CURLMOPT_SOCKETFUNCTION, s_socket_cb);
    curl_multi_setopt(self->multi, CURLMOPT_SOCKETDATA, self);
    curl_multi_setopt(self->multi, CURLMOPT_TIMERFUNCTION, s_timer_cb);
    curl_multi_setopt(self->multi, CURLMOPT_TIMERDATA, self);
    /* Past this many connections curl queues transfers itself (a connect
       may hold two sockets while happy-eyeballs races). */
    curl_multi_setopt(self->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long) (PL_POLL_FDS_MAX / 2 - 16));
    return self;
}

void
pl_upstream_destroy(pl_upstream_t **self_p)
{
    pl_upstream_t *self = *self_p;
    if (!self)
        return;
    while (self->xfers)
        s_xfer_free(self, self->xfers);
    curl_multi_cleanup(self->multi);
    free(self);
    *self_p = NULL;
}

/* Adds "Name: value" to the request headers; the copy on the stack is
   wiped (it may hold a key). */
static int
s_header(s_xfer_t *x, const char *name, const char *value)
{
    char line[1024];
    int n = snprintf(line, sizeof line, "%s: %s", name, value);
    struct curl_slist *h = n > 0 && (size_t) n < sizeof line ? curl_slist_append(x->headers, line) : NULL;
    explicit_bzero(line, sizeof line);
    if (!h)
        return -PL_E_NOMEM;
    x->headers = h;
    return 0;
}

int
pl_upstream_start(pl_upstream_t *self, uint64_t tag, const pl_model_t *model, const pl_env_t *gen)
{
    int vendor = pl_vendor_from_name(model->backend);
    if (vendor < 0)
        return -PL_E_INTERNAL;
    s_xfer_t *x = calloc(1, sizeof *x);
    if (!x)
        return -PL_E_NOMEM;
    x->up = self;
    x->tag = tag;
    x->vendor = (pl_vendor_t) vendor;
    x->finish = -1;
    int rc = -PL_E_NOMEM;
    char path[PL_URL_MAX], url[2 * PL_URL_MAX + 8];
    size_t len = 0;
    if (x->vendor == PL_VENDOR_OLLAMA)
        x->nd = pl_ndjson_new(self->lim.max_event);
    else
        x->sse = pl_sse_new(self->lim.max_event);
    x->body = pl_vendor_request(x->vendor, gen, model->model, &len);
    x->easy = curl_easy_init();
    if ((!x->nd && !x->sse) || !x->body || !x->easy)
        goto fail;
    rc = -PL_E_TOO_LARGE;
    if (pl_vendor_path(x->vendor, model->model, path, sizeof path) != 0 ||
        (size_t) snprintf(url, sizeof url, "%s%s", model->base_url, path) >= sizeof url)
        goto fail;
    rc = -PL_E_NOMEM;
    const char *key = model->api_key_env[0] ? getenv(model->api_key_env) : NULL;
    rc = -PL_E_AUTH_FAILED;
    if (model->api_key_env[0] && (!key || !*key))
        goto fail; /* the variable the models table names is not set */
    for (const char *k = key; k && *k; k++)
        if ((unsigned char) *k < 0x21 || (unsigned char) *k == 0x7F)
            goto fail; /* no spaces, CR, LF: it goes into a header line */
    rc = -PL_E_NOMEM;
    snprintf(x->key_env, sizeof x->key_env, "%s", model->api_key_env);
    if (s_header(x, "Content-Type", "application/json") != 0 ||
        s_header(x, "Accept", x->nd ? "application/x-ndjson" : "text/event-stream") != 0)
        goto fail;
    if (key && *key) {
        char bearer[900];
        int n = snprintf(bearer, sizeof bearer, "Bearer %s", key);
        int hr = (n > 0 && (size_t) n < sizeof bearer)
                     ? (x->vendor == PL_VENDOR_GEMINI ? s_header(x, "x-goog-api-key", key)
                                                      : s_header(x, "Authorization", bearer))
                     : -PL_E_TOO_LARGE;
        explicit_bzero(bearer, sizeof bearer);
        if (hr != 0)
            goto fail;
    }
    curl_easy_setopt(x->easy, CURLOPT_URL, url);
    curl_easy_setopt(x->easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(x->easy, CURLOPT_POSTFIELDS, x->body);
    curl_easy_setopt(x->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) len);
    curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, x->headers);
    curl_easy_setopt(x->easy, CURLOPT_WRITEFUNCTION, s_write_cb);
    curl_easy_setopt(x->easy, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(x->easy, CURLOPT_PRIVATE, (char *) x);
    curl_easy_setopt(x->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(x->easy, CURLOPT_USERAGENT, PL_NAME "/" PL_VERSION);
    curl_easy_setopt(x->easy, CURLOPT_HTTP_VERSION, (long) CURL_HTTP_VERSION_2TLS);
    curl_easy_setopt(x->easy, CURLOPT_CONNECTTIMEOUT_MS, self->lim.connect_ms);
    curl_easy_setopt(x->easy, CURLOPT_TIMEOUT_MS, self->lim.total_ms);
    curl_easy_setopt(x->easy, CURLOPT_TCP_KEEPALIVE, 1L);
    if (curl_multi_add_handle(self->multi, x->easy) != CURLM_OK)
        goto fail;
    x->last_ms = pl_now_ms();
    x->next = self->xfers;
    self->xfers = x;
    self->nxfers++;
    return 0;
fail:
    x->next = NULL;
    if (x->easy) {
        curl_easy_cleanup(x->easy);
        x->easy = NULL;
    }
    curl_slist_free_all(x->headers);
    pl_sse_destroy(&x->sse);
    pl_ndjson_destroy(&x->nd);
    free(x->body);
    free(x);
    return rc;
}

void
pl_upstream_cancel(pl_upstream_t *self, uint64_t tag)
{
    for (s_xfer_t *x = self->xfers; x; x = x->next)
        if (x->tag == tag) {
            s_xfer_free(self, x); /* removing a running transfer closes its connection */
            return;
        }
}

int
pl_upstream_fds(pl_upstream_t *self, pl_pollfd_t *fds, int max)
{
    int n = self->nsocks < max ? self->nsocks : max;
    memcpy(fds, self->socks, (size_t) n * sizeof *fds);
    return n;
}

void
pl_upstream_on_fd(pl_upstream_t *self, const pl_pollfd_t *fd)
{
    /* readiness gathered before an earlier callback closed (or reused)
       this socket is stale: act only on sockets curl still watches */
    int i = 0;
    while (i < self->nsocks && (self->socks[i].fd != fd->fd || self->socks[i].events != fd->events))
        i++;
    if (i == self->nsocks)
        return;
    int ev = ((fd->revents & PL_POLL_IN) ? CURL_CSELECT_IN : 0) | ((fd->revents & PL_POLL_OUT) ? CURL_CSELECT_OUT : 0) |
             ((fd->revents & PL_POLL_ERR) ? CURL_CSELECT_ERR : 0);
    int running = 0;
    curl_multi_socket_action(self->multi, fd->fd, ev, &running);
    s_reap(self);
}

int64_t
pl_upstream_deadline(const pl_upstream_t *self)
{
    int64_t due = self->deadline;
    for (const s_xfer_t *x = self->xfers; x; x = x->next) {
        int64_t d = x->last_ms + (x->got_byte ? self->lim.idle_ms : self->lim.first_byte_ms);
        if (due < 0 || d < due)
            due = d;
    }
    return due;
}

void
pl_upstream_on_timer(pl_upstream_t *self, int64_t now)
{
    if (self->deadline >= 0 && self->deadline <= now) {
        int running = 0;
        self->deadline = -1;
        curl_multi_socket_action(self->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        s_reap(self);
    }
    /* No first byte within --upstream-first-byte-ms, or silence between
       chunks past --upstream-idle-ms, ends the answer as an error; what
       streamed is kept. curl's own low-speed check averages over seconds and
       reacts far too late. */
    for (s_xfer_t *x = self->xfers, *next; x; x = next) {
        next = x->next;
        long limit = x->got_byte ? self->lim.idle_ms : self->lim.first_byte_ms;
        if (now - x->last_ms < limit)
            continue;
        char why[128];
        snprintf(why, sizeof why, x->got_byte ? "the model stalled: no data for %ld ms"
                                              : "the model did not start answering within %ld ms", limit);
        self->sink.done(self->arg, x->tag, PL_FINISH_ERROR, x->ptok, x->ctok, why, x->status, 0, x->malformed);
        s_xfer_free(self, x);
    }
}

size_t
pl_upstream_active(const pl_upstream_t *self)
{
    return self->nxfers;
}
