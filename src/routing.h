// routing.h: the balance methods, which replace the router's expert selection with a
// prescribed one (computed here on the CPU, then copied to the device by the MoE layer).
//
// Defines: enum lwb_balance, balance_method_parse / balance_method_name, struct lwb_routing
// (one problem's override), routing_check (one-line errors for impossible combinations), routing_num_balanced_tokens (the
// "activate all experts" split), routing_select (the [tokens, top_k] int32 expert ids).
//
// The formulas are TensorRT-LLM's layer-wise benchmark runner's, exactly (T tokens on this rank,
// k = top_k, E experts, ep ranks of E/ep experts each):
//   Balanced           ids dp_rank*T*k ... (dp_rank+1)*T*k-1 as [T, k]; expert =
//                      (id mod ep) * (E/ep) + (id div ep) mod (E/ep): round-robin over ranks first,
//                      experts within a rank second, continued across DP ranks.
//   balanced tokens    nb = 0 when ratio == 0, else m + round((T - m) * ratio) with
//                      m = min(T, ceil(E / (dp_size * k))), the fewest tokens per rank that give
//                      every expert one token across the DP group. round() is Python's: ties go
//                      to the even integer.
//   ImbalancedRanks    first nb rows Balanced (for nb tokens); the other T-nb rows are
//                      (dp_rank*(T-nb)*k + j) mod (E/ep): all on rank 0's experts. Needs k <= E/ep.
//   ImbalancedExperts  first nb rows Balanced; the others Balanced over a*ep virtual experts
//                      (a = ceil(k/ep)), virtual v -> (v div a) * (E/ep) + v mod a: only the first a
//                      experts of every rank receive them.
// Every row is sorted ascending. ep is the run's ranks (the reference's moe_ep_size), also with
// --scaled-from, which shrinks E to the simulated deployment's experts per GPU times the ranks.
//
// Does not: route by scores (that is the MoE layer's gate), or touch the device.
// Tested by test/test_routing.c.
#pragma once

enum lwb_balance {
    LWB_BALANCE_NOT_MODIFIED = 1, // the router's own choice
    LWB_BALANCE_BALANCED = 2,
    LWB_BALANCE_IMBALANCED_RANKS = 3,
    LWB_BALANCE_IMBALANCED_EXPERTS = 4,
};

static const char *const lwb_balance_names[] = {NULL, "NotModified", "Balanced", "ImbalancedRanks",
                                                "ImbalancedExperts"};

// The method named `s` (the balance_method option's spelling), or 0 when none is.
static enum lwb_balance balance_method_parse(const char *s) {
    for (int i = 1; i < (int)LWB_ARRAY_LEN(lwb_balance_names); i++)
        if (!strcmp(s, lwb_balance_names[i])) return (enum lwb_balance)i;
    return 0;
}
static const char *balance_method_name(enum lwb_balance b) {
    if (b < 1 || b >= (int)LWB_ARRAY_LEN(lwb_balance_names)) LWB_BUG("bad balance method %d", (int)b);
    return lwb_balance_names[b];
}

struct lwb_routing {
    enum lwb_balance method;
    bool has_ratio; // balance_ratio given (false: null / none)
    double ratio;   // share of the non-mandatory tokens routed balanced, 0..1
    int tokens;     // T: tokens on this rank (batch x seq_len_q)
    int top_k;      // k
    int experts;    // E: routed experts of the layer as built
    int ep_size;    // ranks the experts are split over (the run's ranks)
    int dp_size;    // ranks with their own tokens: world size with attention DP, else 1
    int dp_rank;    // this rank's index among them (0 without attention DP)
};

// Exits with one line when the override cannot be computed for these sizes.
static void routing_check(const struct lwb_routing *r) {
    if (r->method < LWB_BALANCE_NOT_MODIFIED || r->method > LWB_BALANCE_IMBALANCED_EXPERTS)
        LWB_BUG("bad balance method %d", (int)r->method);
    if (r->tokens < 0 || r->top_k < 1 || r->experts < 1 || r->ep_size < 1 || r->dp_size < 1 ||
        r->dp_rank < 0 || r->dp_rank >= r->dp_size)
        LWB_BUG("routing sizes T=%d k=%d E=%d ep=%d dp=%d/%d", r->tokens, r->top_k, r->experts, r->ep_size,
                r->dp_rank, r->dp_size);
    if (r->method == LWB_BALANCE_NOT_MODIFIED) return;
    const char *name = balance_method_name(r->method);
    bool imbalanced = r->method != LWB_BALANCE_BALANCED;
    if (imbalanced && !r->has_ratio)
        lwb_user_error("balance_method %s needs a balance_ratio from 0 to 1 (e.g. --balance-ratio 0.5); "
                       "none (null) is only valid with NotModified or Balanced",
                       name);
    if (imbalanced && !(r->ratio >= 0 && r->ratio <= 1))
        lwb_user_error(
            "balance_ratio %g is out of range: it is the share of tokens routed balanced, from 0 to 1",
            r->ratio);
    if (r->top_k > r->experts)
        lwb_user_error("balance_method %s: top_k %d is more than the %d routed experts", name, r->top_k,
                       r->experts);
    if (r->experts % r->ep_size)
        lwb_user_error("balance_method %s: %d routed experts do not split evenly over an EP size of %d; "
                       "use a number of ranks (or --scaled-from) that divides %d",
                       name, r->experts, r->ep_size, r->experts);
    int per_rank = r->experts / r->ep_size;
    if (r->method == LWB_BALANCE_IMBALANCED_RANKS && r->top_k > per_rank)
        lwb_user_error(
            "balance_method ImbalancedRanks cannot send all tokens to a single rank: top_k %d is more "
            "than the %d experts per rank (%d experts over EP %d); use ImbalancedExperts, or fewer "
            "ranks (or a smaller --scaled-from)",
            r->top_k, per_rank, r->experts, r->ep_size);
}

// Balanced tokens per rank: none at ratio 0, else the activate-all minimum plus the ratio's share
// of the rest.
static int routing_num_balanced_tokens(int tokens, int top_k, int experts, int dp_size, double ratio) {
    if (ratio == 0.0) return 0;
    int min_tokens = LWB_MIN(tokens, LWB_CEIL_DIV(experts, dp_size * top_k));
    return min_tokens + (int)rint((double)(tokens - min_tokens) * ratio);
}

// Rows [0, T) of `out` ([T, k]) from the Balanced formula over `experts` experts.
static void routing_fill_balanced(int32_t *out, int tokens, int top_k, int experts, int ep_size,
                                  int dp_rank) {
    int64_t per_rank = experts / ep_size;
    int64_t first = (int64_t)dp_rank * tokens * top_k;
    for (int64_t i = 0; i < (int64_t)tokens * top_k; i++) {
        int64_t id = first + i;
        out[i] = (int32_t)((id % ep_size) * per_rank + (id / ep_size) % per_rank);
    }
}

static void routing_sort_rows(int32_t *out, int tokens, int top_k) {
    for (int t = 0; t < tokens; t++) {
        int32_t *row = out + (int64_t)t * top_k;
        for (int i = 1; i < top_k; i++) // k is small (8): insertion sort
            for (int j = i; j > 0 && row[j - 1] > row[j]; j--) {
                int32_t x = row[j];
                row[j] = row[j - 1], row[j - 1] = x;
            }
    }
}

// The override's expert ids into `out` ([tokens, top_k] int32, rows sorted). Returns false, with
// `out` untouched, for NotModified (the router's own choice stands).
static bool routing_select(const struct lwb_routing *r, int32_t *out) {
    routing_check(r);
    if (r->method == LWB_BALANCE_NOT_MODIFIED) return false;
    int T = r->tokens, k = r->top_k, E = r->experts, ep = r->ep_size;
    if (r->method == LWB_BALANCE_BALANCED) {
        routing_fill_balanced(out, T, k, E, ep, r->dp_rank);
    } else {
        int nb = routing_num_balanced_tokens(T, k, E, r->dp_size, r->ratio);
        int ni = T - nb;
        routing_fill_balanced(out, nb, k, E, ep, r->dp_rank);
        int32_t *imb = out + (int64_t)nb * k;
        int64_t per_rank = E / ep;
        if (r->method == LWB_BALANCE_IMBALANCED_RANKS) {
            int64_t first = (int64_t)r->dp_rank * ni * k;
            for (int64_t i = 0; i < (int64_t)ni * k; i++) imb[i] = (int32_t)((first + i) % per_rank);
        } else {
            int active = LWB_CEIL_DIV(k, ep); // hot experts per rank
            routing_fill_balanced(imb, ni, k, active * ep, ep, r->dp_rank);
            for (int64_t i = 0; i < (int64_t)ni * k; i++)
                imb[i] = (int32_t)(imb[i] / active * per_rank + imb[i] % active);
        }
    }
    routing_sort_rows(out, T, k);
    return true;
}
