/* cmd_suites.c: placeholder until the command lands. */
#include <stdio.h>

#include "cli.h"

int qe_cmd_suites(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "qeval suites: not built yet\n");
    return QE_EXIT_USAGE;
}
