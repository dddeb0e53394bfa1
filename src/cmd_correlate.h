// cmd_correlate.h: `lwb correlate` (under construction).
#pragma once
static const struct lwb_opt correlate_opts[] = {
    {"reference", LWB_OPT_STR, "FILE", NULL, "reference timeline JSON"},
};
static const struct lwb_cmd_help correlate_help = {"correlate", "[options]", "Align kernel timelines into an HTML report.", NULL};
static int cmd_correlate(int argc, char **argv) { (void)argc; (void)argv; lwb_fatal("correlate: not implemented yet"); }
