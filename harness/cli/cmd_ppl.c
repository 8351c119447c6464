/* cmd_ppl.c: placeholder until the command lands. */
#include <stdio.h>

#include "cli.h"

int qe_cmd_ppl(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "qeval ppl: not built yet\n");
    return QE_EXIT_USAGE;
}
