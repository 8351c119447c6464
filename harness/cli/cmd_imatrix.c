/* cmd_imatrix.c: placeholder until the command lands. */
#include <stdio.h>

#include "cli.h"

int qe_cmd_imatrix(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "qeval imatrix: not built yet\n");
    return QE_EXIT_USAGE;
}
