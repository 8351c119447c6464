/* cmd_compare.c: placeholder until the command lands. */
#include <stdio.h>

#include "cli.h"

int qe_cmd_compare(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "qeval compare: not built yet\n");
    return QE_EXIT_USAGE;
}
