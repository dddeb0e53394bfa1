// kernels.h: the table of kernel families, for `lwb kernels` and the compile check.
//
// Defines: struct lwb_kfamily (a template's name and how to make representative requests for
// it), lwb_kfamilies.
//
// Does not: pick constants for a real run (each layer does, through its family's
// <family>_choose_config).
// Tested by test/test_jit.c, which compiles every family's samples for sm_90a and checks that
// every embedded template has a family here.
#pragma once

struct lwb_kfamily {
    const char *name;                                // kernels/<name>.cu.in
    int (*samples)(struct lwb_kreq *out, int max);   // representative requests
};

static const struct lwb_kfamily lwb_kfamilies[] = {
    {"rmsnorm", rmsnorm_samples},
    {"gemm", gemm_samples},
    {"gemm_fp8", gemm_fp8_samples},
    {"quant", quant_samples},
    {"init", init_samples},
    {"mla_decode", mla_decode_samples},
    {"mla_prefill", mla_prefill_samples},
    {"mla_rope", mla_rope_samples},
    {"moe_route", moe_route_samples},
    {"dsa_index", dsa_index_samples},
    {"dsa_topk", dsa_topk_samples},
    {"mamba", mamba_samples},
    {"gdn", gdn_samples},
    {"gqa", gqa_samples},
};

static const struct lwb_kfamily *kfamily_find(const char *name) {
    for (size_t i = 0; i < LWB_ARRAY_LEN(lwb_kfamilies); i++)
        if (!strcmp(lwb_kfamilies[i].name, name)) return &lwb_kfamilies[i];
    return NULL;
}
