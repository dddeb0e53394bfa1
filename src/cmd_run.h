// cmd_run.h: `lwb run CONFIG.yaml [flags]`.
#pragma once

static int cmd_run(int argc, char **argv) {
    struct lwb_args a;
    args_init(&a, "run", run_opts, (int)LWB_ARRAY_LEN(run_opts));
    args_parse(&a, &run_help, argc, argv, 1, "CONFIG.yaml");
    if (a.npos != 1) lwb_user_error("run: needs a config file: lwb run CONFIG.yaml [options]");
    config_load(&a, a.pos[0]);
    args_apply_defaults(&a);
    struct lwb_device dev;
    device_open(&dev, (int)arg_int(&a, "device"));
    printf("device: %s (%s, %d SMs)\n", dev.name, dev.arch, dev.sm_count);
    args_free(&a);
    return 0;
}
