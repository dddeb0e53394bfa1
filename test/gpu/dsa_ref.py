# dsa_ref.py: a reference for DeepSeek-V3.2's sparse-attention indexer, for check_layer.py.
#
# Written from the semantics lwb implements (DeepSeek's V3.2 inference code after its November
# 2025 RoPE fix). Per token, with x the layer's normalised input and qr = q_a_layernorm(q_a_proj(x)),
# MLA's q latent:
#   q = wq_b(qr) -> (H_I, D_I) bf16,  k = LayerNorm(wk(x)) (fp32, eps 1e-6, weight and bias) -> bf16,
#   w = x @ weights_proj^T (bf16 inputs, fp32 result);
#   RoPE on the first qk_rope_head_dim dims of each q head and of k, NOT interleaved (pairs i and
#   i + rope/2), MLA's YaRN frequencies, no amplitude factor; fp32 math, bf16 result;
#   the normalised Sylvester Hadamard transform of every 128-vector (fp32 math, bf16 result);
#   e4m3 of every 128-vector: scale s = 2^ceil(log2(max(amax, 1e-4) / 448)), values e4m3(x / s).
# Score of query t against key s of its request (positions 0..pos(t)):
#   I[t, s] = k_scale[s] * sum_h W[t, h] * ReLU(q8[t, h] . k8[s]),  W = w * q_scale / sqrt(H_I) / sqrt(D_I),
# and t keeps its index_topk highest-scoring keys (all of them when there are no more than that;
# ties toward the lower position).
# With an fp8 dump, wq_b and wk are lwb's fp8 GEMMs (fp8_gemm below: e4m3 activations quantised per
# token and 128 columns by check_layer.py, times the e4m3 weights with their 128 x 128 block scales),
# which check_layer.py hands in as `proj`.
#
# Also: transformers' own DeepseekV32Indexer (bf16, no Hadamard, no fp8) on the same weights and
# inputs, for information.
import inspect
import math

import torch
import torch.nn.functional as F

BF16 = torch.bfloat16
E4M3_MAX = 448.0


def to_e4m3(x):
    """fp32 values within +-448 rounded to e4m3 (nearest even), as fp32."""
    return x.to(torch.float8_e4m3fn).float()


def e4m3_from_bits(u8):
    """uint8 tensor of e4m3 bytes as fp32 values."""
    return u8.view(torch.float8_e4m3fn).float()


def e4m3_bits(v):
    """fp32 values on the e4m3 grid as their uint8 bytes."""
    return v.to(torch.float8_e4m3fn).view(torch.uint8)


def e4m3_ordinal(v):
    """Signed position of fp32 values on the e4m3 grid, extended past 448 (subnormal steps of 2^-9
    below 2^-6, then 8 steps per binade), so that neighbouring e4m3 values are 1 apart."""
    a = v.abs()
    m, e = torch.frexp(a)  # a = m * 2^e, m in [0.5, 1)
    normal = 8.0 * (e - 1 + 7).float() + (2.0 * m - 1.0) * 8.0
    return torch.sign(v) * torch.where(a < 2.0 ** -6, a * 2.0 ** 9, normal)


def e4m3_block(v):
    """Every 128-vector of v (..., 128) in e4m3 with a power-of-two scale: (values as fp32, scales (...))."""
    v = v.float()
    amax = v.abs().amax(dim=-1).clamp(min=1e-4)
    m, e = torch.frexp(amax / E4M3_MAX)  # ceil(log2(r)) is e, or e - 1 when r is a power of two
    s = torch.ldexp(torch.ones_like(amax), torch.where(m == 0.5, e - 1, e))
    return to_e4m3((v / s[..., None]).clamp(-E4M3_MAX, E4M3_MAX)), s


def hadamard_signs(n, device):
    """The n x n Sylvester Hadamard matrix (entries +-1, symmetric), fp32."""
    i = torch.arange(n, device=device)
    both = i[:, None] & i[None, :]
    parity = torch.zeros_like(both)
    for b in range(max(n - 1, 1).bit_length()):
        parity ^= (both >> b) & 1
    return (1 - 2 * parity).float()


def hadamard(v, signs):
    """v (..., n) times the normalised Hadamard matrix: the +-1 sums in fp32, then 1/sqrt(n); bf16."""
    n = signs.shape[0]
    return ((v.float() @ signs) * (1.0 / math.sqrt(n))).to(BF16)


def rope_parameters(conf):
    """(base, scaling dict or None) from a config dict, in either of transformers' spellings."""
    rs = conf.get("rope_scaling") or conf.get("rope_parameters") or {}
    base = float(conf.get("rope_theta") or rs.get("rope_theta") or 10000.0)
    kind = rs.get("type") or rs.get("rope_type") or "default"
    return base, (rs if kind == "yarn" else None)


def rope_inv_freq(conf):
    """MLA's RoPE inverse frequencies, qk_rope_head_dim / 2 of them, as Python floats (double), with
    YaRN as transformers computes it: the correction range of beta_fast / beta_slow rotations over
    original_max_position_embeddings, floored / ceiled and clamped to [0, dim - 1], blends the
    frequencies 1 / base^(2i / dim) (kept below the range) with the same divided by the factor
    (above it) along a linear ramp."""
    dim = conf["qk_rope_head_dim"]
    base, ys = rope_parameters(conf)
    extrap = [1.0 / base ** (2.0 * i / dim) for i in range(dim // 2)]
    if ys is None:
        return extrap
    orig = ys.get("original_max_position_embeddings") or conf["max_position_embeddings"]
    factor = float(ys.get("factor") or conf["max_position_embeddings"] / orig)

    def corr_dim(rotations):
        return dim * math.log(orig / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low = max(math.floor(corr_dim(ys.get("beta_fast") or 32)), 0)
    high = min(math.ceil(corr_dim(ys.get("beta_slow") or 1)), dim - 1)
    if low == high:
        high += 0.001
    out = []
    for i, f in enumerate(extrap):
        keep = 1.0 - min(max((i - low) / (high - low), 0.0), 1.0)  # the extrapolated (unscaled) share
        out.append(f / factor * (1.0 - keep) + f * keep)
    return out


def rope_cos_sin(pos, inv_freq):
    """cos and sin (pos.shape..., len(inv_freq)) fp32 of the angles pos * inv_freq, taken in double
    (as lwb builds its tables)."""
    f = torch.tensor(inv_freq, dtype=torch.float64, device=pos.device)
    a = pos.double()[..., None] * f
    return a.cos().float(), a.sin().float()


def rope_half(v, cos, sin, rope):
    """Non-interleaved RoPE on v[..., :rope] (pairs i, i + rope/2) in fp32, the rest untouched; bf16.
    cos / sin broadcast against v[..., :rope/2]."""
    h = rope // 2
    out = v.float().clone()
    x1, x2 = out[..., :h].clone(), out[..., h:rope].clone()
    out[..., :h] = x1 * cos - x2 * sin
    out[..., h:rope] = x1 * sin + x2 * cos
    return out.to(BF16)


def fp8_gemm(a8, a_scale, w8, w_scale):
    """lwb's fp8 GEMM (kernels/gemm_fp8.cu.in), C = A W^T, on e4m3 operands given as fp32 values:
    a8 (T, K) with a_scale (T, K / 128) (an activation quantised per token and 128 columns), w8 (N, K)
    with w_scale (ceil(N / 128), K / 128) (a weight and its weight_scale_inv). As lwb: each 128-deep K
    block's products (exact in fp32) summed in fp32, promoted into the fp32 result as
    (block sum * a_scale) * w_scale, block after block; the result rounded to bf16. Not mimicked: the
    Hopper tensor cores' reduced-precision sum inside a block and split-K's order across blocks.
    (TF32 matmuls would not change this: e4m3 values are exact in TF32.)"""
    T, Kd = a8.shape
    N = w8.shape[0]
    assert Kd % 128 == 0 and w8.shape[1] == Kd, (a8.shape, w8.shape)
    sb = w_scale.float().repeat_interleave(128, 0)[:N]  # (N, K / 128): row n's block scales
    sa = a_scale.float()
    acc = torch.zeros(T, N, dtype=torch.float32, device=a8.device)
    for kb in range(Kd // 128):
        cols = slice(128 * kb, 128 * (kb + 1))
        p = a8[:, cols].float() @ w8[:, cols].float().t()
        acc += p * sa[:, kb:kb + 1] * sb[None, :, kb]
    return acc.to(BF16)


def indexer_reference(conf, weights, x, qr, pos, proj=None):
    """lwb's indexer on T new tokens: x (T, hidden) and qr (T, q_lora) bf16, pos (T) their absolute
    positions; weights: wq_b, wk (fp32 dequantised or bf16), k_norm.weight, k_norm.bias, weights_proj.
    proj(name, inp): the product of inp (qr or x) with the projection `name` ("wq_b.weight" or
    "wk.weight") as lwb runs it, (T, out) bf16 (check_layer.py passes fp8_gemm on the quantised inputs
    for an fp8 dump); None: bf16 GEMM arithmetic (fp32 products of the bf16 input and weights[name],
    rounded to bf16).
    Returns dict: q8 (T, H_I, D_I) and k8 (T, D_I) e4m3 values as fp32, q_scale (T, H_I), k_scale (T),
    W (T, H_I) the folded head weights, all fp32."""
    HI, DI, rope = conf["index_n_heads"], conf["index_head_dim"], conf["qk_rope_head_dim"]
    T = x.shape[0]

    if proj is None:
        def proj(name, inp):
            return (inp.float() @ weights[name].float().t()).to(BF16)

    q = proj("wq_b.weight", qr).view(T, HI, DI)
    k = proj("wk.weight", x)
    k = F.layer_norm(k.float(), (DI,), weights["k_norm.weight"].float(), weights["k_norm.bias"].float(),
                     eps=1e-6).to(BF16)
    w = x.float() @ weights["weights_proj.weight"].float().t()
    cos, sin = rope_cos_sin(pos, rope_inv_freq(conf))
    q = rope_half(q, cos[:, None, :], sin[:, None, :], rope)
    k = rope_half(k, cos, sin, rope)
    signs = hadamard_signs(DI, x.device)
    q8, q_scale = e4m3_block(hadamard(q, signs))
    k8, k_scale = e4m3_block(hadamard(k, signs))
    W = w * q_scale / math.sqrt(HI) / math.sqrt(DI)
    return {"q8": q8, "q_scale": q_scale, "k8": k8, "k_scale": k_scale, "W": W}


def scores(q8, W, keys8, key_scale):
    """I (R, N) fp32 of R query rows (q8 (R, H_I, D_I), W (R, H_I)) against N keys (keys8 (N, D_I),
    key_scale (N)). The e4m3 products are exact in fp32; sums in fp32."""
    R, HI, DI = q8.shape
    logits = (q8.reshape(R * HI, DI) @ keys8.t()).view(R, HI, -1)
    return (logits.relu_() * W[:, :, None]).sum(dim=1) * key_scale[None, :]


def row_chunk(heads, keys, budget=1 << 30):
    """Query rows per pass so that a (rows, heads, keys) fp32 tensor stays within `budget` bytes."""
    return max(1, budget // (heads * max(keys, 1) * 4))


def key_positions(P, pos):
    """(B, P + Q) request-local positions of the key slots: the P cached tokens, then the new ones."""
    B = pos.shape[0]
    past = torch.arange(P, device=pos.device, dtype=pos.dtype)[None, :].expand(B, P)
    return torch.cat([past, pos], dim=1)


def selected_keys(topk, kpos):
    """Key slots listed in topk (B, Q, K) (positions, -1 padding) as a (B, Q, N) bool over the
    slots of kpos (B, N)."""
    B, Q, _ = topk.shape
    top = int(kpos.max()) + 1  # listed positions past every key land in the dropped column
    hit = torch.zeros(B, Q, top + 1, dtype=torch.bool, device=topk.device)
    idx = torch.where((topk >= 0) & (topk < top), topk.long(), torch.full_like(topk.long(), top))
    hit.scatter_(2, idx, True)
    return hit[:, :, :top].gather(2, kpos[:, None, :].long().expand(B, Q, kpos.shape[1]))


def check_selection(topk, kpos, pos, K):
    """lwb's rows: every listed position a visible key (0..pos(t)), none twice, min(pos(t) + 1, K)
    of them. Returns the number of rows that break this."""
    B, Q, _ = topk.shape
    sel = selected_keys(topk, kpos)
    vis = kpos[:, None, :] <= pos[:, :, None]
    listed = (topk >= 0).sum(dim=-1)
    want = torch.clamp(vis.sum(dim=-1), max=K)
    bad = (sel & ~vis).any(dim=-1) | (sel.sum(dim=-1) != listed) | (listed != want)
    return int(bad.sum())


def compare_keys(ref, k_bits, k_scale):
    """Reference new-token keys (e4m3 values, scales) against lwb's cached bytes and scales.
    Returns (fraction of bytes equal, fraction more than one e4m3 step apart, largest scale ratio);
    steps are counted on the reference's scale, so a scale one power of two off is not a byte flip
    of every value; a NaN byte or scale counts as far apart. Also measures one reference against
    another: k_bits = e4m3_bits(other["k8"]), k_scale = other["k_scale"]."""
    ours8 = e4m3_from_bits(k_bits)
    ours_s = k_scale.float()
    ref8, ref_s = ref["k8"], ref["k_scale"]
    equal = (e4m3_bits(ref8) == k_bits).float().mean().item()
    on_ref = ours8 * (ours_s / ref_s)[:, None]
    steps = (e4m3_ordinal(on_ref) - e4m3_ordinal(ref8)).abs()
    far = ((steps > 1) | ~torch.isfinite(steps)).float().mean().item()
    ratio = torch.maximum(ours_s / ref_s, ref_s / ours_s)
    ratio = ratio.max().item() if bool(torch.isfinite(ratio).all()) else float("inf")
    return equal, far, ratio


class TopkStats:
    """Agreement of a selection with the reference's, row by row."""

    def __init__(self):
        self.rows = self.selected = self.exact_missed = 0
        self.agree = self.agree_nt = self.agree_sel = self.agree_nt_sel = 0.0

    def add(self, got, ref, near, needs):
        """got, ref, near (R, N) bool: the selection, the reference's, near ties; needs (R) bool:
        rows with more visible keys than index_topk."""
        inter = (got & ref).sum(dim=-1).float()
        a = inter / ref.sum(dim=-1).clamp(min=1).float()
        # Outside near ties, counted against the union so that a key picked far below the cut
        # (not only one missed far above it) lowers the agreement.
        far = ~near
        den = ((got | ref) & far).sum(dim=-1).float()
        ant = torch.where(den > 0, (got & ref & far).sum(dim=-1).float() / den.clamp(min=1), torch.ones_like(den))
        self.rows += got.shape[0]
        self.selected += int(needs.sum())
        self.agree += a.sum().item()
        self.agree_nt += ant.sum().item()
        self.agree_sel += a[needs].sum().item()
        self.agree_nt_sel += ant[needs].sum().item()
        self.exact_missed += int(((got != ref).any(dim=-1) & ~needs).sum())

    def mean(self, what):
        n = self.selected if what.endswith("_sel") else self.rows
        return getattr(self, what) / n if n else 1.0


def reference_topk(conf, ref, pos, P, past_k8, past_scale, topks):
    """Scores of the reference's queries against the past keys (as lwb cached them) and the
    reference's new keys; its top-k against each selection of topks. pos (B, Q); ref from
    indexer_reference on the B * Q tokens; past_k8 (B, P, D_I) fp32 values, past_scale (B, P);
    topks: a list of selections (B, Q, K) as lwb lists them (lwb.indexer.topk, or another
    reference's through kept_positions), possibly empty.
    Returns (a TopkStats per selection of topks, reference selections: a list per request of
    (Q, min(K, N)) key slots, -1 where unused)."""
    K = conf["index_topk"]
    B, Q = pos.shape
    HI = conf["index_n_heads"]
    stats, kept = [TopkStats() for _ in topks], []
    kpos_all = key_positions(P, pos)
    q8 = ref["q8"].view(B, Q, HI, -1)
    W = ref["W"].view(B, Q, HI)
    k8 = ref["k8"].view(B, Q, -1)
    ks = ref["k_scale"].view(B, Q)
    for b in range(B):
        keys8 = torch.cat([past_k8[b], k8[b]]) if P else k8[b]
        kscale = torch.cat([past_scale[b], ks[b]]) if P else ks[b]
        kpos = kpos_all[b]
        N = kpos.shape[0]
        got_all = [selected_keys(tk[b:b + 1], kpos[None])[0] for tk in topks]
        slots = []
        step = row_chunk(HI, N)
        for r0 in range(0, Q, step):
            r1 = min(Q, r0 + step)
            sc = scores(q8[b, r0:r1], W[b, r0:r1], keys8, kscale)
            vis = kpos[None, :] <= pos[b, r0:r1, None]
            sc = sc.masked_fill(~vis, float("-inf"))
            order = torch.sort(sc, dim=-1, descending=True, stable=True)
            kk = min(K, N)
            ref_sel = torch.zeros_like(vis).scatter_(1, order.indices[:, :kk], True) & vis
            needs = vis.sum(dim=-1) > K
            near = torch.zeros_like(vis)
            if bool(needs.any()):
                # Near ties: keys whose reference score is within tie_tol of the row's K-th score,
                # tie_tol = 1e-2 * (the row's highest score - its K-th) + 1e-6: summation order
                # and one-step e4m3 differences move scores by about that much.
                kth = order.values[:, K - 1:K]
                tol = 1e-2 * (order.values[:, :1] - kth) + 1e-6
                near = vis & ((sc - kth).abs() <= tol) & needs[:, None]
            for st, got in zip(stats, got_all):
                st.add(got[r0:r1], ref_sel, near, needs)
            slots.append(torch.where(ref_sel.gather(1, order.indices[:, :kk]), order.indices[:, :kk],
                                     torch.full_like(order.indices[:, :kk], -1)))
        kept.append(torch.cat(slots))
    return stats, kept


def kept_positions(kept, pos, P, K):
    """reference_topk's selections (per request, (Q, min(K, N)) key slots, -1 where unused) as lwb
    lists its own: (B, Q, K) request-local positions, -1 padding."""
    B, Q = pos.shape
    kpos = key_positions(P, pos).long()
    out = torch.full((B, Q, K), -1, dtype=torch.long, device=pos.device)
    for b, sl in enumerate(kept):
        sl = sl.long()
        out[b, :, :sl.shape[1]] = torch.where(sl >= 0, kpos[b][sl.clamp(min=0)], torch.full_like(sl, -1))
    return out


class _IndexerKeys:
    """Stands in for transformers' cache where its indexer asks for its keys: the cached keys,
    then every update appended (as its DynamicIndexedLayer does)."""

    def __init__(self, keys):
        self.keys = keys

    def update_indexer(self, k, *args, **kwargs):
        self.keys = torch.cat([self.keys.to(k.dtype), k], dim=1) if self.keys is not None else k
        return self.keys

    def get_seq_length(self, *args, **kwargs):
        return 0 if self.keys is None else self.keys.shape[1]


def transformers_indexer(conf, get_weight, prefix, dev):
    """transformers' DeepseekV32Indexer with the dump's indexer weights (dequantised, bf16; its
    weights_proj fp32 as transformers keeps it). Raises ImportError without it."""
    from transformers import DeepseekV32Config
    from transformers.models.deepseek_v32 import modeling_deepseek_v32 as V

    c = DeepseekV32Config(**{k: v for k, v in conf.items() if k not in ("model_type", "architectures")})
    c._attn_implementation = "eager"
    mod = V.DeepseekV32Indexer(c, 0)
    sd = {}
    for k in mod.state_dict():
        name = f"{prefix}self_attn.indexer.{k}"
        sd[k] = get_weight(name).float().cpu()
    mod.load_state_dict(sd, strict=True)
    mod = mod.to(dev, BF16).eval()
    if hasattr(mod, "weights_proj"):
        mod.weights_proj.float()
    return mod


def transformers_topk(mod, conf, x, qr, pos, P, past_keys, kept):
    """Agreement of transformers' indexer's selections with the reference's (kept, from
    reference_topk): x (B, Q, hidden), qr (B, Q, q_lora) bf16, pos (B, Q), past_keys (B, P, D_I)
    bf16 (lwb's cached keys, dequantised and rotated back: the Hadamard transform is its own
    inverse). Handles the signatures transformers has had: a cache with update_indexer
    (past_key_values), keys kept on the module (_cached_keys, use_cache; one token at a time), or
    no cache (no past only). Returns (mean agreement over all rows, over rows with a selection)."""
    B, Q = pos.shape
    K, HI = conf["index_topk"], conf["index_n_heads"]
    params = inspect.signature(mod.forward).parameters
    with_cache = "past_key_values" in params
    on_module = not with_cache and hasattr(mod, "_cached_keys") and "use_cache" in params
    if not with_cache and not on_module and P:
        raise RuntimeError("its indexer takes no cached keys (signature "
                           f"{list(params)}); dumps with a past are not compared")
    inv = rope_inv_freq(conf)
    kpos_all = key_positions(P, pos)
    stats = TopkStats()

    def call(rows, cache, mask):
        cos, sin = rope_cos_sin(pos[b:b + 1, rows], inv)
        cos, sin = torch.cat([cos, cos], dim=-1).to(BF16), torch.cat([sin, sin], dim=-1).to(BF16)
        kw = {}
        for name, p in params.items():
            if name == "hidden_states":
                kw[name] = x[b:b + 1, rows]
            elif name in ("q_resid", "qr"):
                kw[name] = qr[b:b + 1, rows]
            elif name == "position_embeddings":
                kw[name] = (cos, sin)
            elif name == "attention_mask":
                kw[name] = mask
            elif name == "position_ids":
                kw[name] = pos[b:b + 1, rows]
            elif name == "past_key_values":
                kw[name] = cache
            elif name == "use_cache":
                kw[name] = cache is not None
            elif p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise TypeError(f"DeepseekV32Indexer.forward wants '{name}', which this script does not know")
        with torch.no_grad():
            try:
                out = mod(**kw)
            except RuntimeError:
                # Releases that do not cast the input of their fp32 weights_proj: all bf16.
                wp = getattr(mod, "weights_proj", None)
                if wp is None or wp.weight.dtype == BF16:
                    raise
                wp.to(BF16)
                out = mod(**kw)
        return out[0] if isinstance(out, (tuple, list)) else out

    for b in range(B):
        kpos = kpos_all[b]
        past = past_keys[b:b + 1] if P else None
        if with_cache:
            cache = _IndexerKeys(past)
            step = row_chunk(HI, P + Q, budget=1 << 31)
        elif on_module:
            mod._cached_keys = past
            cache, step = True, 1
        else:
            cache, step = None, Q
        for r0 in range(0, Q, step):
            r1 = min(Q, r0 + step)
            n = P + r1  # key slots the call sees
            vis = kpos[None, :n] <= pos[b, r0:r1, None]
            mask = torch.zeros(1, r1 - r0, n, device=x.device).masked_fill(~vis[None], float("-inf"))
            out = call(slice(r0, r1), cache, mask)
            got = torch.zeros(r1 - r0, P + Q, dtype=torch.bool, device=x.device)
            if out.is_floating_point():  # an additive mask: 0 at the selected keys
                got[:, :n] = out.reshape(r1 - r0, -1)[:, :n] == 0
            else:
                idx = out.reshape(r1 - r0, -1).long()
                got[:, :n] = torch.zeros(r1 - r0, n + 1, dtype=torch.bool, device=x.device).scatter_(
                    1, torch.where((idx >= 0) & (idx < n), idx, torch.full_like(idx, n)), True)[:, :n]
            vis_all = kpos[None, :] <= pos[b, r0:r1, None]
            got &= vis_all
            sl = kept[b][r0:r1]
            ref = torch.zeros(r1 - r0, P + Q + 1, dtype=torch.bool, device=x.device).scatter_(
                1, torch.where(sl >= 0, sl, torch.full_like(sl, P + Q)), True)[:, :P + Q]
            stats.add(got, ref, torch.zeros_like(ref), vis_all.sum(dim=-1) > K)
    return stats.mean("agree"), stats.mean("agree_sel"), stats.selected
