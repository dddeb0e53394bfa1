// test_common.h: what every cmocka test program shares. Each test program includes lwb.c with
// LWB_NO_MAIN, so it sees every module; this adds running a function in a child process (for
// code that exits on errors) and temporary folders.
#pragma once
#define LWB_NO_MAIN
#include "../lwb.c"

#include <setjmp.h>
#include <stddef.h>
#include <stdarg.h>
#include <cmocka.h>
#include <sys/wait.h>

struct child_result {
    int status;      // exit code (128 + signal when killed)
    char out[16384]; // stdout
    char err[16384]; // stderr
};

static void read_all_fd(int fd, char *buf, size_t n) {
    size_t k = 0;
    ssize_t r;
    while ((r = read(fd, buf + k, n - 1 - k)) > 0) {
        k += (size_t)r;
        if (k + 1 >= n) break;
    }
    buf[k] = 0;
}

// Run fn(arg) in a child; its exit code and output come back. fn returning is exit 0.
static void run_child(void (*fn)(void *), void *arg, struct child_result *res) {
    int po[2], pe[2];
    assert_int_equal(pipe(po), 0);
    assert_int_equal(pipe(pe), 0);
    fflush(stdout), fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(po[1], 1), dup2(pe[1], 2);
        close(po[0]), close(pe[0]);
        fn(arg);
        fflush(stdout), fflush(stderr);
        _exit(0);
    }
    close(po[1]), close(pe[1]);
    // Outputs are small; read stderr after stdout is closed.
    read_all_fd(po[0], res->out, sizeof res->out);
    read_all_fd(pe[0], res->err, sizeof res->err);
    close(po[0]), close(pe[0]);
    int st;
    waitpid(pid, &st, 0);
    res->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

// got must equal the golden file's text; the first differing byte is named.
static void assert_same_text(const char *got, const char *golden_path) {
    char *want = lwb_read_file(golden_path, NULL);
    assert_non_null(want);
    if (strcmp(got, want)) {
        size_t i = 0;
        while (got[i] && got[i] == want[i]) i++;
        fail_msg("differs from %s at byte %zu:\n--- got:\n%s\n--- wanted:\n%s", golden_path, i, got, want);
    }
    free(want);
}

// Count lines in s.
static int count_lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

// A fresh temporary folder (removed by the caller with rm_rf).
static char *make_tmpdir(void) {
    char tmpl[] = "/tmp/lwb-test-XXXXXX";
    char *d = mkdtemp(tmpl);
    assert_non_null(d);
    return xstrdup(d);
}
static void rm_rf(const char *dir) {
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}
