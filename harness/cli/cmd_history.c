/* cmd_history.c: placeholder until the command lands. */
#include <stdio.h>

#include "cli.h"

int qe_cmd_history(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "qeval history: not built yet\n");
    return QE_EXIT_USAGE;
}
