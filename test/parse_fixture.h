// parse_fixture.h: what the parse tests share: the layer-wise profile built from
// test/data/layerwise.sql (optionally broken on purpose by extra SQL), running `lwb parse` and
// `lwb correlate` in a child, and file helpers.
#pragma once
#include "test_common.h"

#define NSYS_DIR "test/data/nsys/"
#define NSYS_MATMUL NSYS_DIR "nvfuser_matmul_nsys2024.6.sqlite"
#define NSYS_XENT NSYS_DIR "nvfuser_xent_nsys2025.1.sqlite"
#define NSYS_PIPIT NSYS_DIR "pipit_saxpy_mpi_nsys2022.2.sqlite"

// Run `sql` on the database at `path` (created when missing).
static void sql_run(const char *path, const char *sql) {
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) fail_msg("SQL failed on %s: %s", path, err);
    sqlite3_close(db);
}

// dir/name built from layerwise.sql, then `extra` (may be NULL). Returns the path (malloc'd).
static char *fixture_build(const char *dir, const char *name, const char *extra) {
    char *path = lwb_path_join(dir, name);
    unlink(path);
    char *sql = lwb_read_file("test/data/layerwise.sql", NULL);
    assert_non_null(sql);
    sql_run(path, sql);
    free(sql);
    if (extra) sql_run(path, extra);
    return path;
}

// A copy of a file (fixtures are read-only where they come from).
static char *file_copy(const char *src, const char *dir, const char *name) {
    size_t n;
    char *data = lwb_read_file(src, &n);
    assert_non_null(data);
    char *dst = lwb_path_join(dir, name);
    assert_int_equal(lwb_write_file_atomic(dst, data, n), 0);
    free(data);
    return dst;
}

static char *file_text(const char *dir, const char *name) {
    char *p = lwb_path_join(dir, name);
    char *s = lwb_read_file(p, NULL);
    free(p);
    return s;
}

struct cmd_case {
    int (*fn)(int, char **);
    const char *chdir_to; // run there (NULL: here)
    int argc;
    char *argv[16];
};
static void cmd_child(void *arg) {
    struct cmd_case *c = arg;
    if (c->chdir_to && chdir(c->chdir_to) != 0) _exit(99);
    exit(c->fn(c->argc, c->argv));
}

// Run a command (cmd_parse, cmd_correlate) with the given arguments (NULL-terminated) in a
// child; result in *r.
static void run_cmd(struct child_result *r, int (*fn)(int, char **), const char *dir, ...) {
    struct cmd_case c = {fn, dir, 0, {0}};
    va_list ap;
    va_start(ap, dir);
    for (char *s; (s = va_arg(ap, char *)) && c.argc < 15;) c.argv[c.argc++] = s;
    va_end(ap);
    run_child(cmd_child, &c, r);
}

// The number of files in dir whose name contains `part`.
static int files_with(const char *dir, const char *part) {
    char cmd[PATH_MAX + 64];
    snprintf(cmd, sizeof cmd, "ls '%s' | grep -c -- '%s'", dir, part);
    FILE *p = popen(cmd, "r");
    int n = 0;
    if (p && fscanf(p, "%d", &n) != 1) n = 0;
    if (p) pclose(p);
    return n;
}
