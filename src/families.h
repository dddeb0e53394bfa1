// families.h: the model families lwb builds, as tables the runner drives.
//
// Defines: lwb_families (one entry per family: DeepSeek-V3/R1/V3.2, Nemotron-H, Qwen3-Next), family_for_model (the
// family that runs a model's model_type, or a one-line error naming the ones that exist).
//
// Does not: hold any family's code (src/layers/<family>.h does).
// Tested by test/test_plan.c.
#pragma once

static const struct lwb_family lwb_families[] = {
    {.name = "DeepSeek-V3", .runs = ds_runs, .create = ds_create, .plan = ds_plan, .requests = ds_requests,
     .alloc = ds_alloc, .init = ds_init, .setup = ds_setup, .modules = ds_modules, .describe = ds_describe,
     .check_checkpoint = ds_check_checkpoint, .dump = ds_dump, .verify = ds_verify, .route_layer = ds_route_layer,
     .route_stage = ds_route_stage, .route_replay = ds_route_replay, .route_read = ds_route_read},
    {.name = "Nemotron-H", .runs = nh_runs, .create = nh_create, .plan = nh_plan, .requests = nh_requests,
     .alloc = nh_alloc, .init = nh_init, .setup = nh_setup, .modules = nh_modules, .describe = nh_describe,
     .check_checkpoint = nh_check_checkpoint, .dump = nh_dump, .verify = nh_verify, .route_layer = nh_route_layer,
     .route_stage = nh_route_stage, .route_replay = nh_route_replay, .route_read = nh_route_read},
    {.name = "Qwen3-Next", .runs = qn_runs, .create = qn_create, .plan = qn_plan, .requests = qn_requests,
     .alloc = qn_alloc, .init = qn_init, .setup = qn_setup, .modules = qn_modules, .describe = qn_describe,
     .check_checkpoint = qn_check_checkpoint, .dump = qn_dump, .verify = nh_verify, .route_layer = qn_route_layer,
     .route_stage = nh_route_stage, .route_replay = nh_route_replay, .route_read = qn_route_read},
};

static const struct lwb_family *family_for_model(const struct lwb_model *m) {
    for (size_t i = 0; i < LWB_ARRAY_LEN(lwb_families); i++)
        if (lwb_families[i].runs(m)) return &lwb_families[i];
    lwb_user_error("model %s: model_type '%s' has no layer family in lwb yet (families: DeepSeek-V3 for deepseek_v3 "
                   "and deepseek_v32, Nemotron-H for nemotron_h, Qwen3-Next for qwen3_next)",
                   m->name, m->model_type);
}
