#include "pl_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static pl_log_format_t s_format = PL_LOG_TEXT;
static pl_log_level_t s_level = PL_LOG_INFO;

static const char *const s_level_names[] = {"error", "warn", "info", "debug"};

void
pl_log_init(pl_log_format_t format, pl_log_level_t level)
{
    s_format = format;
    s_level = level;
}

/* Appends `s` to `out` at *pos as JSON string content (escaped). */
static void
s_json_escape(char *out, size_t size, size_t *pos, const char *s, size_t n)
{
    for (size_t i = 0; i < n && *pos + 7 < size; i++) {
        unsigned char c = (unsigned char) s[i];
        if (c == '"' || c == '\\') {
            out[(*pos)++] = '\\';
            out[(*pos)++] = (char) c;
        } else if (c < 0x20) {
            *pos += (size_t) snprintf(out + *pos, size - *pos, "\\u%04x", c);
        } else {
            out[(*pos)++] = (char) c;
        }
    }
}

static void
s_append(char *out, size_t size, size_t *pos, const char *s)
{
    if (*pos + 1 >= size)
        return;
    size_t n = strlen(s);
    if (*pos + n >= size)
        n = size - *pos - 1;
    memcpy(out + *pos, s, n);
    *pos += n;
}

void
pl_log_event(pl_log_level_t level, const char *event, const char *fmt, ...)
{
    if (level > s_level)
        return;
    char fields[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(fields, sizeof fields, fmt, ap);
    va_end(ap);

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char stamp[40];
    size_t sn = strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(stamp + sn, sizeof stamp - sn, ".%03ldZ", ts.tv_nsec / 1000000);

    char line[1200];
    size_t pos = 0;
    if (s_format == PL_LOG_TEXT) {
        pos = (size_t) snprintf(line, sizeof line, "%s %-5s %-10s %s", stamp, s_level_names[level], event,
                                fields);
        if (pos >= sizeof line - 1)
            pos = sizeof line - 2;
    } else {
        s_append(line, sizeof line, &pos, "{\"ts\":\"");
        s_append(line, sizeof line, &pos, stamp);
        s_append(line, sizeof line, &pos, "\",\"level\":\"");
        s_append(line, sizeof line, &pos, s_level_names[level]);
        s_append(line, sizeof line, &pos, "\",\"event\":\"");
        s_json_escape(line, sizeof line, &pos, event, strlen(event));
        s_append(line, sizeof line, &pos, "\"");
        /* fields: space-separated k=v; a token without '=' joins "msg" */
        const char *p = fields;
        while (*p) {
            while (*p == ' ')
                p++;
            if (!*p)
                break;
            const char *end = strchr(p, ' ');
            size_t n = end ? (size_t) (end - p) : strlen(p);
            const char *eq = memchr(p, '=', n);
            s_append(line, sizeof line, &pos, ",\"");
            if (eq) {
                s_json_escape(line, sizeof line, &pos, p, (size_t) (eq - p));
                s_append(line, sizeof line, &pos, "\":\"");
                s_json_escape(line, sizeof line, &pos, eq + 1, n - (size_t) (eq - p) - 1);
            } else {
                s_append(line, sizeof line, &pos, "word\":\"");
                s_json_escape(line, sizeof line, &pos, p, n);
            }
            s_append(line, sizeof line, &pos, "\"");
            p += n;
        }
        s_append(line, sizeof line, &pos, "}");
    }
    if (pos > sizeof line - 2)
        pos = sizeof line - 2;
    line[pos++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, pos);
    (void) w;
}
