/* cmd_tokenize.c: placeholder until the command lands. */
#include <stdio.h>

#include "cli.h"

int qe_cmd_tokenize(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "qeval tokenize: not built yet\n");
    return QE_EXIT_USAGE;
}
