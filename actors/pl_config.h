/*  pl_config — parleyd's settings, from pl_config.def. Immutable after
    pl_config_load(); actors read it through their `arg`. */
#ifndef PL_CONFIG_H
#define PL_CONFIG_H

#include <stdbool.h>
#include <stdio.h>

#include "../protocol/pl_models.h"
#include "pl_config.def"

typedef struct {
#define I(member, flag, env, def, min, max, help) long member;
#define S(member, flag, env, def, help) const char *member;
    PL_CONFIG(I, S)
#undef I
#undef S
    pl_models_t models_table; /* from --models, loaded by pl_config_load_models() */
} pl_config_t;

/* Fills `cfg` from defaults, the environment, then argv. Returns 0; 1 when
   --help or --version was printed (exit 0); -1 after printing an error to
   `err` (exit 2). Strings point into argv/environ or static storage. */
int pl_config_load(pl_config_t *cfg, int argc, char **argv, FILE *err);
/* Reads and checks the --models file (echo alone without one). 0, or -1
   after printing why to `err`. Free with pl_models_free(&cfg->models_table). */
int pl_config_load_models(pl_config_t *cfg, FILE *err);

/* Writes the --help text. */
void pl_config_usage(FILE *out);
/* Logs every setting as one "config" event. */
void pl_config_log(const pl_config_t *cfg);

#endif
