#include "pl_err.h"

#include <string.h>

static const char *const s_names[] = {
#define X(id, wire, text) wire,
    PL_ERRORS(X)
#undef X
};

static const char *const s_texts[] = {
#define X(id, wire, text) text,
    PL_ERRORS(X)
#undef X
};

static int
s_index(int code)
{
    if (code < 0)
        code = -code;
    return code < PL_E_COUNT_ ? code : PL_E_INTERNAL;
}

const char *
pl_err_name(int code)
{
    return s_names[s_index(code)];
}

const char *
pl_strerror(int code)
{
    return s_texts[s_index(code)];
}

int
pl_err_from_name(const char *name)
{
    for (int i = 0; i < PL_E_COUNT_; i++)
        if (strcmp(s_names[i], name) == 0)
            return i;
    return -1;
}
