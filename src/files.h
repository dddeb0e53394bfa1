// files.h: the files a command reads and writes, safely.
//
// Defines:
//   inputs: enum lwb_input_kind (config, model config, timeline JSON, profile, ...: each with a
//     size limit), input_open (a regular file only: FIFOs, devices and folders are refused
//     without blocking, via O_NONBLOCK + fstat), input_read (the whole file), input_check (the
//     checks without reading). Every input is remembered, so no output may replace it.
//   outputs: a command's outputs as one transaction: output_check (before any work: an output
//     that is one of the inputs, or exists and is not a regular file, is refused), output_open /
//     output_open_fd (a new file under an unpredictable name beside the destination, made with
//     mkstemp: O_CREAT | O_EXCL, no symlink followed), output_dir (folders made only now, and
//     removed again if the command fails), outputs_commit (every output complete: synced, then
//     renamed into place), and outputs_abort (temporary files and new folders removed; also run
//     on a fatal error and on SIGINT, SIGTERM and SIGHUP).
//
// NOTES:
// - A failed command leaves no file behind: temporary names are unlinked from the fatal hook
//   and the signal handler (which only calls unlink and rmdir, async-signal-safe).
// - Outputs keep the umask's permissions (mkstemp makes them 0600 first).
//
// Does not: decide what to write (the commands do), or read profiles (trace.h opens them through
// input_check, then SQLite reads them).
// Tested by test/test_files.c and the bad-input suite (test/bad_inputs.sh).
#pragma once
#include <dirent.h>
#include <signal.h>

enum lwb_input_kind { LWB_IN_CONFIG, LWB_IN_MODEL, LWB_IN_TIMELINE, LWB_IN_PROFILE, LWB_IN_CHECKPOINT, LWB_IN_CALIB };

static const struct {
    const char *what;
    uint64_t max_bytes; // 0: no limit
} lwb_input_kinds[] = {
    [LWB_IN_CONFIG] = {"config file", 1u << 20},
    [LWB_IN_MODEL] = {"model config", 16u << 20},
    [LWB_IN_TIMELINE] = {"timeline JSON", 1ull << 30},
    [LWB_IN_PROFILE] = {"profile", 0},
    [LWB_IN_CHECKPOINT] = {"checkpoint file", 0},
    [LWB_IN_CALIB] = {"calibration file", 4ull << 30},
};

// (device, inode) of every input the command opened: outputs must not replace them.
static struct {
    dev_t *dev;
    ino_t *ino;
    size_t n, cap;
} lwb_inputs;

static void input_note(const struct stat *st) {
    for (size_t i = 0; i < lwb_inputs.n; i++)
        if (lwb_inputs.dev[i] == st->st_dev && lwb_inputs.ino[i] == st->st_ino) return;
    if (lwb_inputs.n == lwb_inputs.cap) {
        lwb_inputs.cap = lwb_inputs.cap ? 2 * lwb_inputs.cap : 16;
        lwb_inputs.dev = xrealloc(lwb_inputs.dev, lwb_inputs.cap * sizeof *lwb_inputs.dev);
        lwb_inputs.ino = xrealloc(lwb_inputs.ino, lwb_inputs.cap * sizeof *lwb_inputs.ino);
    }
    lwb_inputs.dev[lwb_inputs.n] = st->st_dev, lwb_inputs.ino[lwb_inputs.n++] = st->st_ino;
}

static const char *file_type_text(mode_t m) {
    return S_ISDIR(m) ? "a folder" : S_ISFIFO(m) ? "a FIFO" : S_ISCHR(m) ? "a character device" : S_ISBLK(m) ? "a block device"
                               : S_ISSOCK(m) ? "a socket" : S_ISLNK(m) ? "a symbolic link" : "not a regular file";
}

// Open `path` for reading as a regular file of `kind`. Returns the descriptor (blocking again),
// or -1 with one line in `err`: what the file is and what to give instead.
static int input_open(const char *path, enum lwb_input_kind kind, struct stat *st, char *err, size_t n) {
    const char *what = lwb_input_kinds[kind].what;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        snprintf(err, n, "cannot open the %s: %s", what, strerror(errno));
        return -1;
    }
    if (fstat(fd, st) != 0 || !S_ISREG(st->st_mode)) {
        snprintf(err, n, "the %s is %s; give a regular file", what, file_type_text(st->st_mode));
        close(fd);
        return -1;
    }
    uint64_t max = lwb_input_kinds[kind].max_bytes;
    if (max && (uint64_t)st->st_size > max) {
        snprintf(err, n, "the %s is %.1f MB; lwb reads at most %.0f MB of a %s", what, st->st_size / 1e6, max / 1e6,
                 what);
        close(fd);
        return -1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    input_note(st);
    return fd;
}

// The whole input (NUL-terminated), or NULL with one line in `err`.
static char *input_read(const char *path, enum lwb_input_kind kind, size_t *size, char *err, size_t n) {
    struct stat st;
    int fd = input_open(path, kind, &st, err, n);
    if (fd < 0) return NULL;
    uint64_t max = lwb_input_kinds[kind].max_bytes;
    struct lwb_str b = {0};
    char chunk[65536];
    ssize_t k;
    while ((k = read(fd, chunk, sizeof chunk)) != 0) {
        if (k < 0 && errno == EINTR) continue;
        if (k < 0 || (max && b.len + (size_t)k > max)) { // it grew while being read
            snprintf(err, n, "cannot read the %s: %s", lwb_input_kinds[kind].what, k < 0 ? strerror(errno) : "it grows");
            close(fd);
            str_free(&b);
            return NULL;
        }
        str_append(&b, chunk, (size_t)k);
    }
    close(fd);
    if (size) *size = b.len;
    return str_take(&b);
}

// The checks of input_open, for files another library opens by name (SQLite).
static bool input_check(const char *path, enum lwb_input_kind kind, char *err, size_t n) {
    struct stat st;
    int fd = input_open(path, kind, &st, err, n);
    if (fd < 0) return false;
    close(fd);
    return true;
}

// ---------------------------------------------------------------------------------------------
// Outputs

#define LWB_MAX_OUTPUTS 256

struct lwb_output {
    char *path; // final name
    char *tmp;  // being written (NULL once renamed)
    FILE *f;    // when opened as a stream
    int fd;     // when opened as a descriptor (-1 otherwise)
};

static struct {
    struct lwb_output o[LWB_MAX_OUTPUTS];
    int n;
    char *dirs[64];   // folders this command made (removed on failure, deepest last)
    int ndirs;
    // Copies of the temporary names for the signal handler (it must not touch the heap).
    char sig_tmp[LWB_MAX_OUTPUTS][PATH_MAX];
    volatile sig_atomic_t sig_n;
    bool hooked;
} lwb_outs;

static void outputs_signal(int sig) {
    for (int i = 0; i < lwb_outs.sig_n; i++)
        if (lwb_outs.sig_tmp[i][0]) unlink(lwb_outs.sig_tmp[i]);
    for (int i = lwb_outs.ndirs - 1; i >= 0; i--) rmdir(lwb_outs.dirs[i]);
    signal(sig, SIG_DFL);
    raise(sig);
}

// Remove every temporary file and every folder this command made (folders only when empty).
static void outputs_abort(void) {
    for (int i = 0; i < lwb_outs.n; i++) {
        struct lwb_output *o = &lwb_outs.o[i];
        if (o->f) fclose(o->f);
        if (o->fd >= 0) close(o->fd);
        if (o->tmp) unlink(o->tmp);
        free(o->path), free(o->tmp);
        lwb_outs.sig_tmp[i][0] = 0;
    }
    lwb_outs.n = 0, lwb_outs.sig_n = 0;
    for (int i = lwb_outs.ndirs - 1; i >= 0; i--) {
        rmdir(lwb_outs.dirs[i]);
        free(lwb_outs.dirs[i]);
    }
    lwb_outs.ndirs = 0;
}

static void outputs_hook(void) {
    if (lwb_outs.hooked) return;
    lwb_outs.hooked = true;
    lwb_proc.on_exit_cleanup = outputs_abort;
    struct sigaction sa = {.sa_handler = outputs_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

// Before any work: `path` may become an output. One line (exit 2) when it is one of the
// command's inputs, or exists and is not a regular file (a folder, a device, a FIFO, a link).
static void output_check(const char *path, const char *option) {
    struct stat st;
    if (!*path) lwb_user_error("%s: the output name is empty", option);
    if (lstat(path, &st) != 0) return; // a new file
    if (!S_ISREG(st.st_mode))
        lwb_user_error("%s: %s exists and is %s; lwb replaces regular files only, give another name", option, path,
                       file_type_text(st.st_mode));
    for (size_t i = 0; i < lwb_inputs.n; i++)
        if (lwb_inputs.dev[i] == st.st_dev && lwb_inputs.ino[i] == st.st_ino)
            lwb_user_error("%s: %s is one of this command's inputs; give another name", option, path);
}

// `a` and `b` name the same file (existing or not): the same folder (resolved) and name.
static bool paths_same(const char *a, const char *b) {
    char *pa[2] = {NULL, NULL};
    const char *in[2] = {a, b};
    for (int i = 0; i < 2; i++) {
        const char *slash = strrchr(in[i], '/');
        char *dir = slash ? xstrndup(in[i], slash == in[i] ? 1 : (size_t)(slash - in[i])) : xstrdup(".");
        char *real = realpath(dir, NULL);
        struct lwb_str s = {0};
        str_printf(&s, "%s/%s", real ? real : dir, slash ? slash + 1 : in[i]);
        pa[i] = str_take(&s);
        free(dir), free(real);
    }
    bool same = !strcmp(pa[0], pa[1]);
    free(pa[0]), free(pa[1]);
    return same;
}

// mkdir -p that remembers which folders it made (for outputs_abort).
static void output_dir(const char *dir) {
    outputs_hook();
    char *p = xstrdup(dir);
    size_t len = strlen(p);
    for (size_t i = 1; i <= len; i++) {
        if (p[i] != '/' && p[i] != 0) continue;
        char c = p[i];
        p[i] = 0;
        struct stat st;
        if (stat(p, &st) != 0) {
            if (mkdir(p, 0777) != 0 && errno != EEXIST) lwb_fatal("cannot create the folder %s: %s", p, strerror(errno));
            if (lwb_outs.ndirs < (int)LWB_ARRAY_LEN(lwb_outs.dirs)) lwb_outs.dirs[lwb_outs.ndirs++] = xstrdup(p);
        } else if (!S_ISDIR(st.st_mode)) {
            lwb_user_error("cannot create the folder %s: %s is %s", dir, p, file_type_text(st.st_mode));
        }
        p[i] = c;
    }
    free(p);
}

// A new output at `path`: a temporary file beside it (DIR/.NAME.XXXXXX, O_EXCL). Returns its
// slot; the folder must exist (output_dir).
static struct lwb_output *output_new(const char *path) {
    outputs_hook();
    if (lwb_outs.n == LWB_MAX_OUTPUTS) LWB_BUG("more than %d output files", LWB_MAX_OUTPUTS);
    output_check(path, "output");
    char *tmp;
    int fd = lwb_tmp_beside(path, &tmp);
    if (fd < 0) lwb_fatal("cannot write %s: %s", path, strerror(errno));
    struct lwb_output *o = &lwb_outs.o[lwb_outs.n];
    *o = (struct lwb_output){.path = xstrdup(path), .tmp = tmp, .fd = fd};
    snprintf(lwb_outs.sig_tmp[lwb_outs.n], PATH_MAX, "%s", o->tmp);
    lwb_outs.n++;
    lwb_outs.sig_n = lwb_outs.n;
    return o;
}

static int output_open_fd(const char *path) { return output_new(path)->fd; }

static FILE *output_open(const char *path) {
    struct lwb_output *o = output_new(path);
    o->f = fdopen(o->fd, "w");
    if (!o->f) lwb_fatal("cannot write %s: %s", path, strerror(errno));
    o->fd = -1;
    return o->f;
}

// A whole output at once.
static void output_write(const char *path, const void *data, size_t size) {
    int fd = output_open_fd(path);
    if (lwb_write_all(fd, data, size) != 0) lwb_fatal("cannot write %s: %s", path, strerror(errno));
}

// Flush, sync and close one output; one line (exit 1) on failure.
static void output_close(struct lwb_output *o) {
    if (!o->f && o->fd < 0) return;
    int fd = o->f ? fileno(o->f) : o->fd;
    bool bad = (o->f && (fflush(o->f) != 0 || ferror(o->f))) || fsync(fd) != 0;
    int e = errno;
    bad = (o->f ? fclose(o->f) : close(fd)) != 0 || bad;
    o->f = NULL, o->fd = -1;
    if (bad) lwb_fatal("cannot write %s: %s", o->path, strerror(e ? e : errno));
}

static void output_rename(struct lwb_output *o) {
    struct stat st;
    if (lstat(o->path, &st) == 0 && !S_ISREG(st.st_mode)) // appeared since the check
        lwb_user_error("%s exists and is %s; lwb replaces regular files only", o->path, file_type_text(st.st_mode));
    if (rename(o->tmp, o->path) != 0) lwb_fatal("cannot write %s: %s", o->path, strerror(errno));
    lwb_outs.sig_tmp[o - lwb_outs.o][0] = 0;
    free(o->tmp);
    o->tmp = NULL;
}

// Put one output in place now (a profile that must exist while the command goes on).
static void output_commit_one(struct lwb_output *o) {
    output_close(o);
    output_rename(o);
}

// Every output complete: flush, sync and close them all, then rename each into place. Any
// failure removes them all (one line, exit 1).
static void outputs_commit(void) {
    for (int i = 0; i < lwb_outs.n; i++)
        if (lwb_outs.o[i].tmp) output_close(&lwb_outs.o[i]);
    for (int i = 0; i < lwb_outs.n; i++)
        if (lwb_outs.o[i].tmp) output_rename(&lwb_outs.o[i]);
    for (int i = 0; i < lwb_outs.n; i++) free(lwb_outs.o[i].path);
    lwb_outs.n = 0, lwb_outs.sig_n = 0;
    for (int i = 0; i < lwb_outs.ndirs; i++) free(lwb_outs.dirs[i]);
    lwb_outs.ndirs = 0; // they hold the outputs now: kept
}
