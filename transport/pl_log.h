/*  pl_log — the one logger: one line per event on stderr, text or JSON.

    Events are "name k=v k=v" with values free of spaces (ids, numbers,
    names); in JSON mode each k=v becomes a string member. Never pass message
    content, tokens or keys: the log records what happened, not what was said.
    Thread-safe (one write(2) per line). */
#ifndef PL_LOG_H
#define PL_LOG_H

typedef enum { PL_LOG_TEXT = 0, PL_LOG_JSON } pl_log_format_t;
typedef enum { PL_LOG_ERROR = 0, PL_LOG_WARN, PL_LOG_INFO, PL_LOG_DEBUG } pl_log_level_t;

void pl_log_init(pl_log_format_t format, pl_log_level_t level);
/* Logs event `event` with fields formatted from `fmt` ("k=%s n=%d ..."). */
void pl_log_event(pl_log_level_t level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define pl_log_info(event, ...) pl_log_event(PL_LOG_INFO, event, __VA_ARGS__)
#define pl_log_warn(event, ...) pl_log_event(PL_LOG_WARN, event, __VA_ARGS__)
#define pl_log_error(event, ...) pl_log_event(PL_LOG_ERROR, event, __VA_ARGS__)

#endif
