/*
 * sandbox.c: contained execution of untrusted Python (see sandbox.h for
 * the layers and their fallbacks).
 *
 * Process layout of one run:
 *   harness ── fork ── keeper (own process group; unshares PID + NET
 *                         namespaces, then forks)
 *                         └── runner = PID 1 of the new PID namespace:
 *                             rlimits, uid drop, Landlock, exec python3
 * When the runner dies, the kernel kills everything else in its PID
 * namespace, so a fork bomb that escapes the process group still dies.
 * The keeper relays the runner's exit status (or signal) to the harness.
 */
#include "sandbox.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/landlock.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SB_NOBODY 65534

/* Prepended to every program unless opts->no_guard.  It runs before any
 * untrusted line and replaces dangerous entry points by a function that
 * raises PermissionError. */
static const char sb_guard[] =
    "def _qe_guard():\n"
    "    import os, shutil, socket, subprocess, builtins\n"
    "    def deny(*a, **k):\n"
    "        raise PermissionError('qeval sandbox: operation not permitted')\n"
    "    for n in ('system', 'fork', 'forkpty', 'execv', 'execve', 'execl', 'execle',\n"
    "              'execlp', 'execlpe', 'execvp', 'execvpe', 'spawnl', 'spawnle', 'spawnv',\n"
    "              'spawnve', 'spawnvp', 'spawnvpe', 'popen', 'posix_spawn', 'posix_spawnp',\n"
    "              'kill', 'killpg', 'setsid', 'setpgid', 'chdir', 'fchdir', 'chroot',\n"
    "              'remove', 'unlink', 'rmdir', 'removedirs', 'rename', 'renames',\n"
    "              'replace', 'truncate', 'chmod', 'fchmod', 'chown', 'fchown', 'lchown',\n"
    "              'setuid', 'putenv', 'link', 'symlink'):\n"
    "        if hasattr(os, n):\n"
    "            setattr(os, n, deny)\n"
    "    subprocess.Popen = deny\n"
    "    subprocess.run = deny\n"
    "    subprocess.call = deny\n"
    "    subprocess.check_output = deny\n"
    "    socket.socket = deny\n"
    "    socket.create_connection = deny\n"
    "    shutil.rmtree = deny\n"
    "    shutil.move = deny\n"
    "_qe_guard()\n"
    "del _qe_guard\n";

const char *qe_sandbox_status_name(int status)
{
    switch (status) {
    case QE_SB_PASS: return "pass";
    case QE_SB_FAIL: return "fail";
    case QE_SB_TIMEOUT: return "timeout";
    case QE_SB_CRASH: return "crash";
    default: return "?";
    }
}

static bool is_exec(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode) && access(p, X_OK) == 0;
}

int qe_sandbox_find_python(char *buf, size_t cap, qe_err *err)
{
    const char *env = getenv("QEVAL_PYTHON");
    if (env && *env) {
        if (is_exec(env) && qe_strlcpy(buf, env, cap) < cap)
            return 0;
        return qe_err_set(err, QE_ENOTFOUND, "python3 not found: QEVAL_PYTHON='%s' is not an "
                          "executable file", env);
    }
    /* System interpreters first: they are readable by the unprivileged
     * uid the runner drops to (a pyenv shim under /root is not). */
    static const char *fixed[] = {"/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3"};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        if (is_exec(fixed[i]) && qe_strlcpy(buf, fixed[i], cap) < cap)
            return 0;
    const char *path = getenv("PATH");
    if (path) {
        char dir[1024];
        while (*path) {
            size_t n = strcspn(path, ":");
            if (n > 0 && n < sizeof dir - 16) {
                memcpy(dir, path, n);
                memcpy(dir + n, "/python3", 9);
                if (is_exec(dir) && qe_strlcpy(buf, dir, cap) < cap)
                    return 0;
            }
            path += n;
            if (*path == ':')
                path++;
        }
    }
    return qe_err_set(err, QE_ENOTFOUND, "python3 not found (looked at $QEVAL_PYTHON, "
                      "/usr/bin/python3, /usr/local/bin/python3 and $PATH)");
}

/* ---- runner side (after fork; only async-signal-safe-ish calls) ---- */

static void sb_landlock(const char *dir)
{
#ifdef LANDLOCK_CREATE_RULESET_VERSION
    long abi = syscall(SYS_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);
    if (abi < 1)
        return;
    uint64_t wr = LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_REMOVE_DIR |
                  LANDLOCK_ACCESS_FS_REMOVE_FILE | LANDLOCK_ACCESS_FS_MAKE_CHAR |
                  LANDLOCK_ACCESS_FS_MAKE_DIR | LANDLOCK_ACCESS_FS_MAKE_REG |
                  LANDLOCK_ACCESS_FS_MAKE_SOCK | LANDLOCK_ACCESS_FS_MAKE_FIFO |
                  LANDLOCK_ACCESS_FS_MAKE_BLOCK | LANDLOCK_ACCESS_FS_MAKE_SYM;
    /* Our own copy of the ruleset attribute: older uapi headers lack the
     * net field (ABI 4); the kernel takes the size we pass. */
    struct {
        uint64_t handled_access_fs;
        uint64_t handled_access_net;
    } ra = {wr, 0};
    size_t ra_size = sizeof(uint64_t);
    if (abi >= 4) {
        ra.handled_access_net = 3; /* LANDLOCK_ACCESS_NET_BIND_TCP | _CONNECT_TCP */
        ra_size = sizeof ra;
    }
    int rs = (int)syscall(SYS_landlock_create_ruleset, &ra, ra_size, 0);
    if (rs < 0)
        return;
    struct landlock_path_beneath_attr pb = {.allowed_access = wr};
    pb.parent_fd = open(dir, O_PATH | O_CLOEXEC);
    if (pb.parent_fd >= 0) {
        syscall(SYS_landlock_add_rule, rs, LANDLOCK_RULE_PATH_BENEATH, &pb, 0);
        close(pb.parent_fd);
    }
    /* /dev/null stays writable (python and tests print to it). */
    struct landlock_path_beneath_attr dn = {.allowed_access = LANDLOCK_ACCESS_FS_WRITE_FILE};
    dn.parent_fd = open("/dev/null", O_PATH | O_CLOEXEC);
    if (dn.parent_fd >= 0) {
        syscall(SYS_landlock_add_rule, rs, LANDLOCK_RULE_PATH_BENEATH, &dn, 0);
        close(dn.parent_fd);
    }
    syscall(SYS_landlock_restrict_self, rs, 0);
    close(rs);
#else
    (void)dir;
#endif
}

static void sb_rlimit(int res, uint64_t v)
{
    struct rlimit rl = {.rlim_cur = (rlim_t)v, .rlim_max = (rlim_t)v};
    setrlimit(res, &rl);
}

static void __attribute__((noreturn))
sb_runner(const char *python, const qe_sandbox_opts *o, const char *dir, int prog_fd, int out_fd)
{
    sb_rlimit(RLIMIT_CPU, (uint64_t)o->cpu_s);
    sb_rlimit(RLIMIT_AS, o->mem_nbytes);
    sb_rlimit(RLIMIT_FSIZE, o->fsize_nbytes);
    sb_rlimit(RLIMIT_NOFILE, (uint64_t)o->max_files);
    sb_rlimit(RLIMIT_CORE, 0);
    if (geteuid() == 0) {
        /* root is exempt from RLIMIT_NPROC: become nobody first */
        if (setgroups(0, NULL) != 0 || setgid(SB_NOBODY) != 0 || setuid(SB_NOBODY) != 0)
            _exit(126);
    }
    sb_rlimit(RLIMIT_NPROC, (uint64_t)o->max_procs);
    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    sb_landlock(dir);
    if (chdir(dir) != 0)
        _exit(126);
    if (dup2(prog_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(out_fd, 2) < 0)
        _exit(126);
    for (int fd = 3; fd < 1024; fd++)
        close(fd);
    char home[600], tmp[600];
    snprintf(home, sizeof home, "HOME=%s", dir);
    snprintf(tmp, sizeof tmp, "TMPDIR=%s", dir);
    char *envp[] = {"PATH=/usr/bin:/bin", home, tmp, "LANG=C.UTF-8",
                    "PYTHONDONTWRITEBYTECODE=1", "PYTHONHASHSEED=0", "OMP_NUM_THREADS=1", NULL};
    char *argv[] = {"python3", "-I", "-B", "-", NULL};
    execve(python, argv, envp);
    _exit(127);
}

static void __attribute__((noreturn))
sb_keeper(const char *python, const qe_sandbox_opts *o, const char *dir, int prog_fd, int out_fd,
          int status_fd)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    /* 1 byte back to the harness: did we get a network namespace? */
    char netns = 0;
    if (unshare(CLONE_NEWPID | CLONE_NEWNET) == 0)
        netns = 1;
    else if (unshare(CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET) == 0)
        netns = 1;
    else if (unshare(CLONE_NEWNET) == 0)
        netns = 1;
    if (write(status_fd, &netns, 1) != 1) { /* harness gone: nothing to report */ }
    close(status_fd);
    pid_t r = fork();
    if (r < 0)
        _exit(125);
    if (r == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
        sb_runner(python, o, dir, prog_fd, out_fd);
    }
    int st;
    while (waitpid(r, &st, 0) < 0 && errno == EINTR) {
    }
    if (WIFSIGNALED(st)) {
        int sig = WTERMSIG(st);
        signal(sig, SIG_DFL);
        sb_rlimit(RLIMIT_CORE, 0);
        kill(getpid(), sig);
        _exit(124);
    }
    _exit(WIFEXITED(st) ? WEXITSTATUS(st) : 125);
}

/* ---- harness side ---- */

typedef struct sb_job {
    pid_t pid;          /* keeper pid = its process group id */
    int out_fd;         /* unlinked temp file with stdout+stderr */
    int status_fd;      /* read end of the keeper's 1-byte report */
    char dir[256];      /* cwd of the runner, removed after */
    double t0;
} sb_job;

static void sb_opts_defaults(qe_sandbox_opts *o, const qe_sandbox_opts *in)
{
    memset(o, 0, sizeof *o);
    if (in)
        *o = *in;
    if (o->timeout_s <= 0)
        o->timeout_s = 10;
    if (o->cpu_s <= 0)
        o->cpu_s = (int)o->timeout_s + 1;
    if (!o->mem_nbytes)
        o->mem_nbytes = 1ull << 30;
    if (!o->fsize_nbytes)
        o->fsize_nbytes = 16ull << 20;
    if (o->max_procs <= 0)
        o->max_procs = 64;
    if (o->max_files <= 0)
        o->max_files = 64;
}


/* Remove the runner's directory tree (it may hold files the program wrote). */
static void sb_remove_tree(const char *path, int depth)
{
    struct stat st;
    if (depth > 32 || lstat(path, &st) != 0)
        return;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        if (d) {
            struct dirent *e;
            while ((e = readdir(d))) {
                if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                    continue;
                char sub[1024];
                if ((size_t)snprintf(sub, sizeof sub, "%s/%s", path, e->d_name) < sizeof sub)
                    sb_remove_tree(sub, depth + 1);
            }
            closedir(d);
        }
        rmdir(path);
    } else {
        unlink(path);
    }
}

static int sb_start(const char *python, const qe_sandbox_opts *o, const char *program,
                    size_t len, sb_job *job, qe_err *err)
{
    memset(job, 0, sizeof *job);
    job->pid = -1;
    job->out_fd = job->status_fd = -1;
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp || strlen(tmp) > 150)
        tmp = "/tmp";
    snprintf(job->dir, sizeof job->dir, "%s/qeval-sb-XXXXXX", tmp);
    if (!mkdtemp(job->dir))
        return qe_err_set(err, QE_EIO, "sandbox: mkdtemp in %s: %s", tmp, strerror(errno));
    if (geteuid() == 0 && chown(job->dir, SB_NOBODY, SB_NOBODY) != 0) {
        /* the runner then cannot write its cwd; tests will fail, not escape */
    }
    char pt[300];
    snprintf(pt, sizeof pt, "%s/../qeval-prog-XXXXXX", job->dir);
    int prog_fd = mkstemp(pt);
    if (prog_fd < 0) {
        qe_err_set(err, QE_EIO, "sandbox: temp file: %s", strerror(errno));
        goto fail;
    }
    unlink(pt);
    snprintf(pt, sizeof pt, "%s/../qeval-out-XXXXXX", job->dir);
    job->out_fd = mkstemp(pt);
    if (job->out_fd < 0) {
        qe_err_set(err, QE_EIO, "sandbox: temp file: %s", strerror(errno));
        close(prog_fd);
        goto fail;
    }
    unlink(pt);
    /* the runner (uid nobody) writes through the inherited fd: no chmod needed */
    bool ok = true;
    if (!o->no_guard)
        ok = write(prog_fd, sb_guard, sizeof sb_guard - 1) == (ssize_t)(sizeof sb_guard - 1);
    for (size_t off = 0; ok && off < len;) {
        ssize_t w = write(prog_fd, program + off, len - off);
        if (w <= 0) {
            ok = errno == EINTR;
            continue;
        }
        off += (size_t)w;
    }
    if (!ok || lseek(prog_fd, 0, SEEK_SET) != 0) {
        qe_err_set(err, QE_EIO, "sandbox: writing the program: %s", strerror(errno));
        close(prog_fd);
        goto fail;
    }
    int sp[2];
    if (pipe2(sp, O_CLOEXEC) != 0) {
        qe_err_set(err, QE_EIO, "sandbox: pipe: %s", strerror(errno));
        close(prog_fd);
        goto fail;
    }
    fflush(NULL);
    job->t0 = qe_now();
    pid_t pid = fork();
    if (pid < 0) {
        qe_err_set(err, QE_EEXEC, "sandbox: fork: %s", strerror(errno));
        close(prog_fd);
        close(sp[0]);
        close(sp[1]);
        goto fail;
    }
    if (pid == 0) {
        setpgid(0, 0);
        close(sp[0]);
        sb_keeper(python, o, job->dir, prog_fd, job->out_fd, sp[1]);
    }
    setpgid(pid, pid); /* also here: no race with a kill before the child runs */
    close(prog_fd);
    close(sp[1]);
    job->pid = pid;
    job->status_fd = sp[0];
    return 0;
fail:
    if (job->out_fd >= 0)
        close(job->out_fd);
    job->out_fd = -1;
    rmdir(job->dir);
    return err ? err->code : QE_EIO;
}

/* Poll one job: returns 1 when finished (res filled, job cleaned up). */
static int sb_poll(sb_job *job, const qe_sandbox_opts *o, qe_sandbox_result *res)
{
    int st;
    pid_t r = waitpid(job->pid, &st, WNOHANG);
    double now = qe_now();
    bool timed_out = false;
    if (r == 0) {
        if (now - job->t0 < o->timeout_s)
            return 0;
        kill(-job->pid, SIGKILL);
        while (waitpid(job->pid, &st, 0) < 0 && errno == EINTR) {
        }
        timed_out = true;
    }
    /* whatever is left of the group dies too */
    kill(-job->pid, SIGKILL);
    memset(res, 0, sizeof *res);
    res->wall_s = now - job->t0;
    char netns = 0;
    if (read(job->status_fd, &netns, 1) == 1)
        res->net_isolated = netns != 0;
    close(job->status_fd);
    if (timed_out) {
        res->status = QE_SB_TIMEOUT;
        res->term_signal = SIGKILL;
    } else if (WIFEXITED(st)) {
        res->exit_code = WEXITSTATUS(st);
        res->status = res->exit_code == 0 ? QE_SB_PASS : QE_SB_FAIL;
    } else if (WIFSIGNALED(st)) {
        res->term_signal = WTERMSIG(st);
        res->status = res->term_signal == SIGXCPU ? QE_SB_TIMEOUT : QE_SB_CRASH;
    } else {
        res->status = QE_SB_CRASH;
    }
    off_t end = lseek(job->out_fd, 0, SEEK_END);
    if (end > 0) {
        off_t from = end > (off_t)sizeof res->out_tail - 1 ? end - (off_t)sizeof res->out_tail + 1 : 0;
        ssize_t n = pread(job->out_fd, res->out_tail, (size_t)(end - from), from);
        res->out_tail[n > 0 ? n : 0] = '\0';
    }
    close(job->out_fd);
    sb_remove_tree(job->dir, 0);
    return 1;
}

int qe_sandbox_run_many(const char *python, const qe_sandbox_opts *opts,
                        const char *const *programs, size_t n, int n_parallel,
                        qe_sandbox_result *res, qe_err *err)
{
    qe_sandbox_opts o;
    sb_opts_defaults(&o, opts);
    if (n_parallel < 1)
        n_parallel = 1;
    sb_job *jobs = calloc((size_t)n_parallel, sizeof *jobs);
    size_t *which = calloc((size_t)n_parallel, sizeof *which);
    if (!jobs || !which) {
        free(jobs);
        free(which);
        return qe_err_set(err, QE_ENOMEM, "sandbox: out of memory");
    }
    for (int k = 0; k < n_parallel; k++)
        jobs[k].pid = -1;
    size_t next = 0, done = 0;
    int rc = 0;
    while (done < n) {
        for (int k = 0; k < n_parallel && rc == 0; k++) {
            if (jobs[k].pid < 0 && next < n) {
                rc = sb_start(python, &o, programs[next], strlen(programs[next]), &jobs[k], err);
                which[k] = next++;
            }
        }
        bool any = false;
        for (int k = 0; k < n_parallel; k++) {
            if (jobs[k].pid < 0)
                continue;
            any = true;
            if (sb_poll(&jobs[k], &o, &res[which[k]])) {
                jobs[k].pid = -1;
                done++;
            }
        }
        if (rc != 0 && !any)
            break;
        if (!any && next >= n)
            break;
        struct timespec ts = {0, 2 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    free(jobs);
    free(which);
    return rc;
}

int qe_sandbox_run(const char *python, const qe_sandbox_opts *opts, const char *program,
                   size_t len, qe_sandbox_result *res, qe_err *err)
{
    qe_sandbox_opts o;
    sb_opts_defaults(&o, opts);
    sb_job job;
    int rc = sb_start(python, &o, program, len, &job, err);
    if (rc)
        return rc;
    while (!sb_poll(&job, &o, res)) {
        struct timespec ts = {0, 2 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return 0;
}
