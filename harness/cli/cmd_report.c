/* cmd_report.c: placeholder until the command lands. */
#include <stdio.h>

#include "cli.h"

int qe_cmd_report(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "qeval report: not built yet\n");
    return QE_EXIT_USAGE;
}
