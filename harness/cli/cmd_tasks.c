/* cmd_tasks.c: placeholder until the command lands. */
#include <stdio.h>

#include "cli.h"

int qe_cmd_tasks(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "qeval tasks: not built yet\n");
    return QE_EXIT_USAGE;
}
