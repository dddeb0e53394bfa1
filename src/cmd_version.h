// cmd_version.h: `lwb version`: lwb's version and the CUDA libraries it finds at run time.
//
// Defines: version_help, cmd_version.
//
// Does not: fail when a library is missing: it says which are missing and how to point lwb at
// them, and exits 0 (only a bad argument exits otherwise).
// Tested by test/cli.sh.
#pragma once

static const struct lwb_cmd_help version_help = {
    "version", "", "Print lwb's version and the driver, NVRTC, NCCL and CUPTI versions found.", NULL};

// The kernel module's version ("580.159.04"): the first word of the driver's version line that
// looks like one ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04 ...").
static void driver_version_from(char *text, char *out, size_t n) {
    out[0] = 0;
    char *nl = strchr(text, '\n');
    if (nl) *nl = 0;
    for (char *save = NULL, *w = strtok_r(text, " \t", &save); w; w = strtok_r(NULL, " \t", &save)) {
        int dots = 0;
        bool ok = isdigit((unsigned char)w[0]);
        for (const char *c = w; *c && ok; c++) ok = isdigit((unsigned char)*c) || (*c == '.' && ++dots);
        if (ok && dots >= 1) {
            snprintf(out, n, "%s", w);
            break;
        }
    }
}

static void kernel_driver_version(char *out, size_t n) {
    out[0] = 0;
    char *text = lwb_read_file("/proc/driver/nvidia/version", NULL);
    if (!text) return;
    driver_version_from(text, out, n);
    free(text);
}

static int cmd_version(int argc, char **argv) {
    if (argc > 0 && (!strcmp(argv[0], "--help") || !strcmp(argv[0], "-h"))) {
        opts_print_help(stdout, &version_help, NULL, 0);
        return 0;
    }
    if (argc > 0) lwb_user_error("version: unexpected argument '%s'", argv[0]);
    printf("lwb %s\n", LWB_VERSION);
    char err[2048], ver[128];
    int missing = 0;

    if (cu_try_load(err, sizeof err)) {
        int v = 0;
        lwb_cu.cuDriverGetVersion(&v);
        char kmod[64];
        kernel_driver_version(kmod, sizeof kmod);
        snprintf(ver, sizeof ver, "%s%sCUDA %d.%d", kmod, kmod[0] ? ", " : "", v / 1000, (v % 1000) / 10);
        printf("  %-8s %-28s %s\n", "driver", ver, lwb_cu.dl.path);
    } else {
        printf("  %-8s missing: %s\n", "driver", err);
        missing++;
    }
    if (nvrtc_try_load(err, sizeof err)) {
        snprintf(ver, sizeof ver, "%d.%d", lwb_nvrtc.major, lwb_nvrtc.minor);
        printf("  %-8s %-28s %s\n", "nvrtc", ver, lwb_nvrtc.dl.path);
    } else {
        printf("  %-8s missing: %s\n", "nvrtc", err);
        missing++;
    }
    if (nccl_try_load(err, sizeof err)) {
        nccl_version_text(lwb_nccl.version, ver, sizeof ver);
        printf("  %-8s %-28s %s\n", "nccl", ver, lwb_nccl.dl.path);
    } else {
        printf("  %-8s missing: %s\n", "nccl", err);
        missing++;
    }
    if (cupti_try_load(err, sizeof err)) {
        snprintf(ver, sizeof ver, "API %u", lwb_cupti.version);
        printf("  %-8s %-28s %s\n", "cupti", ver, lwb_cupti.dl.path);
    } else {
        printf("  %-8s missing: %s\n", "cupti", err);
        missing++;
    }
    if (missing)
        printf("%d of 4 libraries missing: `lwb run` needs the driver and NVRTC, NCCL only for more "
               "than one rank, CUPTI only for the built-in profiler\n",
               missing);
    return 0;
}
