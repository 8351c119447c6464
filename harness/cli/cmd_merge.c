/*
 * cmd_merge.c: `qeval merge OUT.db IN.db...`: join shard databases
 * (harness/store: qe_store_merge).  Shards of one run share its run key,
 * so their rows become one run; results are re-aggregated.
 */
#include <stdio.h>

#include "../store/store.h"
#include "cli.h"

static const char USAGE[] =
    "usage: qeval merge OUT.db IN.db...\n"
    "\n"
    "Join the databases written by 'qeval run --shard I/N' (or any results\n"
    "databases) into OUT.db, created if absent.  Runs with the same run key become\n"
    "one run; rows present in several inputs are kept once.\n";

int qe_cmd_merge(int argc, char **argv)
{
    int first = 0, n = 0;
    for (int i = 1; i < argc; i++) {
        if (qe_arg_help(argv[i])) {
            fputs(USAGE, stdout);
            return QE_EXIT_OK;
        }
        if (argv[i][0] == '-' && argv[i][1])
            return qe_usage_error("merge", "unknown option '%s'", argv[i]);
        if (!first)
            first = i;
        n++;
    }
    if (n < 2)
        return qe_usage_error("merge", "expected OUT.db and at least one IN.db");
    qe_err err = {0};
    qe_store *out = qe_store_open(argv[first], &err);
    if (!out)
        return qe_report_error("merge", &err);
    int64_t total = 0;
    for (int i = first + 1; i < argc; i++) {
        int64_t added = 0;
        if (qe_store_merge(out, argv[i], &added, &err)) {
            qe_store_close(out);
            return qe_report_error("merge", &err);
        }
        fprintf(stderr, "qeval merge: %s: %lld new rows\n", argv[i], (long long)added);
        total += added;
    }
    qe_store_close(out);
    printf("merged %d database%s into %s: %lld rows added\n", n - 1, n == 2 ? "" : "s",
           argv[first], (long long)total);
    return QE_EXIT_OK;
}
