// test_dist.c: ranks without a GPU: every launcher's variables, MASTER_ADDR/MASTER_PORT, the
// mapping of a rank's share (attention DP or TP, experts, --scaled-from, the MoE exchange), the
// plan of every rank and its balance selection, and the TCP rendezvous between processes on
// 127.0.0.1: success, a rank that never arrives (an error within the timeout, naming it), ranks
// that disagree on the plan (refused, naming the key and the ranks), and a rank that dies after
// the rendezvous (the others abort, naming it).
#include "test_common.h"

// --- launcher variables ---------------------------------------------------------------------

struct env_table {
    const char *const *kv; // name, value, name, value, ..., NULL
};
static const char *env_lookup(const char *name, void *ctx) {
    const struct env_table *t = ctx;
    for (const char *const *p = t->kv; *p; p += 2)
        if (!strcmp(p[0], name)) return p[1];
    return NULL;
}
static struct lwb_rank_env env_of(const char *const *kv) {
    struct env_table t = {kv};
    struct lwb_rank_env e;
    dist_rank_from_env(env_lookup, &t, &e);
    return e;
}

static void test_rank_env(void **state) {
    (void)state;
    struct lwb_rank_env e = env_of((const char *[]){NULL});
    assert_false(e.found);
    assert_int_equal(e.world_size, 1);
    e = env_of((const char *[]){"OMPI_COMM_WORLD_RANK", "3", "OMPI_COMM_WORLD_SIZE", "8",
                                "OMPI_COMM_WORLD_LOCAL_RANK", "1", NULL});
    assert_true(e.found);
    assert_int_equal(e.rank, 3), assert_int_equal(e.world_size, 8), assert_int_equal(e.local_rank, 1);
    assert_string_equal(e.source, "OMPI_COMM_WORLD_*");
    // MPICH / Intel MPI (hydra).
    e = env_of((const char *[]){"PMI_RANK", "2", "PMI_SIZE", "4", "MPI_LOCALRANKID", "2", NULL});
    assert_int_equal(e.rank, 2), assert_int_equal(e.world_size, 4), assert_int_equal(e.local_rank, 2);
    // PMIx exports no size: Slurm's (srun --mpi=pmix) gives it, and the local rank.
    e = env_of((const char *[]){"PMIX_RANK", "5", "SLURM_NTASKS", "16", "SLURM_LOCALID", "5", "SLURM_PROCID", "5",
                                NULL});
    assert_int_equal(e.rank, 5), assert_int_equal(e.world_size, 16), assert_int_equal(e.local_rank, 5);
    assert_string_equal(e.source, "PMIX_RANK");
    e = env_of((const char *[]){"SLURM_PROCID", "7", "SLURM_NTASKS", "8", "SLURM_LOCALID", "3", NULL});
    assert_int_equal(e.rank, 7), assert_int_equal(e.world_size, 8), assert_int_equal(e.local_rank, 3);
    // The reference's run.sh exports these; no local rank given: -1 (lwb spreads ranks over GPUs).
    e = env_of((const char *[]){"RANK", "1", "WORLD_SIZE", "2", NULL});
    assert_int_equal(e.rank, 1), assert_int_equal(e.world_size, 2), assert_int_equal(e.local_rank, -1);
    // mpirun inside a Slurm allocation: OpenMPI's variables win over the allocation's.
    e = env_of((const char *[]){"SLURM_PROCID", "0", "SLURM_NTASKS", "1", "OMPI_COMM_WORLD_RANK", "1",
                                "OMPI_COMM_WORLD_SIZE", "2", NULL});
    assert_int_equal(e.rank, 1), assert_int_equal(e.world_size, 2);
    assert_int_equal(e.local_rank, -1);
}

static const char *const *bad_env;
static void bad_env_child(void *arg) {
    (void)arg;
    env_of(bad_env);
}
static void expect_env_error(const char *const *kv, const char *text) {
    struct child_result r;
    bad_env = kv;
    run_child(bad_env_child, NULL, &r);
    if (r.status != 2 || !strstr(r.err, text)) fprintf(stderr, "exit %d: %s", r.status, r.err);
    assert_int_equal(r.status, 2);
    assert_int_equal(count_lines(r.err), 1);
    assert_non_null(strstr(r.err, text));
}

static void test_rank_env_errors(void **state) {
    (void)state;
    expect_env_error((const char *[]){"RANK", "2", "WORLD_SIZE", "2", NULL}, "RANK is 2 but WORLD_SIZE is 2");
    expect_env_error((const char *[]){"RANK", "x1", "WORLD_SIZE", "2", NULL}, "RANK is \"x1\"");
    expect_env_error((const char *[]){"RANK", "0", NULL}, "RANK is set but no world size is (WORLD_SIZE)");
    expect_env_error((const char *[]){"PMIX_RANK", "0", NULL}, "PMIX_RANK is set but no world size");
    expect_env_error((const char *[]){"OMPI_COMM_WORLD_RANK", "-1", "OMPI_COMM_WORLD_SIZE", "2", NULL},
                     "OMPI_COMM_WORLD_RANK is \"-1\"");
}

static void test_master_env(void **state) {
    (void)state;
    struct env_table none = {(const char *[]){NULL}};
    struct lwb_master m = dist_master_from_env(env_lookup, &none);
    assert_string_equal(m.addr, "127.0.0.1");
    assert_int_equal(m.port, 29500);
    struct env_table set = {(const char *[]){"MASTER_ADDR", "node17", "MASTER_PORT", "31337", NULL}};
    m = dist_master_from_env(env_lookup, &set);
    assert_string_equal(m.addr, "node17");
    assert_int_equal(m.port, 31337);
}

// --- the mapping ------------------------------------------------------------------------------

static void test_shard(void **state) {
    (void)state;
    struct lwb_shard s = shard_make(3, 8, true, true, 0, 8, 0);
    assert_int_equal(s.dp_rank, 3), assert_int_equal(s.dp_size, 8);
    assert_int_equal(s.tp_rank, 0), assert_int_equal(s.tp_size, 1);
    assert_int_equal(s.ep_rank, 3), assert_int_equal(s.ep_size, 8);
    assert_int_equal(s.moe_comm, LWB_MOE_COMM_ALLGATHER); // EP 8 <= top-8
    s = shard_make(3, 16, true, true, 0, 8, 0);
    assert_int_equal(s.moe_comm, LWB_MOE_COMM_ALLTOALL);  // EP 16 > top-8
    s = shard_make(0, 4, true, true, 16, 8, 0);
    assert_int_equal(s.moe_comm, LWB_MOE_COMM_ALLTOALL);  // the simulated EP 16 decides
    s = shard_make(0, 4, true, true, 0, 8, LWB_MOE_COMM_ALLTOALL);
    assert_int_equal(s.moe_comm, LWB_MOE_COMM_ALLTOALL);  // forced
    s = shard_make(2, 4, true, false, 0, 8, 0);
    assert_int_equal(s.dp_rank, 0), assert_int_equal(s.dp_size, 1);
    assert_int_equal(s.tp_rank, 2), assert_int_equal(s.tp_size, 4);
    assert_int_equal(s.moe_comm, LWB_MOE_COMM_NONE);      // tokens replicated: all-reduce
    s = shard_make(0, 1, true, true, 0, 8, 0);
    assert_int_equal(s.moe_comm, LWB_MOE_COMM_ALLGATHER); // --np 1: a communicator of one rank
    s = shard_make(0, 1, false, true, 0, 8, 0);
    assert_int_equal(s.moe_comm, LWB_MOE_COMM_NONE);      // a plain one-GPU run
}

// Parse a command line (after "run") into rank `rank` of `world`'s plan. argv must outlive it.
static void plan_rank(struct run_plan *p, struct lwb_args *a, int argc, char **argv, int rank, int world) {
    args_init(a, "run", run_opts, (int)LWB_ARRAY_LEN(run_opts));
    args_parse(a, &run_help, argc, argv, 1, "CONFIG.yaml");
    config_load(a, a->pos[0]);
    args_apply_defaults(a);
    run_plan_build(p, a, a->pos[0], rank, world, true);
}

static void test_plan_of_ranks(void **state) {
    (void)state;
    struct run_plan p;
    struct lwb_args a;
    // DEP 4: every rank its 128 requests and all heads, 64 experts; Balanced continues the
    // global sequence over the DP ranks (dp_rank r, dp_size 4, EP 4).
    char *dp[] = {"configs/config_gen.yaml"};
    for (int r = 0; r < 4; r++) {
        plan_rank(&p, &a, 1, dp, r, 4);
        struct ds_family *f = p.f;
        assert_int_equal(f->d.heads, 128);
        assert_int_equal(f->d.experts, 256), assert_int_equal(f->d.experts_local, 64), assert_int_equal(f->d.e0, 64 * r);
        assert_int_equal(p.routing[0].dp_rank, r), assert_int_equal(p.routing[0].dp_size, 4);
        assert_int_equal(p.routing[0].ep_size, 4);
        int32_t *ids = xmalloc(sizeof(int32_t) * 128 * 8), *want = xmalloc(sizeof(int32_t) * 128 * 8);
        assert_true(routing_select(&p.routing[0], ids));
        struct lwb_routing ref = {LWB_BALANCE_BALANCED, false, 0, 128, 8, 256, 4, 4, r};
        routing_select(&ref, want);
        assert_memory_equal(ids, want, sizeof(int32_t) * 128 * 8);
        // First token of rank r: ids r*128*8 .. +7, (id mod 4) * 64 + (id div 4) mod 64, sorted.
        int32_t first[8];
        for (int i = 0; i < 8; i++) {
            int id = r * 128 * 8 + i;
            first[i] = (id % 4) * 64 + (id / 4) % 64;
        }
        for (int i = 1; i < 8; i++)
            for (int j = i; j > 0 && first[j - 1] > first[j]; j--) {
                int32_t t = first[j];
                first[j] = first[j - 1], first[j - 1] = t;
            }
        assert_memory_equal(ids, first, sizeof first);
        free(ids), free(want);
        // The expected rows per rank of Balanced routing: 4 x 128 x 8 / 4 each, every expert active.
        struct lwb_device dev = dry_device(gpuspec_find("H200"));
        struct lwb_mem m;
        run_plan_memory(&p, &dev, &m);
        double rows[4];
        struct ds_route_stats st = {.rows_of_rank = rows};
        ds_route_expect(f, 0, &st);
        for (int j = 0; j < 4; j++) assert_true(rows[j] == 1024);
        assert_true(st.active == 64);
    }
    // TEP 4 with --scaled-from 16: 256 / 16 * 4 = 64 experts (16 per rank), 128 / 16 * 4 = 32
    // heads (8 per rank); shared experts split 4 ways; routing dp 0 / 1.
    char *tp[] = {"configs/config_gen.yaml", "--no-enable-attention-dp", "--scaled-from", "16"};
    plan_rank(&p, &a, 4, tp, 2, 4);
    struct ds_family *f = p.f;
    assert_int_equal(f->d.heads, 8), assert_int_equal(f->d.heads_total, 32), assert_int_equal(f->d.head0, 16);
    assert_int_equal(f->d.experts, 64), assert_int_equal(f->d.experts_local, 16), assert_int_equal(f->d.e0, 32);
    assert_int_equal(f->d.shared_inter, 512), assert_int_equal(f->d.shared0, 1024);
    assert_int_equal(p.routing[0].dp_rank, 0), assert_int_equal(p.routing[0].dp_size, 1);
    assert_int_equal(p.shard.moe_comm, LWB_MOE_COMM_NONE);
    // Memory per rank: a quarter of the experts of a whole-layer run (the same layer, 64 experts).
    struct lwb_device dev = dry_device(gpuspec_find("H200"));
    struct lwb_mem m;
    run_plan_memory(&p, &dev, &m);
    assert_true(m.bytes[MEM_WEIGHTS] < (size_t)16 * 3 * 7168 * 2048 * 2 + ((size_t)600 << 20));
    // The TP all-reduces sit outside the module ranges; each module's link bytes are the ring's.
    struct lwb_modules ml = {0};
    p.fam->modules(p.f, 0, 0, false, &ml);
    int ar = 0;
    for (int i = 0; i < ml.n; i++)
        if (ml.m[i].label && !strcmp(ml.m[i].label, "all-reduce")) {
            assert_null(ml.m[i].name);
            assert_true(fabs(ml.m[i].cost.sent - 2.0 * 3 / 4 * 128 * 7168 * 2) < 1);
            ar++;
        }
    assert_int_equal(ar, 2);
    free(ml.m);
}

// --- the rendezvous ---------------------------------------------------------------------------

static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    socklen_t len = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &len);
    close(fd);
    return ntohs(sa.sin_port);
}

enum { RV_OK, RV_ABSENT, RV_DIE_AFTER, RV_WAIT_AFTER };
struct rv_case {
    int rank, world, port, mode, plan_batch;
};

static void rv_child(void *arg) {
    struct rv_case *c = arg;
    lwb_proc.rank = c->rank, lwb_proc.world_size = c->world;
    if (c->mode == RV_ABSENT) {
        sleep(2);
        return;
    }
    struct lwb_dist d = {.rank = c->rank, .world_size = c->world, .local_rank = c->rank, .fd = -1,
                         .master = {"127.0.0.1", c->port}, .rendezvous_timeout_s = 1.5, .comm_timeout_s = 5};
    json_t *plan = json_pack("{s:s, s:{s:i}}", "lwb_version", LWB_VERSION, "args", "batch_size", c->plan_batch);
    dist_join(&d, plan, true);
    json_decref(plan);
    printf("rank %d joined\n", c->rank);
    fflush(stdout);
    if (c->mode == RV_DIE_AFTER) {
        usleep(200000);
        _exit(7); // no goodbye: the others must abort
    }
    if (c->mode == RV_WAIT_AFTER) {
        dist_activity(&d, "a test's wait", 0);
        sleep(10); // the watchdog ends this process first
        return;
    }
    dist_finish(&d);
}

struct spawned {
    pid_t pid;
    int out, err;
};
static struct spawned spawn(void (*fn)(void *), void *arg) {
    int po[2], pe[2];
    assert_int_equal(pipe(po), 0);
    assert_int_equal(pipe(pe), 0);
    fflush(stdout), fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(po[1], 1), dup2(pe[1], 2);
        close(po[0]), close(pe[0]);
        fn(arg);
        fflush(stdout), fflush(stderr);
        _exit(0);
    }
    close(po[1]), close(pe[1]);
    return (struct spawned){pid, po[0], pe[0]};
}
static void reap(struct spawned s, struct child_result *r) {
    read_all_fd(s.out, r->out, sizeof r->out);
    read_all_fd(s.err, r->err, sizeof r->err);
    close(s.out), close(s.err);
    int st;
    waitpid(s.pid, &st, 0);
    r->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

// Start `world` ranks with the given modes and plans; wait for them all.
static void rv_run(int world, const int *modes, const int *batch, struct child_result *res, double *seconds) {
    int port = free_port();
    struct rv_case *c = xcalloc((size_t)world, sizeof *c);
    struct spawned *s = xcalloc((size_t)world, sizeof *s);
    double t0 = lwb_now();
    for (int r = 0; r < world; r++) {
        c[r] = (struct rv_case){r, world, port, modes[r], batch[r]};
        s[r] = spawn(rv_child, &c[r]);
    }
    for (int r = 0; r < world; r++) reap(s[r], &res[r]);
    *seconds = lwb_now() - t0;
    free(c), free(s);
}

static void test_rendezvous(void **state) {
    (void)state;
    struct child_result res[3];
    double secs;
    // Three ranks with the same plan meet and part.
    rv_run(3, (const int[]){RV_OK, RV_OK, RV_OK}, (const int[]){4, 4, 4}, res, &secs);
    for (int r = 0; r < 3; r++) {
        if (res[r].status) fprintf(stderr, "rank %d: %d %s", r, res[r].status, res[r].err);
        assert_int_equal(res[r].status, 0);
        assert_non_null(strstr(res[r].out, "joined"));
    }
    // Rank 2 never arrives: ranks 0 and 1 fail within the timeout (1.5 s), naming rank 2.
    rv_run(3, (const int[]){RV_OK, RV_OK, RV_ABSENT}, (const int[]){4, 4, 4}, res, &secs);
    for (int r = 0; r < 2; r++) {
        assert_int_equal(res[r].status, 2);
        assert_int_equal(count_lines(res[r].err), 1);
        assert_non_null(strstr(res[r].err, "rank 2 did not join within 2 s (--rendezvous-timeout)"));
        assert_non_null(strstr(res[r].err, "127.0.0.1:"));
    }
    // Rank 0 never arrives: the others cannot reach it, and say where they looked.
    rv_run(2, (const int[]){RV_ABSENT, RV_OK}, (const int[]){4, 4}, res, &secs);
    assert_int_equal(res[1].status, 2);
    assert_non_null(strstr(res[1].err, "rank 1 cannot reach 127.0.0.1:"));
    // Plans differ: every rank is refused, naming the key and the ranks.
    rv_run(3, (const int[]){RV_OK, RV_OK, RV_OK}, (const int[]){4, 4, 8}, res, &secs);
    for (int r = 0; r < 3; r++) {
        assert_int_equal(res[r].status, 2);
        assert_int_equal(count_lines(res[r].err), 1);
        if (!strstr(res[r].err, "ranks 0 and 2")) fprintf(stderr, "rank %d: %s", r, res[r].err);
        assert_non_null(strstr(res[r].err, "ranks 0 and 2 disagree on the plan: 'batch_size' is 4 on rank 0 and 8 on rank 2"));
        assert_null(strstr(res[r].out, "joined"));
    }
    // A rank dies after the rendezvous: the others abort at once, naming it.
    rv_run(3, (const int[]){RV_WAIT_AFTER, RV_DIE_AFTER, RV_WAIT_AFTER}, (const int[]){4, 4, 4}, res, &secs);
    assert_int_equal(res[1].status, 7);
    for (int r = 0; r < 3; r += 2) {
        if (res[r].status != 1) fprintf(stderr, "rank %d: %d %s", r, res[r].status, res[r].err);
        assert_int_equal(res[r].status, 1);
        if (!strstr(res[r].err, "rank 1 (host")) fprintf(stderr, "rank %d: %s", r, res[r].err);
        assert_non_null(strstr(res[r].err, "rank 1 (host"));
        assert_non_null(strstr(res[r].err, "ended without finishing"));
        assert_non_null(strstr(res[r].err, "a test's wait"));
    }
    assert_true(secs < 5); // not the 10 s the survivors would have slept
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rank_env),   cmocka_unit_test(test_rank_env_errors), cmocka_unit_test(test_master_env),
        cmocka_unit_test(test_shard),      cmocka_unit_test(test_plan_of_ranks),   cmocka_unit_test(test_rendezvous),
    };
    return cmocka_run_group_tests_name("dist", tests, NULL, NULL);
}
