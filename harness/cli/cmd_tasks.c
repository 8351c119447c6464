/*
 * cmd_tasks.c: `qeval tasks`: list the task specs (name, family, output
 * type, language, items with --count).  Every spec is loaded, so a broken
 * spec shows up here with its error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../eval/task.h"
#include "cli.h"

static const char USAGE[] =
    "usage: qeval tasks [--count]\n"
    "  Lists datasets/tasks/*.json ($QEVAL_DATASETS overrides 'datasets').\n"
    "  --count   also read each data file and print its number of items\n";

int qe_cmd_tasks(int argc, char **argv)
{
    bool count = false;
    for (int i = 1; i < argc; i++) {
        if (qe_arg_help(argv[i])) {
            fputs(USAGE, stdout);
            return QE_EXIT_OK;
        } else if (qe_arg_is_flag(argv[i], "--count")) {
            count = true;
        } else {
            return qe_usage_error("tasks", "unknown argument '%s'", argv[i]);
        }
    }
    char **names;
    int n, bad = 0;
    qe_err err = {0};
    if (qe_task_list(&names, &n, &err))
        return qe_report_error("tasks", &err);
    printf("%-24s %-13s %-16s %-10s %s\n", "task", "family", "type", "language",
           count ? "items" : "");
    for (int i = 0; i < n; i++) {
        qe_task *t = qe_task_load_name(names[i], &err);
        if (!t) {
            printf("%-24s ERROR %s\n", names[i], err.msg);
            bad++;
        } else {
            char items[32] = "";
            if (count) {
                if (qe_task_load_data(t, &err) == 0)
                    snprintf(items, sizeof items, "%zu", t->docs.n);
                else
                    snprintf(items, sizeof items, "ERROR");
            }
            printf("%-24s %-13s %-16s %-10s %s\n", t->name, t->family,
                   qe_output_type_name(t->output_type), t->language, items);
        }
        qe_task_free(t);
        free(names[i]);
    }
    free(names);
    return bad ? QE_EXIT_USAGE : QE_EXIT_OK;
}
