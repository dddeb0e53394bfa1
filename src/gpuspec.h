// gpuspec.h: datasheet figures of the GPUs lwb knows, for floors (--dry-run names one; a run
// measures bandwidth at start and takes the peak from here).
//
// Defines: struct lwb_gpuspec, gpuspec_find (by name as given to --gpu, or as the driver names
// the device), gpuspec_for_device (a known entry, or one derived from the device's clock and SM
// count).
//
// Does not: measure anything.
// Tested by test/test_plan.c.
#pragma once

struct lwb_gpuspec {
    const char *key;       // --gpu spelling ("H100")
    const char *match;     // substring of the driver's device name ("H100")
    const char *name;      // for reports
    double bf16_tflops;    // dense bf16 tensor-core peak
    double hbm_tbs;        // memory bandwidth, TB/s
    double mem_gib;        // device memory
    int sm_count;
    double link_gbs;       // NVLink bandwidth per direction per GPU, GB/s (0: unknown)
};

static const struct lwb_gpuspec lwb_gpuspecs[] = {
    // NVLink 4: 18 links of 25 GB/s per direction.
    {"H100", "H100", "NVIDIA H100 SXM (80 GB HBM3)", 989.4, 3.35, 79.6, 132, 450},
    {"H200", "H200", "NVIDIA H200 SXM (141 GB HBM3e)", 989.4, 4.8, 139.8, 132, 450},
};

static const struct lwb_gpuspec *gpuspec_find(const char *name) {
    for (size_t i = 0; i < LWB_ARRAY_LEN(lwb_gpuspecs); i++)
        if (!strcmp(lwb_gpuspecs[i].key, name) || strstr(name, lwb_gpuspecs[i].match)) return &lwb_gpuspecs[i];
    return NULL;
}

// The device's entry, or one derived for an unknown Hopper-class part (4096 dense bf16 FLOP per
// SM per clock) with the datasheet bandwidth unknown (0: the measured one is used).
static struct lwb_gpuspec gpuspec_for_device(const struct lwb_device *d) {
    const struct lwb_gpuspec *k = gpuspec_find(d->name);
    if (k) return *k;
    struct lwb_gpuspec g = {"?", "", d->name, 4096.0 * d->sm_count * d->sm_clock_khz * 1e3 / 1e12, 0,
                            d->total_mem / 1073741824.0, d->sm_count, 0};
    return g;
}
