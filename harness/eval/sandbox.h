/*
 * sandbox.h: run untrusted Python (model-written code + the task's tests)
 * in a contained child process, for the code_exec evaluator.
 *
 * Containment, in layers (each documented because some may be refused by
 * the host):
 *   - fork; the child leads its own process group, which is SIGKILLed as a
 *     whole on timeout and after the child exits (no stragglers);
 *   - setrlimit: CPU seconds, address space, NPROC, FSIZE, NOFILE, CORE=0;
 *   - an empty, freshly made temporary directory as cwd (removed after);
 *     HOME and TMPDIR point into it; the environment is scrubbed to PATH,
 *     HOME, TMPDIR, LANG and PYTHON* safety variables;
 *   - network: unshare(CLONE_NEWNET) (a namespace with only a down
 *     loopback); if refused, unshare(CLONE_NEWUSER|CLONE_NEWNET); if both
 *     are refused, the run goes on and qe_sandbox_result.net_isolated is
 *     false (fallback: Landlock TCP rules below, and the Python guard);
 *   - Landlock (Linux >= 5.13, when available): writes allowed only
 *     beneath the temp dir; TCP bind/connect denied (ABI >= 4);
 *   - when running as root: drop to uid/gid 65534 (nobody) so that
 *     RLIMIT_NPROC applies (the kernel never limits root's process count);
 *   - no_new_privs; a Python prelude that disables os.system, fork, exec,
 *     subprocess, kill, chdir, file removal and socket creation before the
 *     untrusted code runs (defence in depth, like human-eval's guard).
 * The program goes to python3 on stdin from an unlinked temp file, so the
 * cwd stays empty.
 *
 * Must not hold: task logic, scoring.
 */
#ifndef QE_SANDBOX_H
#define QE_SANDBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../util/common.h"

typedef struct qe_sandbox_opts {
    double timeout_s;         /* wall clock; default 10 */
    int cpu_s;                /* RLIMIT_CPU; default ceil(timeout_s) + 1 */
    uint64_t mem_nbytes;      /* RLIMIT_AS; default 1 GiB */
    uint64_t fsize_nbytes;    /* RLIMIT_FSIZE; default 16 MiB */
    int max_procs;            /* RLIMIT_NPROC; default 64 (needs non-root) */
    int max_files;            /* RLIMIT_NOFILE; default 64 */
    bool no_guard;            /* skip the Python prelude (tests only) */
} qe_sandbox_opts;

typedef enum qe_sandbox_status {
    QE_SB_PASS = 0,      /* exit status 0 */
    QE_SB_FAIL = 1,      /* non-zero exit (assertion, exception) */
    QE_SB_TIMEOUT = 2,   /* wall-clock or CPU limit hit */
    QE_SB_CRASH = 3,     /* killed by another signal */
} qe_sandbox_status;

typedef struct qe_sandbox_result {
    int status;          /* qe_sandbox_status */
    int exit_code;       /* when exited */
    int term_signal;     /* when signalled */
    double wall_s;
    bool net_isolated;   /* a network namespace was entered */
    char out_tail[512];  /* last bytes of stdout+stderr, NUL-terminated */
} qe_sandbox_result;

/* Find a python3 interpreter: $QEVAL_PYTHON, /usr/bin/python3,
 * /usr/local/bin/python3, then $PATH.  Writes the absolute path into buf.
 * Returns QE_ENOTFOUND with "python3 not found" if none is executable. */
int qe_sandbox_find_python(char *buf, size_t cap, qe_err *err);

/* Run one Python program (NUL not required; len bytes).  python is the
 * interpreter path from qe_sandbox_find_python.  Errors (QE_EEXEC,
 * QE_EIO) only for harness failures (fork, temp dir); a failing or hostile
 * program is a result, never an error. */
int qe_sandbox_run(const char *python, const qe_sandbox_opts *opts, const char *program,
                   size_t len, qe_sandbox_result *res, qe_err *err);

/* Run n programs, at most n_parallel at a time (>= 1); res[i] for
 * programs[i].  Same error contract as qe_sandbox_run. */
int qe_sandbox_run_many(const char *python, const qe_sandbox_opts *opts,
                        const char *const *programs, size_t n, int n_parallel,
                        qe_sandbox_result *res, qe_err *err);

const char *qe_sandbox_status_name(int status);

#endif /* QE_SANDBOX_H */
