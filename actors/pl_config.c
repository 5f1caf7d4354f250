#include "pl_config.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "../protocol/pl_version.h"
#include "../transport/pl_log.h"

typedef struct {
    const char *member, *flag, *env, *help;
    bool is_int;
    long def, min, max;
    const char *sdef;
    size_t offset;
} s_opt_t;

static const s_opt_t s_opts[] = {
#define I(m, flag, env, def, min, max, help) {#m, flag, env, help, true, def, min, max, NULL, offsetof(pl_config_t, m)},
#define S(m, flag, env, def, help) {#m, flag, env, help, false, 0, 0, 0, def, offsetof(pl_config_t, m)},
    PL_CONFIG(I, S)
#undef I
#undef S
};
#define S_NOPTS (sizeof s_opts / sizeof s_opts[0])

static int
s_set(pl_config_t *cfg, const s_opt_t *o, const char *name, const char *text, FILE *err)
{
    char *slot = (char *) cfg + o->offset;
    if (!o->is_int) {
        *(const char **) slot = text;
        return 0;
    }
    char *end = NULL;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || v < o->min || v > o->max) {
        fprintf(err, "parleyd: %s must be a whole number from %ld to %ld (got \"%.40s\")\n", name, o->min,
                o->max, text);
        return -1;
    }
    *(long *) slot = v;
    return 0;
}

static int
s_check(const pl_config_t *cfg, FILE *err)
{
    if (strcmp(cfg->log_format, "text") != 0 && strcmp(cfg->log_format, "json") != 0) {
        fprintf(err, "parleyd: --log-format must be text or json\n");
        return -1;
    }
    const char *levels[] = {"error", "warn", "info", "debug"};
    bool ok = false;
    for (int i = 0; i < 4; i++)
        ok = ok || strcmp(cfg->log_level, levels[i]) == 0;
    if (!ok) {
        fprintf(err, "parleyd: --log-level must be error, warn, info or debug\n");
        return -1;
    }
    if (cfg->max_frame_hard < cfg->max_frame) {
        fprintf(err, "parleyd: --max-frame-hard must be at least --max-frame\n");
        return -1;
    }
    if (cfg->max_context < cfg->max_message) {
        fprintf(err, "parleyd: --max-context must be at least --max-message\n");
        return -1;
    }
    size_t mlen = strlen(cfg->model);
    if (mlen == 0 || mlen > 128) {
        fprintf(err, "parleyd: --model must be 1 to 128 characters\n");
        return -1;
    }
    return 0;
}

int
pl_config_load(pl_config_t *cfg, int argc, char **argv, FILE *err)
{
    for (size_t i = 0; i < S_NOPTS; i++) {
        char *slot = (char *) cfg + s_opts[i].offset;
        if (s_opts[i].is_int)
            *(long *) slot = s_opts[i].def;
        else
            *(const char **) slot = s_opts[i].sdef;
        const char *v = getenv(s_opts[i].env);
        if (v && *v && s_set(cfg, &s_opts[i], s_opts[i].env, v, err) != 0)
            return -1;
    }
    for (int a = 1; a < argc; a++) {
        const char *arg = argv[a];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            pl_config_usage(stdout);
            return 1;
        }
        if (strcmp(arg, "--version") == 0) {
            printf("parleyd %s\n", PL_VERSION);
            return 1;
        }
        const char *eq = strchr(arg, '=');
        size_t nlen = eq ? (size_t) (eq - arg) : strlen(arg);
        const s_opt_t *o = NULL;
        for (size_t i = 0; i < S_NOPTS; i++)
            if (strlen(s_opts[i].flag) == nlen && strncmp(arg, s_opts[i].flag, nlen) == 0)
                o = &s_opts[i];
        if (!o) {
            fprintf(err, "parleyd: unknown option \"%.60s\" (see parleyd --help)\n", arg);
            return -1;
        }
        const char *value = eq ? eq + 1 : (a + 1 < argc ? argv[++a] : NULL);
        if (!value) {
            fprintf(err, "parleyd: %s needs a value\n", o->flag);
            return -1;
        }
        if (s_set(cfg, o, o->flag, value, err) != 0)
            return -1;
    }
    return s_check(cfg, err);
}

/* Largest models file we read: a hand-written table is a few KB. */
#define S_MODELS_FILE_MAX (1024 * 1024)

int
pl_config_load_models(pl_config_t *cfg, FILE *err)
{
    char why[200] = "";
    char *buf = NULL;
    size_t len = 0;
    if (cfg->models[0]) {
        FILE *f = fopen(cfg->models, "rb");
        if (!f) {
            fprintf(err, "parleyd: cannot read the models file %s: %s\n", cfg->models, strerror(errno));
            return -1;
        }
        buf = malloc(S_MODELS_FILE_MAX + 1);
        len = buf ? fread(buf, 1, S_MODELS_FILE_MAX + 1, f) : 0;
        fclose(f);
        if (!buf || len > S_MODELS_FILE_MAX) {
            fprintf(err, "parleyd: the models file %s is over 1 MiB\n", cfg->models);
            free(buf);
            return -1;
        }
    }
    int rc = pl_models_parse(buf, len, &cfg->models_table, why, sizeof why);
    free(buf);
    if (rc != 0) {
        fprintf(err, "parleyd: models file %s: %s\n", cfg->models, why);
        return -1;
    }
    return 0;
}

void
pl_config_usage(FILE *out)
{
    fprintf(out,
            "Usage: parleyd [OPTION]...\n"
            "Parley %s: a real-time, multi-client chat server for AI models.\n"
            "Serves HTTP and WebSocket (/ws) on one port. Each option can also be set\n"
            "from the environment variable shown; an option beats the environment.\n\n",
            PL_VERSION);
    for (size_t i = 0; i < S_NOPTS; i++) {
        const s_opt_t *o = &s_opts[i];
        char flag[48], env[48];
        snprintf(flag, sizeof flag, "%s %s", o->flag, o->is_int ? "N" : "S");
        snprintf(env, sizeof env, "[%s]", o->env);
        if (o->is_int)
            fprintf(out, "  %-22s %-30s %s (default %ld; %ld..%ld)\n", flag, env, o->help, o->def, o->min,
                    o->max);
        else
            fprintf(out, "  %-22s %-30s %s (default \"%s\")\n", flag, env, o->help, o->sdef);
    }
    fprintf(out, "  %-22s %-30s %s\n  %-22s %-30s %s\n", "--help", "", "show this help and exit", "--version", "",
            "show the version and exit");
    fprintf(out, "\nSIGINT or SIGTERM stops the server: clients are closed with 1001, exit status 0.\n");
}

void
pl_config_log(const pl_config_t *cfg)
{
    char line[700];
    size_t pos = 0;
    for (size_t i = 0; i < S_NOPTS && pos < sizeof line; i++) {
        const char *slot = (const char *) cfg + s_opts[i].offset;
        int n = s_opts[i].is_int
                    ? snprintf(line + pos, sizeof line - pos, "%s=%ld ", s_opts[i].member, *(const long *) slot)
                    : snprintf(line + pos, sizeof line - pos, "%s=%s ", s_opts[i].member,
                               *(const char *const *) slot);
        pos += n > 0 ? (size_t) n : 0;
    }
    pl_log_info("config", "%s", line);
}
