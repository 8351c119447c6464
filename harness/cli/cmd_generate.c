/* cmd_generate.c: placeholder until the command lands. */
#include <stdio.h>

#include "cli.h"

int qe_cmd_generate(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "qeval generate: not built yet\n");
    return QE_EXIT_USAGE;
}
