/* cmd_quantize.c: placeholder until the command lands. */
#include <stdio.h>

#include "cli.h"

int qe_cmd_quantize(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "qeval quantize: not built yet\n");
    return QE_EXIT_USAGE;
}
