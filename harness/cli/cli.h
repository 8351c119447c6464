/*
 * cli.h: the qeval command table and small argument-parsing helpers shared
 * by the per-command files (harness/cli/cmd_<name>.c).
 *
 * Exit codes (DESIGN.md): 0 success, 1 gate regression, 2 usage error or
 * bad input (message names the file/field/offset and what was expected).
 * Results go to stdout, progress and diagnostics to stderr.
 */
#ifndef QE_CLI_H
#define QE_CLI_H

#include <stdbool.h>
#include <stdint.h>

#include "../util/common.h"

enum { QE_EXIT_OK = 0, QE_EXIT_REGRESSION = 1, QE_EXIT_USAGE = 2 };

typedef int (*qe_cmd_fn)(int argc, char **argv); /* argv[0] = command name */

/* One function per command, each in cmd_<name>.c. */
int qe_cmd_info(int argc, char **argv);
int qe_cmd_tokenize(int argc, char **argv);
int qe_cmd_template(int argc, char **argv);
int qe_cmd_ppl(int argc, char **argv);
int qe_cmd_generate(int argc, char **argv);
int qe_cmd_quantize(int argc, char **argv);
int qe_cmd_imatrix(int argc, char **argv);
int qe_cmd_eval(int argc, char **argv);
int qe_cmd_tasks(int argc, char **argv);
int qe_cmd_suites(int argc, char **argv);
int qe_cmd_run(int argc, char **argv);
int qe_cmd_report(int argc, char **argv);
int qe_cmd_compare(int argc, char **argv);
int qe_cmd_gate(int argc, char **argv);
int qe_cmd_history(int argc, char **argv);
int qe_cmd_merge(int argc, char **argv);

/*
 * Argument helpers.  Usage pattern:
 *   for (int i = 1; i < argc; i++) {
 *       const char *v;
 *       if (qe_arg_help(argv[i])) { puts(USAGE); return 0; }
 *       else if ((v = qe_arg_value(argc, argv, &i, "--ctx", NULL))) ...
 *       else if (qe_arg_is_flag(argv[i], "--ids")) ...
 *       else if (argv[i][0] == '-') return qe_usage_error(cmd, "unknown option '%s'", argv[i]);
 *       else positional...
 *   }
 * qe_arg_value accepts "--name VALUE" and "--name=VALUE" (and the optional
 * short alias, e.g. "-o"); if the value is missing it prints an error,
 * sets *i = argc + 1 and returns NULL, so callers check `i > argc` and
 * exit 2.
 */
bool qe_arg_help(const char *a);
bool qe_arg_is_flag(const char *a, const char *name);
const char *qe_arg_value(int argc, char **argv, int *i, const char *name, const char *alias);
/* Parse integer / float / byte size ("8GiB", "512M"); on error print a
 * usage message naming the option and return false. */
bool qe_arg_int(const char *opt, const char *s, long long lo, long long hi, long long *out);
bool qe_arg_double(const char *opt, const char *s, double *out);
bool qe_arg_bytes(const char *opt, const char *s, uint64_t *out);
/* A duration: "90" (seconds), "45s", "30m", "2h", "1h30m" -> seconds (> 0). */
bool qe_arg_duration(const char *opt, const char *s, double *seconds);
/* --numerics exact|llamacpp -> QE_NUMERICS_* (harness/infer/infer.h); on
 * error print a usage message for cmd and return false. */
bool qe_arg_numerics(const char *cmd, const char *s, int *out);
/* Print "qeval <cmd>: <message>\nTry 'qeval <cmd> --help'." and return 2. */
int qe_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Print "qeval <cmd>: <err->msg>" and return 2 (bad input) */
int qe_report_error(const char *cmd, const qe_err *err);

#endif /* QE_CLI_H */
