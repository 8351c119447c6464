/* cmd_run.c: placeholder until the command lands. */
#include <stdio.h>

#include "cli.h"

int qe_cmd_run(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "qeval run: not built yet\n");
    return QE_EXIT_USAGE;
}
