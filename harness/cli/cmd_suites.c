/*
 * cmd_suites.c: `qeval suites`: list the suites and their tasks/limits.
 */
#include <stdio.h>
#include <stdlib.h>

#include "../eval/task.h"
#include "cli.h"

static const char USAGE[] =
    "usage: qeval suites\n"
    "  Lists datasets/suites/*.json: each suite's tasks with their item limits.\n";

int qe_cmd_suites(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (qe_arg_help(argv[i])) {
            fputs(USAGE, stdout);
            return QE_EXIT_OK;
        }
        return qe_usage_error("suites", "unknown argument '%s'", argv[i]);
    }
    char **names;
    int n, bad = 0;
    qe_err err = {0};
    if (qe_suite_list(&names, &n, &err))
        return qe_report_error("suites", &err);
    for (int i = 0; i < n; i++) {
        qe_suite *s = qe_suite_load_name(names[i], &err);
        if (!s) {
            printf("%s: ERROR %s\n", names[i], err.msg);
            bad++;
        } else {
            printf("%s (%d tasks): %s\n", s->name, s->n, s->description ? s->description : "");
            for (int k = 0; k < s->n; k++) {
                if (s->entries[k].limit)
                    printf("  %-24s limit %zu\n", s->entries[k].task, s->entries[k].limit);
                else
                    printf("  %-24s all items\n", s->entries[k].task);
            }
        }
        qe_suite_free(s);
        free(names[i]);
    }
    free(names);
    return bad ? QE_EXIT_USAGE : QE_EXIT_OK;
}
