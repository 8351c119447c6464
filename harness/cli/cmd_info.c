/* cmd_info.c: placeholder until the command lands. */
#include <stdio.h>

#include "cli.h"

int qe_cmd_info(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "qeval info: not built yet\n");
    return QE_EXIT_USAGE;
}
