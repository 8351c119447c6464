/* cmd_eval.c: placeholder until the command lands. */
#include <stdio.h>

#include "cli.h"

int qe_cmd_eval(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "qeval eval: not built yet\n");
    return QE_EXIT_USAGE;
}
