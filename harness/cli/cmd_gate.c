/* cmd_gate.c: placeholder until the command lands. */
#include <stdio.h>

#include "cli.h"

int qe_cmd_gate(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "qeval gate: not built yet\n");
    return QE_EXIT_USAGE;
}
