// dl.h: finding and opening a shared library at run time, and resolving its symbols into a
// table of function pointers.
//
// Defines: struct lwb_dl (an opened library: handle, the path that worked, what was tried),
// dl_open (override variable first, then versioned sonames, then CUDA_HOME and the usual CUDA
// folders), dl_sym.
//
// Does not: decide which symbols a library must have (each library's header does), or keep the
// handle anywhere but in the caller's table.
// Tested by test/test_libs.c (a missing library and a missing symbol give one clear line).
#pragma once
#include <dlfcn.h>
#include <link.h>

struct lwb_dl {
    void *handle;        // NULL when nothing could be opened
    char path[PATH_MAX]; // the file that was opened
    char tried[1024];    // what was tried, for the message when nothing worked
    char error[PATH_MAX + 512]; // the loader's last message
};

// Open the first that works of: $env_var (a file path), then each of `sonames` through the
// dynamic loader's search path, then each soname under $CUDA_HOME and the standard CUDA folders.
static bool dl_open(struct lwb_dl *dl, const char *env_var, const char *const *sonames) {
    *dl = (struct lwb_dl){0};
    const char *override = getenv(env_var);
    struct lwb_str tried = {0};
    if (override && *override) {
        dl->handle = dlopen(override, RTLD_NOW | RTLD_GLOBAL);
        if (dl->handle) {
            snprintf(dl->path, sizeof dl->path, "%s", override);
            return true;
        }
        snprintf(dl->error, sizeof dl->error, "%s", dlerror());
        snprintf(dl->tried, sizeof dl->tried, "%s (from %s)", override, env_var);
        return false; // an explicit path that fails is not silently replaced by another library
    }
    const char *cuda_home = getenv("CUDA_HOME");
    const char *dirs[] = {"", cuda_home, "/usr/local/cuda/lib64", "/usr/local/cuda/lib",
                          "/usr/local/cuda/extras/CUPTI/lib64", "/usr/lib/x86_64-linux-gnu"};
    for (size_t d = 0; d < LWB_ARRAY_LEN(dirs); d++) {
        if (!dirs[d]) continue;
        for (const char *const *s = sonames; *s; s++) {
            char path[PATH_MAX];
            if (!*dirs[d])
                snprintf(path, sizeof path, "%s", *s);
            else if (dirs[d] == cuda_home)
                snprintf(path, sizeof path, "%s/lib64/%s", cuda_home, *s);
            else
                snprintf(path, sizeof path, "%s/%s", dirs[d], *s);
            if (*dirs[d] && access(path, F_OK) != 0) continue;
            dl->handle = dlopen(path, RTLD_NOW | RTLD_GLOBAL);
            if (dl->handle) {
                // Report the file the loader actually mapped, not just the soname.
                snprintf(dl->path, sizeof dl->path, "%s", path);
                struct link_map *lm = NULL;
                if (!*dirs[d] && dlinfo(dl->handle, RTLD_DI_LINKMAP, &lm) == 0 && lm && lm->l_name &&
                    *lm->l_name)
                    snprintf(dl->path, sizeof dl->path, "%s", lm->l_name);
                str_free(&tried);
                return true;
            }
            if (tried.len < 700) str_printf(&tried, "%s%s", tried.len ? ", " : "", path);
            snprintf(dl->error, sizeof dl->error, "%s", dlerror());
        }
    }
    snprintf(dl->tried, sizeof dl->tried, "%s", tried.s ? tried.s : "");
    str_free(&tried);
    return false;
}

// Resolve `name`; NULL (with a message in dl->error) when the library lacks it.
static void *dl_sym(struct lwb_dl *dl, const char *name) {
    dlerror();
    void *p = dlsym(dl->handle, name);
    if (!p) snprintf(dl->error, sizeof dl->error, "%s has no symbol %s", dl->path, name);
    return p;
}

#define LWB_XSTR_(x) #x
#define LWB_XSTR(x) LWB_XSTR_(x)
