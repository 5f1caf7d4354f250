/*  turns — the fanout and stream scenarios: sessions, their turns, and the
    accounting of every frame a member receives.

    A session's members are all in this process. Member 0 creates the
    session, the others join it. Each chat is a *turn*, numbered from 1 per
    session; its message starts with the tag "t<turn>", so that when its
    `message_added` reaches a member, the member knows which turn it is
    (chats the server refuses never get one, and cannot shift the count).
    A member then pairs `status`, `response_start`, the chunks and
    `response_complete` with the oldest announced turn not yet answered:
    the server answers a session's turns in order. A turn is finished when
    every member has its response_complete and the sender its
    delivery_confirmation (or when the server refused the chat); at most
    PB_TURNS_MAX turns of a session are unfinished, in a ring.

    Accounting, per member: `seq` must advance by exactly one per
    persistent event. A chunk frame whose chunk_number jumps by d while seq
    jumps by d stands for d chunks merged by the server for a slow reader:
    d - 1 are counted as coalesced, not lost; any other gap is lost. An
    answer's last chunk_number must equal response_complete's
    total_chunks. Only measured turns (sent inside the window) are
    accounted for, each once: when it finishes, or when the drain ends
    with it unfinished. A turn expects, from each of the M members,
    message_added, status, response_start, total_chunks chunks and
    response_complete, and one delivery_confirmation for the sender:
    M x (4 + total_chunks) + 1. A turn counts its frames as they come and
    adds them to the totals only when it is accounted for, so received
    and expected always cover the same turns; an unfinished turn whose
    total_chunks no member has yet expects the highest chunk_number any
    member saw instead (received <= expected, and the turn counts as
    unfinished). Once the drain is over the accounting is closed: frames
    after it (during the final ping and the closes) count only in
    frames_total.

    fanout: member 0 chats on a timer (open loop), slot k at slot0 + k/R.
    stream: one member; the next chat goes when the answer is complete
    (closed loop), and chunk i's latency is measured against the ideal
    time chat sent + (i - 1) x --chunk-interval-ms. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "worker_int.h"

/* Longest a stream's first chats are spread over. */
#define S_STREAM_SPREAD_MAX_US 1000000
/* How much earlier than its ideal time a chunk may come (clock and
   rounding noise) before the run stops. */
#define S_EARLY_US 1000
/* The largest chunk_number (and total_chunks) taken from the server:
   far past any answer, small enough that no product with it overflows. */
#define S_CHUNK_MAX 1000000000

static pb_turn_t *
s_turn(pb_sess_t *s, uint32_t k)
{
    return k >= s->base && k < s->next ? &s->turns[k % PB_TURNS_MAX] : NULL;
}

static bool
s_in_window(const pb_worker_t *w, int64_t now)
{
    return w->phase == PB_PH_RUN && now >= w->t_measure && now < w->t_stop;
}

/* --------------------------------------------------------------- setup -- */

int
pb_turns_init(pb_worker_t *w)
{
    const pb_opts_t *o = w->o;
    if (o->scenario == PB_CONNECT)
        return 0;
    long words = o->scenario == PB_FANOUT ? o->words : o->chunks;
    w->tail = malloc((size_t) words * 8 + 1);
    if (!w->tail)
        return -1;
    size_t n = 0;
    for (long i = 2; i <= words; i++)
        n += (size_t) sprintf(w->tail + n, " w%ld", i);
    w->tail[n] = '\0';
    w->tail_len = n;

    w->nsess = w->sl.nsess;
    w->sess = calloc(w->nsess ? w->nsess : 1, sizeof *w->sess);
    if (!w->sess)
        return -1;
    uint32_t members = o->scenario == PB_FANOUT ? (uint32_t) o->members : 1;
    for (size_t i = 0; i < w->nsess; i++) {
        pb_sess_t *s = &w->sess[i];
        s->w = w;
        s->members = members;
        s->m = &w->conns[i * members];
        s->gno = (uint32_t) (w->sl.s0 + i);
        s->base = s->next = s->wnext = 1;
        for (uint32_t j = 0; j < members; j++) {
            s->m[j].sess = s;
            s->m[j].member = (uint16_t) j;
        }
    }
    return 0;
}

void
pb_turns_free(pb_worker_t *w)
{
    for (size_t i = 0; i < w->nsess; i++)
        lws_sul_cancel(&w->sess[i].sul);
    free(w->sess);
    w->sess = NULL;
    w->nsess = 0;
}

/* A session is settled once it is ready (every member joined) or broken. */
static void
s_settle_session(pb_sess_t *s, bool ready)
{
    if (s->settled)
        return;
    s->settled = true;
    s->ready = ready;
    s->w->sessions_settled++;
    pb_worker_check(s->w);
}

static void
s_break(pb_sess_t *s)
{
    pb_worker_t *w = s->w;
    if (s->broken)
        return;
    s->broken = true;
    lws_sul_cancel(&s->sul);
    w->outstanding -= s->next - s->base; /* they will not finish: the drain does not wait for them */
    s_settle_session(s, false);
}

void
pb_turns_lost_member(pb_conn_t *k)
{
    s_break(k->sess);
    pb_worker_check(k->w);
}

void
pb_turns_open(pb_conn_t *k)
{
    pb_sess_t *s = k->sess;
    if (k->member == 0)
        pb_worker_send(k, PB_TX_CREATE);
    else if (s->created)
        pb_worker_send(k, PB_TX_JOIN);
}

size_t
pb_turns_render_setup(pb_conn_t *k, unsigned what)
{
    char *out = (char *) k->w->txbuf + LWS_PRE;
    if (what == PB_TX_CREATE)
        return (size_t) snprintf(out, PB_TX_MAX, "{\"type\":\"create_session\"}");
    return (size_t) snprintf(out, PB_TX_MAX, "{\"type\":\"join_session\",\"session_id\":\"%s\"}", k->sess->id);
}

static void
s_created(pb_conn_t *k, const char *buf, size_t len)
{
    pb_sess_t *s = k->sess;
    pb_worker_t *w = k->w;
    cJSON *j = cJSON_ParseWithLength(buf, len);
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(j, "session_id");
    const cJSON *seq = cJSON_GetObjectItemCaseSensitive(j, "seq");
    /* seq, if present, must be a whole number an int64_t holds (2^63 is
       exact as a double): converting anything else is undefined */
    double sv = cJSON_IsNumber(seq) ? seq->valuedouble : 0;
    bool seq_ok =
        !seq || (cJSON_IsNumber(seq) && isfinite(sv) && sv >= 0 && sv < 9223372036854775808.0 && sv == floor(sv));
    if (k->member != 0 || s->created) {
        pb_errs_add(&w->errs, 1, "an unexpected session_created");
        cJSON_Delete(j);
        return;
    }
    if (!cJSON_IsString(id) || strlen(id->valuestring) >= sizeof s->id || !seq_ok) {
        pb_errs_add(&w->errs, 1, "a malformed session_created");
        cJSON_Delete(j);
        s_break(s); /* it can never be joined: settle it, or the open phase waits for it */
        return;
    }
    snprintf(s->id, sizeof s->id, "%s", id->valuestring);
    k->last_seq = (int64_t) sv;
    cJSON_Delete(j);
    s->created = true;
    s->joined = 1;
    for (uint32_t m = 1; m < s->members; m++)
        if (s->m[m].state == PB_C_OPEN)
            pb_worker_send(&s->m[m], PB_TX_JOIN);
    if (s->joined == s->members)
        s_settle_session(s, true);
}

static void
s_joined(pb_conn_t *k, const pb_frame_t *f)
{
    pb_sess_t *s = k->sess;
    if (k->member == 0 || f->seq < 0) {
        pb_errs_add(&k->w->errs, 1, "an unexpected or malformed session_joined");
        return;
    }
    k->last_seq = f->seq;
    if (++s->joined == s->members)
        s_settle_session(s, true);
}

/* ------------------------------------------------------------- sending -- */

/* Assigns the next turn to member 0; the chat goes at its next WRITEABLE. */
static void
s_assign(pb_sess_t *s, bool measured)
{
    pb_worker_t *w = s->w;
    if (s->broken)
        return;
    if (s->next - s->base >= PB_TURNS_MAX) {
        if (measured)
            w->c.turns_behind++;
        return;
    }
    pb_turn_t *t = &s->turns[s->next % PB_TURNS_MAX];
    memset(t, 0, sizeof *t);
    t->total_chunks = -1;
    t->measured = measured;
    s->next++;
    w->outstanding++;
    s->m[0].chats++;
    pb_worker_send(&s->m[0], 0);
}

size_t
pb_turns_render_chat(pb_conn_t *k, int64_t now)
{
    pb_sess_t *s = k->sess;
    pb_worker_t *w = k->w;
    const pb_opts_t *o = w->o;
    k->chats--;
    pb_turn_t *t = s_turn(s, s->wnext);
    if (!t)
        return 0;
    uint32_t turn = s->wnext++;
    t->sent_us = now;
    if (t->measured)
        w->c.turns_sent++;
    char *out = (char *) w->txbuf + LWS_PRE;
    int n;
    if (o->scenario == PB_STREAM)
        n = snprintf(out, PB_TX_MAX,
                     "{\"type\":\"chat\",\"session_id\":\"%s\",\"id\":%u,\"max_tokens\":%ld,"
                     "\"message\":\"t%u%s\"}",
                     s->id, turn, o->chunks, turn, w->tail);
    else
        n = snprintf(out, PB_TX_MAX, "{\"type\":\"chat\",\"session_id\":\"%s\",\"id\":%u,\"message\":\"t%u%s\"}", s->id,
                     turn, turn, w->tail);
    return n > 0 && n < PB_TX_MAX ? (size_t) n : 0;
}

static void
s_chat_timer(lws_sorted_usec_list_t *sul)
{
    pb_sess_t *s = lws_container_of(sul, pb_sess_t, sul);
    pb_worker_t *w = s->w;
    int64_t now = pb_now_us();
    if (now >= w->t_stop || s->broken)
        return;
    if (w->o->scenario == PB_STREAM) { /* the first chat; the answers drive the rest */
        s_assign(s, now >= w->t_measure);
        return;
    }
    int64_t period = (int64_t) (1e6 / w->o->chat_rate);
    int64_t slot_at = s->slot0 + (int64_t) s->slot * period;
    s_assign(s, slot_at >= w->t_measure);
    s->slot++;
    int64_t next = s->slot0 + (int64_t) s->slot * period;
    if (next < w->t_stop)
        lws_sul_schedule(w->ctx, 0, &s->sul, s_chat_timer, next > now ? next - now : 0);
}

void
pb_turns_run(pb_worker_t *w)
{
    const pb_opts_t *o = w->o;
    int64_t now = pb_now_us();
    /* Sessions start spread over one period (fanout) or one answer
       (stream), in the order of their global numbers. */
    int64_t spread;
    double total;
    if (o->scenario == PB_FANOUT) {
        spread = (int64_t) (1e6 / o->chat_rate);
        total = (double) o->sessions;
    } else {
        spread = (int64_t) ((double) (o->chunks - 1) * o->chunk_interval_ms * 1000.0);
        if (spread > S_STREAM_SPREAD_MAX_US)
            spread = S_STREAM_SPREAD_MAX_US;
        total = (double) o->chats;
    }
    w->t_deadline = w->t_stop + (int64_t) (o->drain * 1e6) +
                    (o->scenario == PB_STREAM ? (int64_t) ((double) o->chunks * o->chunk_interval_ms * 1000.0) : 0);
    for (size_t i = 0; i < w->nsess; i++) {
        pb_sess_t *s = &w->sess[i];
        if (!s->ready || s->broken)
            continue;
        s->slot0 = w->t_start + (int64_t) ((double) spread * (double) s->gno / total);
        lws_sul_schedule(w->ctx, 0, &s->sul, s_chat_timer, s->slot0 > now ? s->slot0 - now : 0);
    }
}

/* ----------------------------------------------------------- receiving -- */

/* Adds a measured turn to the totals: what it received and what it
   expects. Called once per turn (retired, or left unfinished at the end). */
static void
s_account(pb_sess_t *s, const pb_turn_t *t, bool finished)
{
    pb_worker_t *w = s->w;
    if (!t->measured || t->refused)
        return;
    /* unfinished and no response_complete yet: as many chunks as the
       furthest member got */
    uint64_t tc = t->total_chunks >= 0 ? (uint64_t) t->total_chunks : t->max_chunk;
    w->c.received += t->received;
    w->c.chunks_received += t->chunks;
    w->c.coalesced += t->coalesced;
    w->c.expected += (uint64_t) s->members * (4 + tc) + 1;
    w->c.chunks_expected += (uint64_t) s->members * tc;
    if (finished)
        w->c.turns_completed++;
    else
        w->c.turns_unfinished++;
}

/* Retires the finished turns at the head of the ring. */
static void
s_retire(pb_sess_t *s)
{
    pb_worker_t *w = s->w;
    while (s->base < s->wnext) {
        pb_turn_t *t = &s->turns[s->base % PB_TURNS_MAX];
        if (!t->refused && (t->completes < s->members || !t->confirmed))
            break;
        s_account(s, t, true);
        s->base++;
        if (!s->broken)
            w->outstanding--;
    }
    pb_worker_check(w);
}

/* Checks seq against the member's last; returns the gap (frames missing
   before this one), or -1 if seq went back or is absent. */
static int64_t
s_seq(pb_conn_t *k, const pb_frame_t *f)
{
    pb_worker_t *w = k->w;
    if (f->seq < 0) {
        pb_errs_add(&w->errs, 1, "a session event without seq");
        return -1;
    }
    int64_t gap = k->last_seq < 0 ? 0 : f->seq - k->last_seq - 1;
    if (gap < 0) {
        pb_errs_add(&w->errs, 1, "seq went back or repeated");
        return -1;
    }
    k->last_seq = f->seq;
    return gap;
}

static void
s_chunk(pb_conn_t *k, const pb_frame_t *f, int64_t gap, int64_t now)
{
    pb_worker_t *w = k->w;
    pb_turn_t *t = k->cur ? s_turn(k->sess, k->cur) : NULL;
    if (!t) {
        pb_errs_add(&w->errs, 1, "a chunk outside an answer");
        return;
    }
    if (f->chunk_number > S_CHUNK_MAX) {
        pb_errs_add(&w->errs, 1, "a chunk_number over %d", S_CHUNK_MAX);
        return;
    }
    int64_t d = f->chunk_number - k->cur_chunks;
    if (d < 1) {
        pb_errs_add(&w->errs, 1, "chunk_number did not advance");
        return;
    }
    if (gap > 0 && gap == d - 1) {
        t->coalesced += (uint64_t) gap;
    } else {
        if (gap > 0)
            w->c.lost += (uint64_t) gap;
        if (d > 1)
            pb_errs_add(&w->errs, 1, "chunk_number jumped by more than seq");
    }
    k->cur_chunks = f->chunk_number;
    if ((uint64_t) f->chunk_number > t->max_chunk)
        t->max_chunk = (uint32_t) f->chunk_number;
    if (s_in_window(w, now))
        w->c.chunks_window += (uint64_t) d;
    int64_t lat = now - t->sent_us;
    if (w->o->scenario == PB_STREAM) {
        lat -= (f->chunk_number - 1) * w->interval_us;
        if (lat < -S_EARLY_US) {
            w->c.early++;
            pb_worker_fatal(w,
                            "chunk %lld of an answer arrived %.1f ms before chat sent + (%lld - 1) x %g ms: "
                            "--chunk-interval-ms is larger than the server's chunk interval (its --echo-delay-ms)",
                            (long long) f->chunk_number, (double) -lat / 1000.0, (long long) f->chunk_number,
                            w->o->chunk_interval_ms);
            return;
        }
    }
    t->received++;
    t->chunks += (uint64_t) d;
    if (t->measured) {
        pb_hist_add(&w->lat, lat);
        if (k->cur_first)
            pb_hist_add(&w->ttfc, now - t->sent_us);
    }
    k->cur_first = false;
}

static void
s_complete(pb_conn_t *k, const pb_frame_t *f, int64_t now)
{
    pb_worker_t *w = k->w;
    pb_sess_t *s = k->sess;
    pb_turn_t *t = k->cur ? s_turn(s, k->cur) : NULL;
    if (!t) {
        pb_errs_add(&w->errs, 1, "a response_complete outside an answer");
        return;
    }
    if (f->total_chunks != k->cur_chunks)
        pb_errs_add(&w->errs, 1, "an answer's chunks do not add up to response_complete's total_chunks");
    if (f->total_chunks >= 0 && f->total_chunks <= S_CHUNK_MAX)
        t->total_chunks = f->total_chunks;
    t->completes++;
    t->received++;
    k->cur = 0;
    if (w->o->scenario == PB_STREAM && w->phase == PB_PH_RUN && now < w->t_stop)
        s_assign(s, now >= w->t_measure);
    s_retire(s);
}

/* An error frame: a refused chat (it echoes the chat's id), or anything
   else, which breaks a session still being set up. */
static void
s_error(pb_conn_t *k, const pb_frame_t *f, const char *buf, size_t len)
{
    pb_worker_t *w = k->w;
    pb_sess_t *s = k->sess;
    cJSON *j = cJSON_ParseWithLength(buf, len);
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(j, "code");
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(j, "message");
    const char *cs = cJSON_IsString(code) ? code->valuestring : "(no code)";
    const char *ms = cJSON_IsString(msg) ? msg->valuestring : "(no message)";
    pb_turn_t *t = k->member == 0 && f->id > 0 && f->id <= UINT32_MAX ? s_turn(s, (uint32_t) f->id) : NULL;
    if (t && !t->refused) {
        t->refused = true;
        if (t->measured)
            w->c.turns_refused++;
        pb_errs_add(&w->errs, 1, "a chat was refused: error frame %s: %s", cs, ms);
        s_retire(s);
    } else {
        pb_errs_add(&w->errs, 1, "error frame %s: %s", cs, ms);
        if (!s->ready)
            s_break(s);
    }
    cJSON_Delete(j);
}

void
pb_turns_frame(pb_conn_t *k, const pb_frame_t *f, const char *buf, size_t len, int64_t now)
{
    pb_worker_t *w = k->w;
    pb_sess_t *s = k->sess;
    int64_t gap = 0;
    if (w->turns_finished) { /* the accounting is closed; an error frame is still an error */
        if (f->type == PB_F_ERROR)
            pb_conn_error_frame(w, buf, len);
        return;
    }
    switch (f->type) {
    case PB_F_MESSAGE_ADDED:
    case PB_F_STATUS:
    case PB_F_RESPONSE_START:
    case PB_F_CHUNK:
    case PB_F_RESPONSE_COMPLETE:
        gap = s_seq(k, f);
        if (gap > 0 && f->type != PB_F_CHUNK)
            w->c.lost += (uint64_t) gap;
        break;
    case PB_F_ERROR:
        if (f->seq >= 0 && f->sid) { /* a session event (MODEL_ERROR): it advances seq */
            gap = s_seq(k, f);
            if (gap > 0)
                w->c.lost += (uint64_t) gap;
        }
        break;
    default:
        break;
    }
    switch (f->type) {
    case PB_F_SESSION_CREATED:
        s_created(k, buf, len);
        return;
    case PB_F_SESSION_JOINED:
        s_joined(k, f);
        return;
    case PB_F_MESSAGE_ADDED: {
        uint32_t tag = pb_scan_turn_tag(buf, len);
        pb_turn_t *t = s_turn(s, tag);
        if (!t) {
            pb_errs_add(&w->errs, 1, "a message_added for a turn the bench did not send");
            return;
        }
        if (k->ann_len == PB_TURNS_MAX) {
            pb_errs_add(&w->errs, 1, "too many announced turns");
            return;
        }
        k->ann[(k->ann_head + k->ann_len++) % PB_TURNS_MAX] = tag;
        t->received++;
        return;
    }
    case PB_F_STATUS:
    case PB_F_RESPONSE_START: {
        pb_turn_t *t = k->ann_len ? s_turn(s, k->ann[k->ann_head]) : NULL;
        if (!t) {
            pb_errs_add(&w->errs, 1, "a status or response_start before its message_added");
            return;
        }
        t->received++;
        if (f->type == PB_F_RESPONSE_START) {
            k->cur = k->ann[k->ann_head];
            k->ann_head = (uint8_t) ((k->ann_head + 1) % PB_TURNS_MAX);
            k->ann_len--;
            k->cur_chunks = 0;
            k->cur_first = true;
        }
        return;
    }
    case PB_F_CHUNK:
        if (gap >= 0)
            s_chunk(k, f, gap, now);
        return;
    case PB_F_RESPONSE_COMPLETE:
        s_complete(k, f, now);
        return;
    case PB_F_DELIVERY: {
        pb_turn_t *t = k->member == 0 && f->id > 0 && f->id <= UINT32_MAX ? s_turn(s, (uint32_t) f->id) : NULL;
        if (!t || t->confirmed) {
            pb_errs_add(&w->errs, 1, "an unexpected delivery_confirmation");
            return;
        }
        t->confirmed = true;
        t->received++;
        s_retire(s);
        return;
    }
    case PB_F_ERROR:
        s_error(k, f, buf, len);
        return;
    default: /* presence and typing updates: not part of a turn */
        return;
    }
}

/* ----------------------------------------------------------------- end -- */

bool
pb_turns_drained(const pb_worker_t *w)
{
    return w->outstanding == 0;
}

void
pb_turns_finish(pb_worker_t *w)
{
    if (w->turns_finished)
        return;
    w->turns_finished = true;
    uint64_t before = w->c.turns_unfinished;
    for (size_t i = 0; i < w->nsess; i++) {
        pb_sess_t *s = &w->sess[i];
        lws_sul_cancel(&s->sul);
        for (uint32_t k = s->base; k < s->wnext; k++)
            s_account(s, &s->turns[k % PB_TURNS_MAX], false);
    }
    uint64_t unfinished = w->c.turns_unfinished - before;
    if (unfinished)
        pb_errs_add(&w->errs, unfinished,
                    "a measured turn did not finish (every member's response_complete and "
                    "the delivery_confirmation) before the drain ended");
}
