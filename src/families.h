// families.h: the model families lwb builds, as tables the runner drives.
//
// Defines: lwb_families (one entry per family: DeepSeek-V3/R1 today), family_for_model (the
// family that runs a model's model_type, or a one-line error naming the ones that exist).
//
// Does not: hold any family's code (src/layers/<family>.h does).
// Tested by test/test_plan.c.
#pragma once

static const struct lwb_family lwb_families[] = {
    {"DeepSeek-V3", ds_runs, ds_create, ds_plan, ds_requests, ds_alloc, ds_init, ds_setup, ds_modules, ds_describe,
     ds_dump, ds_verify},
};

static const struct lwb_family *family_for_model(const struct lwb_model *m) {
    for (size_t i = 0; i < LWB_ARRAY_LEN(lwb_families); i++)
        if (lwb_families[i].runs(m)) return &lwb_families[i];
    lwb_user_error("model %s: model_type '%s' has no layer family in lwb yet (families: DeepSeek-V3 for deepseek_v3)",
                   m->name, m->model_type);
}
