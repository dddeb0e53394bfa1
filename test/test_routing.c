// test_routing.c: routing.h: the balance methods against small cases worked out with the
// reference's formulas, and their properties over many sizes (token counts per expert and per
// rank, no duplicate expert in a token, sorted rows, the activate-all minimum, ratios 0 and 1,
// odd token counts, fewer tokens than E/k), plus the one-line errors.
#include "test_common.h"

static struct lwb_routing spec(enum lwb_balance m, double ratio, int T, int k, int E, int ep, int dp,
                               int dp_rank) {
    return (struct lwb_routing){.method = m,
                                .has_ratio = true,
                                .ratio = ratio,
                                .tokens = T,
                                .top_k = k,
                                .experts = E,
                                .ep_size = ep,
                                .dp_size = dp,
                                .dp_rank = dp_rank};
}

static int32_t *select_new(const struct lwb_routing *r) {
    int32_t *out = xcalloc((size_t)(r->tokens ? r->tokens : 1) * (size_t)r->top_k, sizeof *out);
    assert_true(routing_select(r, out));
    return out;
}

static void expect_rows(const struct lwb_routing *r, const int32_t *want) {
    int32_t *got = select_new(r);
    for (int i = 0; i < r->tokens * r->top_k; i++) {
        if (got[i] != want[i])
            fprintf(stderr, "%s: token %d slot %d: got %d, wanted %d\n", balance_method_name(r->method),
                    i / r->top_k, i % r->top_k, got[i], want[i]);
        assert_int_equal(got[i], want[i]);
    }
    free(got);
}

// Every row: ids in [0, E), strictly increasing (sorted, no duplicate expert in a token).
static void check_rows(const int32_t *ids, int T, int k, int E) {
    for (int t = 0; t < T; t++)
        for (int j = 0; j < k; j++) {
            int32_t e = ids[t * k + j];
            assert_true(e >= 0 && e < E);
            if (j) assert_true(ids[t * k + j - 1] < e);
        }
}

static void test_worked_cases(void **state) {
    (void)state;
    // Values from the reference formulas (see routing.h), worked out independently.
    struct lwb_routing r = spec(LWB_BALANCE_BALANCED, 0, 5, 2, 8, 2, 2, 1);
    r.has_ratio = false; // Balanced needs no ratio
    expect_rows(&r, (const int32_t[]){1, 5, 2, 6, 3, 7, 0, 4, 1, 5});
    r = spec(LWB_BALANCE_IMBALANCED_RANKS, 0.5, 5, 2, 8, 2, 2, 1);
    expect_rows(&r, (const int32_t[]){0, 4, 1, 5, 2, 6, 3, 7, 2, 3});
    r = spec(LWB_BALANCE_IMBALANCED_EXPERTS, 0.5, 5, 3, 12, 2, 2, 1);
    expect_rows(&r, (const int32_t[]){0, 1, 6, 2, 7, 8, 3, 4, 9, 5, 10, 11, 0, 6, 7});
    r = spec(LWB_BALANCE_IMBALANCED_RANKS, 0.0, 4, 2, 8, 4, 1, 0);
    expect_rows(&r, (const int32_t[]){0, 1, 0, 1, 0, 1, 0, 1});
    r = spec(LWB_BALANCE_IMBALANCED_EXPERTS, 0.0, 7, 3, 12, 2, 1, 0);
    expect_rows(&r, (const int32_t[]){0, 1, 6, 0, 6, 7, 0, 1, 7, 1, 6, 7, 0, 1, 6, 0, 6, 7, 0, 1, 7});
    // NotModified leaves the router's choice alone.
    int32_t untouched[4] = {-7, -7, -7, -7};
    r = spec(LWB_BALANCE_NOT_MODIFIED, 0, 2, 2, 8, 1, 1, 0);
    r.has_ratio = false;
    assert_false(routing_select(&r, untouched));
    assert_int_equal(untouched[0], -7);
    assert_int_equal(untouched[3], -7);
}

static void test_num_balanced_tokens(void **state) {
    (void)state;
    // Ratio 0: the activate-all minimum is not applied.
    assert_int_equal(routing_num_balanced_tokens(128, 8, 256, 1, 0.0), 0);
    // m = min(T, ceil(E / (dp k))) = 32, plus round(96 * 0.5).
    assert_int_equal(routing_num_balanced_tokens(128, 8, 256, 1, 0.5), 80);
    assert_int_equal(routing_num_balanced_tokens(128, 8, 256, 1, 1.0), 128);
    assert_int_equal(routing_num_balanced_tokens(128, 8, 256, 4, 0.5), 8 + 60);
    // Fewer tokens than E/k: all of them are needed to reach every expert.
    assert_int_equal(routing_num_balanced_tokens(7, 8, 256, 1, 0.01), 7);
    assert_int_equal(routing_num_balanced_tokens(3, 8, 256, 1, 0.5), 3);
    // Python's round(): halves go to the even neighbour (1.5 -> 2, 2.5 -> 2); 65 * 0.3 is 19.5.
    assert_int_equal(routing_num_balanced_tokens(35, 8, 256, 1, 0.5), 34);
    assert_int_equal(routing_num_balanced_tokens(37, 8, 256, 1, 0.5), 34);
    assert_int_equal(routing_num_balanced_tokens(97, 8, 256, 1, 0.3), 52);
    assert_int_equal(routing_num_balanced_tokens(97, 8, 256, 1, 0.001), 32);
}


// Balanced over the whole DP group: each expert within 1 of every other, each rank's tokens
// spread over the EP ranks within 1 (as the reference's own self-test checks).
static void test_balanced_properties(void **state) {
    (void)state;
    const int Ts[] = {1, 2, 7, 33, 97, 128}, ks[] = {1, 2, 3, 8}, Es[] = {8, 12, 16, 64, 256},
              eps[] = {1, 2, 4, 16}, dps[] = {1, 2, 3, 4};
    int cases = 0;
    for (size_t a = 0; a < LWB_ARRAY_LEN(Ts); a++)
        for (size_t b = 0; b < LWB_ARRAY_LEN(ks); b++)
            for (size_t c = 0; c < LWB_ARRAY_LEN(Es); c++)
                for (size_t d = 0; d < LWB_ARRAY_LEN(eps); d++)
                    for (size_t e = 0; e < LWB_ARRAY_LEN(dps); e++) {
                        int T = Ts[a], k = ks[b], E = Es[c], ep = eps[d], dp = dps[e];
                        if (E % ep || k > E) continue;
                        int *per_expert = xcalloc((size_t)E, sizeof(int));
                        for (int rank = 0; rank < dp; rank++) {
                            struct lwb_routing r = spec(LWB_BALANCE_BALANCED, 0, T, k, E, ep, dp, rank);
                            int32_t *ids = select_new(&r);
                            check_rows(ids, T, k, E);
                            int per_rank[16] = {0};
                            for (int i = 0; i < T * k; i++)
                                per_expert[ids[i]]++, per_rank[ids[i] / (E / ep)]++;
                            int lo = INT_MAX, hi = 0;
                            for (int x = 0; x < ep; x++)
                                lo = LWB_MIN(lo, per_rank[x]), hi = LWB_MAX(hi, per_rank[x]);
                            assert_true(hi - lo <= 1);
                            free(ids);
                        }
                        int lo = INT_MAX, hi = 0, sum = 0;
                        for (int x = 0; x < E; x++)
                            lo = LWB_MIN(lo, per_expert[x]), hi = LWB_MAX(hi, per_expert[x]),
                            sum += per_expert[x];
                        if (hi - lo > 1)
                            fprintf(stderr, "T=%d k=%d E=%d ep=%d dp=%d: %d..%d\n", T, k, E, ep, dp, lo, hi);
                        assert_true(hi - lo <= 1);
                        assert_int_equal(sum, T * k * dp);
                        free(per_expert);
                        cases++;
                    }
    assert_true(cases > 500);
}

// The imbalanced methods: the first nb rows are the Balanced selection of nb tokens; the rest
// go to rank 0's experts (ImbalancedRanks) or to the first ceil(k/ep) experts of every rank
// (ImbalancedExperts), spread evenly over the ranks.
static void test_imbalanced_properties(void **state) {
    (void)state;
    const int Ts[] = {1, 7, 33, 97, 128}, eps[] = {1, 2, 4, 8, 16, 32}, dps[] = {1, 2, 4};
    const double ratios[] = {0.0, 0.001, 0.3, 0.5, 0.9, 1.0};
    const int E = 256, k = 8;
    for (size_t a = 0; a < LWB_ARRAY_LEN(Ts); a++)
        for (size_t d = 0; d < LWB_ARRAY_LEN(eps); d++)
            for (size_t e = 0; e < LWB_ARRAY_LEN(dps); e++)
                for (size_t f = 0; f < LWB_ARRAY_LEN(ratios); f++)
                    for (int method = LWB_BALANCE_IMBALANCED_RANKS; method <= LWB_BALANCE_IMBALANCED_EXPERTS;
                         method++) {
                        int T = Ts[a], ep = eps[d], dp = dps[e], epr = E / ep, act = LWB_CEIL_DIV(k, ep);
                        double ratio = ratios[f];
                        if (method == LWB_BALANCE_IMBALANCED_RANKS && k > epr) continue;
                        int nb = routing_num_balanced_tokens(T, k, E, dp, ratio);
                        int *per_expert = xcalloc((size_t)E, sizeof(int));
                        for (int rank = 0; rank < dp; rank++) {
                            struct lwb_routing r = spec(method, ratio, T, k, E, ep, dp, rank);
                            int32_t *ids = select_new(&r);
                            check_rows(ids, T, k, E);
                            // The balanced head is exactly Balanced for nb tokens.
                            if (nb) {
                                struct lwb_routing rb = spec(LWB_BALANCE_BALANCED, 0, nb, k, E, ep, dp, rank);
                                int32_t *want = select_new(&rb);
                                assert_memory_equal(ids, want, (size_t)nb * k * sizeof *ids);
                                free(want);
                            }
                            int imb_rank[32] = {0};
                            for (int i = 0; i < T * k; i++) {
                                per_expert[ids[i]]++;
                                if (i < nb * k) continue;
                                if (method == LWB_BALANCE_IMBALANCED_RANKS) assert_true(ids[i] < epr);
                                else assert_true(ids[i] % epr < act);
                                imb_rank[ids[i] / epr]++;
                            }
                            if (method == LWB_BALANCE_IMBALANCED_EXPERTS) {
                                int lo = INT_MAX, hi = 0;
                                for (int x = 0; x < ep; x++)
                                    lo = LWB_MIN(lo, imb_rank[x]), hi = LWB_MAX(hi, imb_rank[x]);
                                assert_true(hi - lo <= 1);
                            } else {
                                assert_int_equal(imb_rank[0], (T - nb) * k);
                            }
                            free(ids);
                        }
                        // Activate all experts: with any nonzero ratio and enough tokens in the
                        // DP group, every expert gets at least one token.
                        if (ratio > 0 && T * dp * k >= E)
                            for (int x = 0; x < E; x++) assert_true(per_expert[x] >= 1);
                        // Ratio 0 on ImbalancedRanks: nothing leaves rank 0.
                        if (ratio == 0 && method == LWB_BALANCE_IMBALANCED_RANKS)
                            for (int x = epr; x < E; x++) assert_int_equal(per_expert[x], 0);
                        free(per_expert);
                    }
    // Ratio 1 is Balanced.
    struct lwb_routing r1 = spec(LWB_BALANCE_IMBALANCED_RANKS, 1.0, 97, 8, 256, 16, 2, 1);
    struct lwb_routing rb = spec(LWB_BALANCE_BALANCED, 0, 97, 8, 256, 16, 2, 1);
    int32_t *x = select_new(&r1), *y = select_new(&rb);
    assert_memory_equal(x, y, 97 * 8 * sizeof *x);
    free(x), free(y);
}

// One rank simulating EP 16 (--scaled-from 16): ImbalancedRanks puts the hot tokens on experts
// 0..15, the first "rank" of the simulated deployment.
static void test_one_rank_scaled(void **state) {
    (void)state;
    struct lwb_routing r = spec(LWB_BALANCE_IMBALANCED_RANKS, 0.5, 128, 8, 256, 16, 1, 0);
    int32_t *ids = select_new(&r);
    int nb = routing_num_balanced_tokens(128, 8, 256, 1, 0.5);
    assert_int_equal(nb, 80);
    int hot = 0;
    for (int i = 0; i < 128 * 8; i++) hot += ids[i] < 16;
    // 80 balanced tokens put 80*8/16 = 40 slots on each simulated rank; 48 tokens go all to rank 0.
    assert_int_equal(hot, 40 + 48 * 8);
    free(ids);
}

static void select_child(void *arg) {
    int32_t out[64];
    routing_select(arg, out);
}
static void expect_error(struct lwb_routing r, const char *a, const char *b) {
    struct child_result res;
    run_child(select_child, &r, &res);
    assert_int_equal(res.status, 2);
    assert_int_equal(count_lines(res.err), 1);
    if (!strstr(res.err, a) || !strstr(res.err, b)) fprintf(stderr, "got: %s", res.err);
    assert_non_null(strstr(res.err, a));
    assert_non_null(strstr(res.err, b));
}

static void test_errors(void **state) {
    (void)state;
    struct lwb_routing r = spec(LWB_BALANCE_IMBALANCED_RANKS, 0, 4, 8, 256, 1, 1, 0);
    r.has_ratio = false;
    expect_error(r, "balance_method ImbalancedRanks needs a balance_ratio from 0 to 1",
                 "only valid with NotModified or Balanced");
    r.method = LWB_BALANCE_IMBALANCED_EXPERTS;
    expect_error(r, "balance_method ImbalancedExperts needs a balance_ratio", "--balance-ratio 0.5");
    expect_error(spec(LWB_BALANCE_IMBALANCED_EXPERTS, 1.5, 4, 8, 256, 1, 1, 0),
                 "balance_ratio 1.5 is out of range", "from 0 to 1");
    expect_error(spec(LWB_BALANCE_IMBALANCED_RANKS, 0.5, 4, 8, 256, 64, 1, 0),
                 "ImbalancedRanks cannot send all tokens to a single rank: top_k 8 is more than the 4 "
                 "experts per rank",
                 "ImbalancedExperts");
    expect_error(spec(LWB_BALANCE_BALANCED, 0, 4, 8, 256, 24, 1, 0),
                 "256 routed experts do not split evenly over an EP size of 24", "divides 256");
    expect_error(spec(LWB_BALANCE_BALANCED, 0, 4, 8, 4, 1, 1, 0), "top_k 8 is more than the 4 routed experts",
                 "");
    // Valid without a ratio.
    struct child_result res;
    r = spec(LWB_BALANCE_BALANCED, 0, 4, 8, 256, 1, 1, 0);
    r.has_ratio = false;
    run_child(select_child, &r, &res);
    assert_int_equal(res.status, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_worked_cases),
        cmocka_unit_test(test_num_balanced_tokens),
        cmocka_unit_test(test_balanced_properties),
        cmocka_unit_test(test_imbalanced_properties),
        cmocka_unit_test(test_one_rank_scaled),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
