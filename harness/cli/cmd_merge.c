/* cmd_merge.c: placeholder until the command lands. */
#include <stdio.h>

#include "cli.h"

int qe_cmd_merge(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "qeval merge: not built yet\n");
    return QE_EXIT_USAGE;
}
