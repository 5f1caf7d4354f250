/*  play_plan — a capture turned into the plan parley-replay play walks.

    The plan is the capture's client events (each connection's open, each
    IN frame, a client-initiated close) in file order, each with its offset
    from the capture's start and its gate: how many of the capture's OUT
    frames, in file order, had been sent before it. Connections still open
    when the capture ended get a closing event at its end. Built once, read
    by every copy (play_run.c); nothing in it changes while playing. */
#include <stdlib.h>
#include <string.h>

#include "play_int.h"

/* The request path of a connection the capture joined mid-way. */
#define S_DEFAULT_PATH "/ws"

typedef struct {
    uint64_t id;
    size_t idx;
} s_idx_t;

static int
s_idx_cmp(const void *a, const void *b)
{
    const s_idx_t *x = a, *y = b;
    return x->id < y->id ? -1 : x->id > y->id;
}

void
rp_plan_free(rp_plan_t *pl)
{
    if (pl->conns && pl->cap)
        for (size_t i = 0; i < pl->cap->nconns; i++) {
            free(pl->conns[i].path);
            free(pl->conns[i].outs);
        }
    free(pl->conns);
    free(pl->ev);
    free(pl->out);
    memset(pl, 0, sizeof *pl);
}

static void
s_plan_event(rp_plan_t *pl, rp_ev_kind_t kind, size_t conn, const pl_cap_rec_t *rec, int64_t at_us)
{
    rp_event_t *e = &pl->ev[pl->nev++];
    *e = (rp_event_t){.kind = kind, .conn = conn, .rec = rec, .at_us = at_us, .gate = pl->nout};
    if (kind == RP_EV_FRAME)
        e->frame_no = ++pl->conns[conn].nin;
}

/* One pass over the records in file order: the events, the OUT frames. */
static void
s_plan_walk(rp_plan_t *pl, const s_idx_t *index)
{
    const rp_capture_t *cap = pl->cap;
    int64_t t0 = 0, at = 0;
    bool started = false;
    for (size_t i = 0; i < cap->n; i++) {
        const pl_cap_rec_t *r = &cap->recs[i];
        if (r->kind == PL_CAP_LOST)
            continue;
        if (!started) {
            t0 = r->t_us;
            started = true;
        }
        if (r->t_us - t0 > at)
            at = r->t_us - t0;
        s_idx_t key = {.id = r->conn};
        const s_idx_t *hit = bsearch(&key, index, cap->nconns, sizeof *index, s_idx_cmp);
        size_t ci = hit->idx; /* every record's connection is indexed */
        rp_pconn_t *pc = &pl->conns[ci];
        if (pc->closed)
            continue;
        if (!pc->seen) {
            pc->seen = true;
            s_plan_event(pl, RP_EV_OPEN, ci, r->kind == PL_CAP_OPEN ? r : NULL, at);
            if (r->kind == PL_CAP_OPEN)
                continue;
        }
        if (r->kind == PL_CAP_FRAME && r->dir == PL_CAP_IN) {
            s_plan_event(pl, RP_EV_FRAME, ci, r, at);
        } else if (r->kind == PL_CAP_FRAME) {
            pc->outs[pc->nout++] = r;
            pl->out[pl->nout++] = (rp_out_t){.conn = ci, .nth = pc->nout};
        } else if (r->kind == PL_CAP_CLOSE) {
            pc->closed = true;
            if (r->by == PL_CAP_IN)
                s_plan_event(pl, RP_EV_CLOSE, ci, r, at);
            else
                pc->server_closes = true;
        }
    }
    /* Connections still open when the capture ended are closed by the
       client once every server frame has come (or --timeout passed). */
    for (size_t ci = 0; ci < cap->nconns; ci++)
        if (pl->conns[ci].seen && !pl->conns[ci].closed)
            s_plan_event(pl, RP_EV_CLOSE, ci, NULL, at);
    pl->duration_us = at;
}

int
rp_plan_build(rp_plan_t *pl, const rp_capture_t *cap, char *err, size_t errsize)
{
    memset(pl, 0, sizeof *pl);
    pl->cap = cap;
    size_t nouts = 0;
    for (size_t i = 0; i < cap->n; i++)
        if (cap->recs[i].kind == PL_CAP_FRAME && cap->recs[i].dir == PL_CAP_OUT)
            nouts++;
    s_idx_t *index = calloc(cap->nconns ? cap->nconns : 1, sizeof *index);
    pl->conns = calloc(cap->nconns ? cap->nconns : 1, sizeof *pl->conns);
    pl->ev = calloc(cap->n + 2 * cap->nconns + 1, sizeof *pl->ev);
    pl->out = calloc(nouts + 1, sizeof *pl->out);
    if (!index || !pl->conns || !pl->ev || !pl->out)
        goto out_nomem;
    for (size_t ci = 0; ci < cap->nconns; ci++) {
        const rp_conn_t *c = &cap->conns[ci];
        rp_pconn_t *pc = &pl->conns[ci];
        index[ci] = (s_idx_t){.id = c->id, .idx = ci};
        size_t n = 0;
        for (size_t j = 0; j < c->n; j++)
            n += c->recs[j]->dir == PL_CAP_OUT;
        pc->outs = calloc(n + 1, sizeof *pc->outs);
        if (c->open && c->open->path_len > 0 && c->open->path[0] == '/')
            pc->path = strndup(c->open->path, c->open->path_len);
        else
            pc->path = strdup(S_DEFAULT_PATH);
        if (!pc->outs || !pc->path)
            goto out_nomem;
    }
    qsort(index, cap->nconns, sizeof *index, s_idx_cmp);
    s_plan_walk(pl, index);
    free(index);
    return 0;
out_nomem:
    free(index);
    rp_plan_free(pl);
    snprintf(err, errsize, "out of memory");
    return -1;
}
