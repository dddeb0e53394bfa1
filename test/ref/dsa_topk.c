// dsa_topk.c: the C reference of kernels/dsa_topk.cu.in.
//
// Row j of `logits` (ld floats apart) is query token t = row0 + j, query t % qlen of request
// t / qlen, with n = kv_lens[t / qlen] - (qlen - 1 - t % qlen) valid keys (entries 0 .. n - 1;
// the rest are not read). Output row t (topk int32 at out + t * topk): 0 .. n - 1 then -1 when
// n <= topk; otherwise the keys sorted by (score descending, index ascending), the first topk
// taken, written in ascending index order. Scores compare as floats: -0 equals +0, -inf is the
// smallest, no NaN.
//
// Tolerance: none. The selection is one exact set and the kernel writes it sorted, so every
// entry must match.
#pragma once
#include <stdlib.h>
#include "ref.h"

struct ref_topk_item {
    float v;
    int i;
};

static int ref_topk_order(const void *pa, const void *pb) {
    const struct ref_topk_item *a = pa, *b = pb;
    if (a->v != b->v) return a->v > b->v ? -1 : 1;
    return (a->i > b->i) - (a->i < b->i);
}
static int ref_topk_int_order(const void *pa, const void *pb) {
    const int a = *(const int *)pa, b = *(const int *)pb;
    return (a > b) - (a < b);
}

// The valid keys of token t.
static inline int ref_topk_row_keys(const int *kv_lens, int qlen, long long t) {
    return kv_lens[t / qlen] - (qlen - 1 - (int)(t % qlen));
}

// out: rows row0 .. row0 + rows - 1 are written (topk entries each, at out + t * topk).
static void ref_dsa_topk(const float *logits, long long ld, int row0, int rows, const int *kv_lens, int qlen, int topk,
                         int *out) {
    struct ref_topk_item *items = NULL;
    int cap = 0;
    for (int j = 0; j < rows; j++) {
        const long long t = (long long)row0 + j;
        const int n = ref_topk_row_keys(kv_lens, qlen, t);
        int *o = out + t * topk;
        if (n <= topk) {
            for (int e = 0; e < topk; e++) o[e] = e < n ? e : -1;
            continue;
        }
        if (n > cap) {
            free(items);
            cap = n;
            items = malloc(sizeof *items * (size_t)cap);
        }
        const float *x = logits + (long long)j * ld;
        for (int e = 0; e < n; e++) items[e] = (struct ref_topk_item){x[e], e};
        qsort(items, (size_t)n, sizeof *items, ref_topk_order);
        for (int e = 0; e < topk; e++) o[e] = items[e].i;
        qsort(o, (size_t)topk, sizeof *o, ref_topk_int_order);
    }
    free(items);
}
