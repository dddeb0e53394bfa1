// cmd_kernels.h: `lwb kernels`: list the kernel templates and their constants, or compile every
// template for a target without a GPU.
//
// Defines: kernels_opts, kernels_help, cmd_kernels.
//
// Does not: run kernels (test/gpu/ does, on the GPU machine).
// Tested by test/test_jit.c and test/cli.sh (`lwb kernels --compile --arch sm_90a` runs in
// ./build.sh test, so a template that does not compile fails CI).
#pragma once

static const struct lwb_opt kernels_opts[] = {
    {"list", LWB_OPT_BOOL, NULL, NULL, "print every template and the constants it takes"},
    {"compile", LWB_OPT_BOOL, NULL, NULL,
     "compile every template for representative constants (always compiles; the cache is not read)"},
    {"arch", LWB_OPT_STR, "SM", "sm_90a", "target architecture for --compile (lwb's kernels are Hopper's: sm_90a)"},
    {"family", LWB_OPT_STR, "NAME", NULL, "only this template family"},
};

static const struct lwb_cmd_help kernels_help = {
    "kernels", "(--list | --compile) [options]",
    "List lwb's CUDA kernel templates, or compile all of them through NVRTC (no GPU needed).",
    NULL};

// Every embedded template (but the prelude) must have a family in lwb_kfamilies.
static void kernels_check_table(void) {
    for (size_t i = 0; i < LWB_EMBEDDED_COUNT; i++) {
        const char *p = lwb_embedded_files[i].path;
        if (!str_starts(p, "kernels/") || !str_ends(p, ".cu.in") || !strcmp(p, "kernels/prelude.cu.in"))
            continue;
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)(strlen(p) - strlen("kernels/") - strlen(".cu.in")),
                 p + strlen("kernels/"));
        if (!kfamily_find(name)) LWB_BUG("template %s has no entry in lwb_kfamilies", p);
    }
}

static int cmd_kernels(int argc, char **argv) {
    struct lwb_args a;
    args_init(&a, "kernels", kernels_opts, (int)LWB_ARRAY_LEN(kernels_opts));
    args_parse(&a, &kernels_help, argc, argv, 0, NULL);
    args_apply_defaults(&a);
    const char *only = arg_str(&a, "family");
    if (only && !kfamily_find(only)) {
        const char *names[LWB_ARRAY_LEN(lwb_kfamilies)];
        for (size_t i = 0; i < LWB_ARRAY_LEN(lwb_kfamilies); i++) names[i] = lwb_kfamilies[i].name;
        const char *near = lwb_nearest(only, names, LWB_ARRAY_LEN(names));
        lwb_user_error("kernels: no template family '%s'%s%s%s (lwb kernels --list shows them)", only,
                       near ? "; did you mean '" : "", near ? near : "", near ? "'?" : "");
    }
    if (!arg_bool(&a, "list") && !arg_bool(&a, "compile"))
        lwb_user_error("kernels: give --list or --compile (lwb kernels --help)");
    kernels_check_table();

    if (arg_bool(&a, "list")) {
        for (size_t i = 0; i < LWB_ARRAY_LEN(lwb_kfamilies); i++) {
            const struct lwb_kfamily *f = &lwb_kfamilies[i];
            if (only && strcmp(only, f->name)) continue;
            char *names[64], *descs[64];
            int n = template_constants(template_text(f->name), names, 64, descs);
            printf("%s (kernels/%s.cu.in)\n", f->name, f->name);
            for (int k = 0; k < n; k++) {
                printf("  LWB_%-20s %s\n", names[k], descs[k]);
                free(names[k]), free(descs[k]);
            }
        }
    }
    if (arg_bool(&a, "compile")) {
        const char *arch = arg_str(&a, "arch");
        if (!str_starts(arch, "sm_") || strlen(arch) < 5 || !isdigit((unsigned char)arch[3]))
            lwb_user_error("kernels: --arch must look like sm_90a (got \"%s\")", arch);
        if (strcmp(arch, "sm_90a"))
            lwb_user_error("kernels: --arch %s: lwb's kernels are written for Hopper (wgmma, TMA) and compile for "
                           "sm_90a only; give --arch sm_90a",
                           arch);
        setenv("LWB_JIT_NO_CACHE", "1", 1);
        struct lwb_jit jit;
        jit_init(&jit, arch, false);
        struct lwb_kreq reqs[256];
        struct lwb_kreq *ptrs[256];
        int n = 0;
        for (size_t i = 0; i < LWB_ARRAY_LEN(lwb_kfamilies); i++) {
            if (only && strcmp(only, lwb_kfamilies[i].name)) continue;
            int k = lwb_kfamilies[i].samples(reqs + n, (int)LWB_ARRAY_LEN(reqs) - n);
            if (k == 0) LWB_BUG("family %s has no samples", lwb_kfamilies[i].name);
            n += k;
        }
        for (int i = 0; i < n; i++) ptrs[i] = &reqs[i];
        jit_build(&jit, ptrs, n);
        for (int i = 0; i < n; i++) {
            printf("ok  %-40s %8zu bytes\n", reqs[i].label, reqs[i].cubin_size);
            kreq_free(&reqs[i]);
        }
        printf("compiled %d kernels for %s with NVRTC %d.%d in %.2f s\n", n, arch, lwb_nvrtc.major,
               lwb_nvrtc.minor, jit.compile_s);
    }
    args_free(&a);
    return 0;
}
