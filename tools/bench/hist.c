/*  hist — a log-linear latency histogram in microseconds.

    Values below PB_HIST_LINEAR µs (about 1 ms) have a bucket each, so they
    are exact. Above, each power of two [2^e, 2^(e+1)) is cut into
    PB_HIST_SUB equal buckets of width 2^(e-7): a bucket's middle is within
    1/256 of any value in it (well under 1 %). Up to 2^26 µs (67 s); larger
    values are counted in the last bucket, which reports the max (kept
    exactly).

    Histograms merge by adding counts, so each worker keeps its own and the
    parent adds them up: quantiles of the merge are those of all values. */
#include <math.h>

#include "bench.h"

static size_t
s_index(int64_t us)
{
    if (us < 0)
        us = 0;
    uint64_t v = (uint64_t) us;
    if (v < PB_HIST_LINEAR)
        return (size_t) v;
    int e = 63 - __builtin_clzll(v);
    if (e >= PB_HIST_TOP_EXP)
        return PB_HIST_BUCKETS - 1;
    size_t sub = (size_t) (v >> (e - PB_HIST_SUB_BITS)) - PB_HIST_SUB;
    return PB_HIST_LINEAR + (size_t) (e - 10) * PB_HIST_SUB + sub;
}

/* The middle of bucket i. */
static int64_t
s_value(size_t i)
{
    if (i < PB_HIST_LINEAR)
        return (int64_t) i;
    size_t k = i - PB_HIST_LINEAR;
    int e = 10 + (int) (k / PB_HIST_SUB);
    uint64_t width = 1ull << (e - PB_HIST_SUB_BITS);
    uint64_t low = (uint64_t) (PB_HIST_SUB + k % PB_HIST_SUB) * width;
    return (int64_t) (low + (width - 1) / 2);
}

void
pb_hist_add(pb_hist_t *h, int64_t us)
{
    if (us < 0)
        us = 0;
    h->n[s_index(us)]++;
    h->count++;
    if (us > h->max)
        h->max = us;
}

void
pb_hist_merge(pb_hist_t *into, const pb_hist_t *from)
{
    if (!from->count)
        return;
    for (size_t i = 0; i < PB_HIST_BUCKETS; i++)
        into->n[i] += from->n[i];
    into->count += from->count;
    if (from->max > into->max)
        into->max = from->max;
}

int64_t
pb_hist_quantile(const pb_hist_t *h, double q)
{
    if (!h->count)
        return 0;
    uint64_t rank = (uint64_t) ceil(q * (double) h->count);
    if (rank < 1)
        rank = 1;
    if (rank > h->count)
        rank = h->count;
    uint64_t seen = 0;
    for (size_t i = 0; i < PB_HIST_BUCKETS; i++) {
        seen += h->n[i];
        if (seen >= rank) {
            if (i == PB_HIST_BUCKETS - 1) /* the overflow bucket: only the max is known */
                return h->max;
            int64_t v = s_value(i);
            return v > h->max ? h->max : v;
        }
    }
    return h->max;
}
