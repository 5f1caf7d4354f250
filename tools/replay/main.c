/*  parley-replay — capture real traffic from parleyd's tap and replay it.

    parley-replay record ENDPOINT FILE
    parley-replay play [options] FILE URL
    parley-replay diff [options] A B
    parley-replay stats FILE

    Each command's --help says more; docs/capture.md describes the file. */
#include <stdio.h>
#include <string.h>

#include "pl_version.h"
#include "replay.h"

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *what;
} s_commands[] = {
    {"record", rp_record, "attach to parleyd --tap ENDPOINT and write what it publishes to FILE"},
    {"play", rp_play, "replay a capture's client frames against a server, recording what comes back"},
    {"diff", rp_diff, "compare two captures' server frames, ignoring ids and times"},
    {"stats", rp_stats, "summarise a capture: connections, frames by type, bytes, duration"},
};

static int
s_help(FILE *out)
{
    fprintf(out,
            "usage: parley-replay COMMAND [options] ARGS\n"
            "\n"
            "Captures real WebSocket traffic from parleyd's tap (parleyd --tap ENDPOINT)\n"
            "and replays it: to reproduce a bug, to test a new version against\n"
            "yesterday's conversations, to generate load.\n"
            "\n"
            "commands:\n");
    for (size_t i = 0; i < sizeof s_commands / sizeof *s_commands; i++)
        fprintf(out, "  %-7s %s\n", s_commands[i].name, s_commands[i].what);
    fprintf(out,
            "\n"
            "parley-replay COMMAND --help tells more. Exit status: 0 success, 1 a\n"
            "difference (diff) or a failed replay (play), 2 bad usage, an unreadable\n"
            "input or an unwritable output.\n");
    return out == stdout ? 0 : 2;
}

int
main(int argc, char **argv)
{
    if (argc < 2)
        return s_help(stderr);
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0)
        return s_help(stdout);
    if (strcmp(argv[1], "--version") == 0) {
        printf("parley-replay %s (capture format %d)\n", PL_VERSION, PL_CAP_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof s_commands / sizeof *s_commands; i++)
        if (strcmp(argv[1], s_commands[i].name) == 0)
            return s_commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "parley-replay: unknown command '%s'\n\n", argv[1]);
    return s_help(stderr);
}
