#include "pl_util.h"

#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "pl_limits.h"

uint64_t
pl_random_u64(void)
{
    uint64_t v = 0;
    while (v == 0) {
        ssize_t n = getrandom(&v, sizeof v, 0);
        if (n != (ssize_t) sizeof v) {
            /* getrandom(2) on Linux does not fail for 8 bytes once the pool is
               initialised; fall back on the clock rather than abort. */
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            v = (uint64_t) ts.tv_nsec * 0x9E3779B97F4A7C15ull ^ (uint64_t) ts.tv_sec;
        }
    }
    return v;
}

void
pl_id_new(char prefix, char *out, size_t size)
{
    snprintf(out, size, "%c%016llx", prefix, (unsigned long long) pl_random_u64());
}

void
pl_conn_name(uint64_t conn, char *out, size_t size)
{
    snprintf(out, size, "c%016llx", (unsigned long long) conn);
}

bool
pl_id_valid(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '-' || c == '.' || c == ':';
        if (!ok || n >= PL_ID_MAX)
            return false;
    }
    return n > 0;
}

uint64_t
pl_hash(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) {
        h ^= (unsigned char) *s;
        h *= 0x100000001b3ull;
    }
    return h;
}

/* Length of the well-formed UTF-8 sequence at p, or 0. */
static size_t
s_utf8_len(const unsigned char *p)
{
    unsigned char c = p[0];
    if (c < 0x80)
        return 1;
    size_t n;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        n = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        lo = c == 0xE0 ? 0xA0 : 0x80;
        hi = c == 0xED ? 0x9F : 0xBF;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        lo = c == 0xF0 ? 0x90 : 0x80;
        hi = c == 0xF4 ? 0x8F : 0xBF;
    } else
        return 0;
    if (p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xBF)
            return 0;
    return n;
}

size_t
pl_utf8_scrub(char *s)
{
    size_t replaced = 0;
    unsigned char *p = (unsigned char *) s;
    while (*p) {
        size_t n = s_utf8_len(p);
        if (n == 0) {
            *p++ = '?';
            replaced++;
        } else {
            p += n;
        }
    }
    return replaced;
}

bool
pl_utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *) s;
    for (size_t i = 0; i < n;) {
        unsigned char c = p[i];
        size_t need = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
        if (need > n - i || s_utf8_len(p + i) != need)
            return false;
        i += need;
    }
    return true;
}

int64_t
pl_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
pl_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t
pl_wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

double
pl_wall_s(void)
{
    return (double) pl_wall_us() / 1e6;
}
