#include "replay.h"

int
rp_stats(int argc, char **argv)
{
    (void) argc;
    return rp_usage_error(argv[0], "not built yet");
}
