// cmd_parse.h: `lwb parse` (under construction).
#pragma once
static const struct lwb_opt parse_opts[] = {
    {"file_path", LWB_OPT_STR, "FILE", NULL, "profile to parse"},
};
static const struct lwb_cmd_help parse_help = {"parse", "[options]", "Turn a profile into a per-module kernel breakdown.", NULL};
static int cmd_parse(int argc, char **argv) { (void)argc; (void)argv; lwb_fatal("parse: not implemented yet"); }
