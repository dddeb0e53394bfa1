# check_layer.py: lwb's DeepSeek-V3 decoder layers against transformers' DeepseekV3DecoderLayer.
#
#   python3 test/gpu/check_layer.py DUMP_DIR [--tol 1e-2]
#
# DUMP_DIR comes from `lwb run ... --dump DUMP_DIR`: meta.json (model config, problem) and one
# layer<i>.safetensors per layer (weights under checkpoint names, lwb's inputs and outputs, the
# routing it applied, and the cached tokens). For each layer this builds the transformers layer
# with the same weights, puts the cached tokens into a DynamicCache as transformers' own attention
# would have written them, and compares.
# Layer boundary (meta.json "layer_boundary"): "trtllm" (lwb today, as TensorRT-LLM's DeepSeek
# layer): the input hidden_states are already normalised and the layer ends with the next layer's
# input_layernorm fused with the residual add. transformers' layer gets the input residual as its
# hidden_states and an input_layernorm that returns lwb's normalised input, so its output is the
# new residual; then:
#   - the layer output: lwb's output residual vs transformers' output, and lwb's output
#     hidden_states vs the next layer's input_layernorm of transformers' output,
#   - the attention block: lwb.attention.residual vs input residual + transformers' self_attn output.
# Older dumps (no "layer_boundary"): the input is hidden_states + residual, normalised by the
# layer's own input_layernorm; the output hidden_states + residual is the layer's output.
# Also:
#   - for MoE layers, the routing: transformers' router on lwb's MoE input, expert sets per token
#     (near-ties, choice scores within 1e-3, are reported, not failed). The layer output is
#     compared under lwb's routing, so a flipped near-tie upstream cannot mask or fake an error.
# Pass: relative L2 error <= tol for both tensors; with NotModified, every token's expert set
# equal to transformers' or a near-tie. Exit code 1 on any failure.
#
# FP8 dumps (weights stored as float8_e4m3fn with weight_scale_inv, as DeepSeek's checkpoints):
# the weights are dequantised (fp32; kv_b_proj to bf16, as lwb and TensorRT-LLM run it), and the
# layer is compared three ways:
#   - plain: transformers with the dequantised weights, activations unquantised (fp32 products);
#   - fp8: every fp8 projection's input quantised per token and 128 channels (e4m3, scale
#     448 / amax), as lwb and TensorRT-LLM do;
#   - spread: the fp8 reference again with every quantiser input nudged by one bf16 step (a random
#     -1/0/+1 in the last bit), three seeds: how far bf16-level differences between two correct
#     implementations move an fp8 layer (rounding to e4m3 turns them into whole-step flips).
# Pass: lwb's error against the fp8 reference within the largest spread (and <= --tol-fp8, 0.1);
# the plain error is reported next to it.
#
# DeepSeek-V3.2 dumps (meta.json "config" with model_type "deepseek_v32"): the MLA and MoE parts are
# V3's, so the same transformers layer is built (DeepseekV3Config without the index_* fields), its
# attention made sparse as lwb ran it: the additive mask keeps, for each query token, only the keys
# listed in lwb.indexer.topk (and stays causal), so the comparisons above check lwb's attention to
# the keys it selected, with the same tolerances. The selection itself is checked on its own line
# against an indexer reference (dsa_ref.py: DeepSeek's fp8 indexer, Hadamard transform included),
# fed with the dump's indexer weights, lwb's input, positions and cached indexer keys
# (lwb.past_kv.index_k / index_k_scale):
#   - the new tokens' keys, lwb.indexer.k / k_scale, against the reference's e4m3 bytes and scales
#     (equal bytes reported; pass: at most 1% of the values more than one e4m3 step apart (fp8: see
#     below) and no scale off by more than 2x);
#   - lwb's rows: visible keys only (positions 0..pos), none twice, min(pos + 1, index_topk) of
#     them; rows with no more visible keys than index_topk must list exactly those (pass: all);
#   - top-k agreement |lwb's & the reference's| / |the reference's| per row, averaged over all rows,
#     and the same outside near ties (see dsa_ref.reference_topk: keys whose reference score is
#     within tie_tol = 1e-2 * (the row's highest score - its index_topk-th) + 1e-6 of the
#     index_topk-th, where summation order and one-step e4m3 flips decide); pass: >= 0.99 outside
#     near ties, averaged over the rows that needed a selection (the others must be exact anyway)
#     (fp8: see below);
#   - transformers' own DeepseekV32Indexer (bf16, no Hadamard, no fp8) where transformers has it,
#     with the same weights, inputs and past keys: its agreement with the reference, reported only.
# In an fp8 dump the reference's q_a_proj, wq_b and wk are lwb's fp8 GEMMs (dsa_ref.fp8_gemm: the
# input quantised per token and 128 columns, x once for q_a_proj and wk, times the e4m3 weight,
# each 128-deep K block summed in fp32 and promoted with its two scales, bf16 result), and
# q_a_layernorm is lwb's (fp32, one rounding). Its inputs then reach the keys and queries through
# chains of roundings (1 x 128 quantisation, fp8 GEMM, bf16, LayerNorm or RMSNorm, RoPE, a
# Hadamard transform mixing all 128 values, e4m3) in which a one-ulp difference flips later
# roundings, so fixed thresholds say little; the reference is also run with the quantisers' inputs
# (x before its quantisation, the q latent before its) nudged by one bf16 step as for the layer
# output (same method and seeds), and lwb passes within that spread:
#   - keys: the fraction more than one e4m3 step apart <= 1.5 x the largest such fraction of a
#     nudged reference's keys against the reference's + 0.002 (scales: the 2x rule);
#   - top-k: the agreement outside near ties over the rows that needed a selection >= the lowest
#     agreement of a nudged reference's selection with the reference's (same definition) - 0.01.
import json
import math
import sys

import torch
from safetensors.torch import load_file
from transformers import DeepseekV3Config
from transformers.models.deepseek_v3 import modeling_deepseek_v3 as M

import dsa_ref


def rel_l2(got, want):
    got, want = got.float(), want.float()
    return (torch.linalg.vector_norm(got - want) / torch.linalg.vector_norm(want)).item()


FP8 = torch.float8_e4m3fn


def dequant(t, name, dev):
    """The tensor `name` of a dump: fp8 bytes times their 128 x 128 block scales as fp32 on `dev`, or
    the tensor as stored."""
    w = t[name]
    if w.dtype != FP8:
        return w, False
    w = w.to(dev)
    s = t[name + "_scale_inv"].to(dev).float()
    r, c = w.shape
    full = s.repeat_interleave(128, 0)[:r].repeat_interleave(128, 1)[:, :c]
    return w.float() * full, True


# Seeds of the bf16 nudges that measure an fp8 reference's spread (the layer output and the indexer).
NUDGE_SEEDS = (1, 2, 3)


class Quant:
    """The activation quantisation of fp8 projections (on/off), with optional bf16 nudges."""

    def __init__(self):
        self.on, self.gen = False, None

    def nudge(self, x):
        """x in bf16; with a generator, each value one step of the magnitude up or down, or kept, at
        random (zeros, infinities and NaNs kept)."""
        x = x.to(torch.bfloat16)
        if self.gen is not None:
            bits = x.view(torch.int16)
            mag = bits & 0x7FFF
            step = torch.randint(-1, 2, x.shape, generator=self.gen, device=x.device, dtype=torch.int16)
            step = torch.where((mag > 1) & (mag < 0x7F7F), step, torch.zeros_like(step))
            x = (bits + step).view(torch.bfloat16)
        return x

    @staticmethod
    def quantise(xf):
        """fp32 xf (..., K) as lwb's quantiser writes it, per row and 128 columns: e4m3 values
        q = e4m3(x * (448 / amax)) (multiplier 1 where amax is 0) as fp32 (..., K), and the scales
        1 / multiplier (..., K / 128) fp32."""
        g = xf.reshape(-1, xf.shape[-1] // 128, 128)
        amax = g.abs().amax(dim=-1, keepdim=True)
        mul = torch.where(amax > 0, 448.0 / amax, torch.ones_like(amax))
        q = (g * mul).to(FP8).float()
        return q.reshape(xf.shape), (1.0 / mul).reshape(*xf.shape[:-1], -1)

    def blocks(self, x):
        """x nudged (with a generator) and quantised: (e4m3 values as fp32, scales), for fp8_gemm."""
        return self.quantise(self.nudge(x).float())

    def __call__(self, x):
        """x nudged (with a generator), then (when on) quantised and dequantised, fp32."""
        xf = self.nudge(x).float()
        if not self.on:
            return xf
        q, s = self.quantise(xf)
        return (q.reshape(-1, xf.shape[-1] // 128, 128) * s.reshape(-1, xf.shape[-1] // 128, 1)).reshape(xf.shape)


def fp8_linear(mod, w32, quant):
    def fwd(x):
        return (quant(x) @ w32.t()).to(x.dtype)
    mod.forward = fwd


def fp8_experts(experts, w13, w2, inter, quant):
    """transformers 5's stacked experts, with lwb's arithmetic: fp32 gate/up products, SwiGLU in
    fp32 rounded to bf16, the down product to bf16, weighted sums in fp32."""
    import inspect
    names = list(inspect.signature(experts.forward).parameters)

    def fwd(*args, **kw):
        a = dict(zip(names, args), **kw)
        h, idx, wts = (a[n] for n in names[:3])
        out = torch.zeros(h.shape[0], w2.shape[1], dtype=torch.float32, device=h.device)
        for e in idx.unique().tolist():
            tok, slot = (idx == e).nonzero(as_tuple=True)
            gu = quant(h[tok]) @ w13[e].t()
            g, u = gu[:, :inter], gu[:, inter:]
            y = (quant((torch.nn.functional.silu(g) * u).to(torch.bfloat16)) @ w2[e].t()).to(torch.bfloat16)
            out.index_add_(0, tok, y.float() * wts[tok, slot, None].float())
        return out.to(h.dtype)

    experts.forward = fwd


def load_layer(cfg, layer, t, dev):
    # transformers decides dense vs MoE by layer index; keep the module at index 0 (its own cache
    # slot) and set first_k_dense_replace so it gets the right kind.
    moe = f"model.layers.{layer}.mlp.gate.weight" in t
    c = DeepseekV3Config(**{**cfg.to_dict(), "first_k_dense_replace": 0 if moe else 1})
    c._attn_implementation = "eager"
    L = M.DeepseekV3DecoderLayer(c, layer_idx=0).to(dev, torch.bfloat16)
    prefix = f"model.layers.{layer}."
    sd = L.state_dict()
    new, w32 = {}, {}
    E = cfg.n_routed_experts
    quant = Quant()
    fp8 = any(x.dtype == FP8 for x in t.values())
    for k, v in sd.items():
        name = prefix + k
        if k == "input_layernorm.weight" and name not in t:  # the trtllm boundary: replaced in main
            new[k] = torch.ones_like(v)
            continue
        if name in t:
            w, was8 = dequant(t, name, dev)
            new[k] = w.to(v.dtype)
            if was8 and "kv_b_proj" not in k:  # kv_b_proj runs in bf16 (dequantised at load)
                w32[k] = w
            continue
        # transformers 5 keeps routed experts as stacked parameters.
        if k.endswith("experts.gate_up_proj"):
            g = torch.stack([dequant(t, f"{prefix}mlp.experts.{e}.gate_proj.weight", dev)[0] for e in range(E)])
            u = torch.stack([dequant(t, f"{prefix}mlp.experts.{e}.up_proj.weight", dev)[0] for e in range(E)])
            w = torch.cat([g, u], dim=1)  # (E, 2I, H)
            w32["experts13"] = w
            new[k] = (w if w.shape == v.shape else w.transpose(1, 2).contiguous()).to(v.dtype)
        elif k.endswith("experts.down_proj"):
            w = torch.stack([dequant(t, f"{prefix}mlp.experts.{e}.down_proj.weight", dev)[0] for e in range(E)])
            w32["experts2"] = w  # (E, H, I)
            new[k] = (w if w.shape == v.shape else w.transpose(1, 2).contiguous()).to(v.dtype)
        else:
            raise SystemExit(f"no tensor for transformers' {k} {tuple(v.shape)} in the dump")
        assert new[k].shape == v.shape, (k, new[k].shape, v.shape)
    L.load_state_dict({k: x.to(dev) for k, x in new.items()}, strict=True)
    if moe:  # the correction bias stays fp32, as in the checkpoint and in lwb
        b = t[f"{prefix}mlp.gate.e_score_correction_bias"].float().to(dev)
        L.mlp.gate.e_score_correction_bias.data = b
    if fp8:  # fp8 projections: fp32 products of the dequantised weights, inputs through `quant`
        mods = dict(L.named_modules())
        for k, w in w32.items():
            if k.endswith(".weight") and isinstance(mods.get(k[: -len(".weight")]), torch.nn.Linear):
                fp8_linear(mods[k[: -len(".weight")]], w, quant)
        if "experts13" in w32:
            fp8_experts(L.mlp.experts, w32["experts13"], w32["experts2"], cfg.moe_intermediate_size, quant)
    return L, c, moe, (quant if fp8 else None)


INDEXER_WEIGHTS = ("wq_b.weight", "wk.weight", "k_norm.weight", "k_norm.bias", "weights_proj.weight")


def weight8(t, name, dev):
    """An fp8 weight of a dump as fp8_gemm takes it: (e4m3 values as fp32, weight_scale_inv fp32), or
    None when the dump stores it otherwise."""
    if t[name].dtype != FP8:
        return None
    return t[name].to(dev).float(), t[name + "_scale_inv"].to(dev).float()


def lwb_rmsnorm(v, weight, eps):
    """lwb's RMSNorm (kernels/rmsnorm.cu.in): x / sqrt(mean(x^2) + eps) * w in fp32, rounded to bf16
    once (transformers' rounds x / sqrt(...) to bf16 before the weight)."""
    f = v.float()
    inv = torch.rsqrt(f.pow(2).mean(dim=-1, keepdim=True) + eps)
    return (f * inv * weight.float()).to(torch.bfloat16)


def check_indexer(conf, layer, t, L, quant, pos, P, dev, mla_inv_freq):
    """A V3.2 layer's indexer against dsa_ref's reference (see the header). Returns (ok, line)."""
    B, Q = pos.shape
    K = conf["index_topk"]
    prefix = f"model.layers.{layer}."
    x = t["lwb.input.hidden_states"].to(dev).view(B * Q, -1)
    w = {k: dequant(t, f"{prefix}self_attn.indexer.{k}", dev)[0].to(dev) for k in INDEXER_WEIGHTS}
    fp8 = quant is not None
    if fp8:
        # lwb's fp8 GEMMs for q_a_proj, wq_b and wk (dsa_ref.fp8_gemm on the quantised inputs).
        w8 = {k: weight8(t, f"{prefix}self_attn.indexer.{k}", dev) for k in ("wq_b.weight", "wk.weight")}
        w8["q_a"] = weight8(t, f"{prefix}self_attn.q_a_proj.weight", dev)
        missing = [k for k, v in w8.items() if v is None]
        if missing:
            return False, f"layer {layer} indexer: an fp8 dump without fp8 weights for {', '.join(missing)}"
        qa_norm = L.self_attn.q_a_layernorm
        qa_eps = getattr(qa_norm, "variance_epsilon", None) or conf.get("rms_norm_eps", 1e-6)

    def reference(seed):
        """(q latent, dsa_ref.indexer_reference on lwb's input). fp8: as lwb computes it, x quantised
        once for q_a_proj and wk, the q latent quantised for wq_b; with a seed, those two quantisers'
        inputs nudged by one bf16 step (Quant.nudge, x first)."""
        with torch.no_grad():
            if not fp8:  # MLA's q latent as the reference layer computes it
                qr = L.self_attn.q_a_layernorm(L.self_attn.q_a_proj(x)).to(torch.bfloat16)
                return qr, dsa_ref.indexer_reference(conf, w, x, qr, pos.reshape(-1))
            quant.on = True
            quant.gen = None if seed is None else torch.Generator(device=dev).manual_seed(seed)
            try:
                xq = quant.blocks(x)
                qr = lwb_rmsnorm(dsa_ref.fp8_gemm(*xq, *w8["q_a"]), qa_norm.weight, qa_eps)

                def proj(name, inp):  # wk's input is x: its quantised copy above
                    return dsa_ref.fp8_gemm(*(xq if name == "wk.weight" else quant.blocks(inp)), *w8[name])

                return qr, dsa_ref.indexer_reference(conf, w, x, qr, pos.reshape(-1), proj)
            finally:
                quant.on, quant.gen = False, None

    qr, ref = reference(None)
    equal, far, ratio = dsa_ref.compare_keys(ref, t["lwb.indexer.k"].to(dev).view(B * Q, -1),
                                             t["lwb.indexer.k_scale"].to(dev).view(-1))
    if P:
        past8 = dsa_ref.e4m3_from_bits(t["lwb.past_kv.index_k"].to(dev))  # (B, P, D_I)
        past_s = t["lwb.past_kv.index_k_scale"].to(dev).float().view(B, P)
    else:
        past8 = past_s = None
    topk = t["lwb.indexer.topk"].to(dev).view(B, Q, -1)
    malformed = dsa_ref.check_selection(topk, dsa_ref.key_positions(P, pos), pos, K)
    # fp8: the spread of the reference under bf16 nudges of its quantisers' inputs: each nudged
    # reference's keys (more than one e4m3 step apart) and selection measured against the reference's.
    sels, key_spread = [topk], []
    for seed in (NUDGE_SEEDS if fp8 else ()):
        _, nudged = reference(seed)
        key_spread.append(dsa_ref.compare_keys(ref, dsa_ref.e4m3_bits(nudged["k8"]), nudged["k_scale"])[1])
        with torch.no_grad():
            _, kept_n = dsa_ref.reference_topk(conf, nudged, pos, P, past8, past_s, [])
        sels.append(dsa_ref.kept_positions(kept_n, pos, P, K))
        del nudged, kept_n
    with torch.no_grad():
        all_stats, kept = dsa_ref.reference_topk(conf, ref, pos, P, past8, past_s, sels)
    stats, spread = all_stats[0], all_stats[1:]
    agree = stats.mean("agree_nt_sel")
    if fp8:
        # Pass rules within the spread: lwb's keys more than one e4m3 step from the reference's in at
        # most 1.5 x the largest fraction of a nudged reference's + 0.2%; lwb's agreement outside near
        # ties over the rows that needed a selection at least the lowest of the nudged references'
        # - 0.01.
        key_limit = max(key_spread) * 1.5 + 0.002
        agree_floor = min(s.mean("agree_nt_sel") for s in spread) - 0.01
    else:  # bf16: fixed rules
        key_limit, agree_floor = 0.01, 0.99
    ok = (far <= key_limit and ratio <= 2 and malformed == 0 and stats.exact_missed == 0 and agree >= agree_floor)
    line = (f"layer {layer} indexer{' (fp8)' if fp8 else ''}: keys e4m3 equal {100 * equal:.2f}% "
            f"({100 * far:.2f}% more than one step apart")
    if fp8:
        line += (f"; nudged references {100 * min(key_spread):.2f}..{100 * max(key_spread):.2f}%, pass <= 1.5 x max + "
                 f"0.2% = {100 * key_limit:.2f}%")
    line += (f"; scales within {ratio:g}x), topk agreement {stats.mean('agree'):.4f} "
             f"({stats.mean('agree_nt'):.4f} outside near ties, {stats.selected} rows selected")
    if stats.selected:
        line += f"; on those {stats.mean('agree_sel'):.4f}, {agree:.4f} outside near ties"
        if fp8:
            sp = [s.mean("agree_nt_sel") for s in spread]
            line += f" (nudged references {min(sp):.4f}..{max(sp):.4f}, pass >= min - 0.01 = {agree_floor:.4f})"
    line += ")"
    if malformed:
        line += (f", {malformed} rows of lwb.indexer.topk malformed (a key not visible, one listed twice, or "
                 f"not min(pos + 1, {K}) keys)")
    if stats.exact_missed:
        line += f", {stats.exact_missed} rows with at most {K} visible keys not selecting exactly those"
    ours = torch.tensor(dsa_ref.rope_inv_freq(conf), dtype=torch.float64)
    theirs = mla_inv_freq.double().cpu()
    if ours.shape == theirs.shape and ((ours - theirs).abs() / ours).max().item() > 1e-5:
        line += (f" (note: the reference's RoPE frequencies differ from transformers' MLA ones by up to "
                 f"{((ours - theirs).abs() / ours).max().item():.1e})")
    # transformers' own indexer, where this transformers has one (information only).
    try:
        mod = dsa_ref.transformers_indexer(conf, lambda n: dequant(t, n, dev)[0], prefix, dev)
    except ImportError:
        line += ", transformers has no DeepseekV32; skipped"
    except Exception as e:  # a release whose module differs from what this script knows
        line += f", transformers' indexer not built ({type(e).__name__}: {e})"
    else:
        try:
            signs = dsa_ref.hadamard_signs(conf["index_head_dim"], dev)
            # lwb's cached keys back in transformers' form: dequantised, the Hadamard transform undone
            # (it is its own inverse).
            past_bf = dsa_ref.hadamard(past8 * past_s[..., None], signs) if P else None
            H = x.shape[-1]
            a, a_sel, n_sel = dsa_ref.transformers_topk(mod, conf, x.view(B, Q, H), qr.view(B, Q, -1), pos, P,
                                                        past_bf, kept)
            line += f", transformers indexer agreement {a:.4f}"
            if n_sel:
                line += f" ({a_sel:.4f} on the {n_sel} rows selected)"
        except Exception as e:
            line += f", transformers' indexer failed ({type(e).__name__}: {e})"
        del mod
    return ok, line


def main():
    d = sys.argv[1]
    tol = float(sys.argv[sys.argv.index("--tol") + 1]) if "--tol" in sys.argv else 1e-2
    tol8 = float(sys.argv[sys.argv.index("--tol-fp8") + 1]) if "--tol-fp8" in sys.argv else 1e-1
    meta = json.load(open(f"{d}/meta.json"))
    conf = meta["config"]
    # DeepSeek-V3.2: V3's layer plus the indexer, whose fields DeepseekV3Config does not take.
    v32 = conf.get("model_type") == "deepseek_v32"
    cfg = DeepseekV3Config(**({k: v for k, v in conf.items() if k != "model_type" and not k.startswith("index_")}
                              if v32 else conf))
    prob = meta["problem"]
    B, Q, P = prob["batch_size"], prob["seq_len_q"], prob["seq_len_kv_cache"]
    dev = torch.device("cuda")
    print(f"transformers check of {d}: {meta['run_type']} b={B} q={Q} past={P}, layers {meta['layers']}")
    failures = 0
    for layer in meta["layers"]:
        t = load_file(f"{d}/layer{layer}.safetensors")
        L, c, moe, quant = load_layer(cfg, layer, t, dev)
        H = cfg.hidden_size
        trt = meta.get("layer_boundary") == "trtllm"
        if trt:
            # transformers' residual path carries lwb's input residual; its input_layernorm hands
            # the attention lwb's normalised input.
            x = t["lwb.input.residual"].to(dev).view(B, Q, H)
            x_norm = t["lwb.input.hidden_states"].to(dev).view(B, Q, H)

            class Given(torch.nn.Module):
                def forward(self, h):
                    return x_norm.to(h.dtype)

            L.input_layernorm = Given()
            nn_name = next(k for k in t if k == "model.norm.weight" or k.endswith(".input_layernorm.weight"))
            next_norm = M.DeepseekV3RMSNorm(H, eps=cfg.rms_norm_eps).to(dev, torch.bfloat16)
            next_norm.weight.data = t[nn_name].to(dev)
        else:
            x = (t["lwb.input.hidden_states"] + t["lwb.input.residual"]).to(dev).view(B, Q, H)
        pos = t["lwb.position_ids"].to(dev).view(B, Q)
        rot = M.DeepseekV3RotaryEmbedding(config=c).to(dev)
        cos, sin = rot(x, pos)
        # Cached tokens as transformers' attention would have stored them. Depending on the
        # release it caches per-head expanded keys and values, or the compressed latent and roped
        # key (transformers 5.x); try both.
        lat = t["lwb.past_kv.latent"].to(dev) if P else None  # (B, P, kv_lora)
        kpe = t["lwb.past_kv.k_pe"].to(dev) if P else None  # (B, P, rope)

        def make_cache(kind):
            if not P:
                return None
            cache = __import__("transformers").DynamicCache()
            if kind == "latent":
                cache.update(lat.view(B, 1, P, -1), kpe.view(B, 1, P, -1), 0)
                return cache
            kv = (lat @ L.self_attn.kv_b_proj.weight.t()).view(B, P, c.num_attention_heads, -1).transpose(1, 2)
            k_nope, v = torch.split(kv, [c.qk_nope_head_dim, c.v_head_dim], dim=-1)
            k_rope = kpe.view(B, 1, P, c.qk_rope_head_dim).expand(-1, c.num_attention_heads, -1, -1)
            cache.update(torch.cat([k_nope, k_rope], dim=-1), v.contiguous(), 0)
            return cache

        # Causal among the new tokens; everything cached is visible.
        mask = None
        if Q > 1:
            keys = P + Q
            qi = torch.arange(Q, device=dev)[:, None]
            kj = torch.arange(keys, device=dev)[None, :]
            mask = torch.zeros(Q, keys, device=dev, dtype=torch.bfloat16)
            mask[kj > P + qi] = torch.finfo(torch.bfloat16).min
            mask = mask[None, None].expand(B, 1, Q, keys)
        if v32:
            # Sparse attention as lwb ran it: each query token sees only the keys lwb's indexer
            # selected (request-local positions; kept causal too), additive like the mask above.
            kpos = dsa_ref.key_positions(P, pos)
            keep = dsa_ref.selected_keys(t["lwb.indexer.topk"].to(dev).view(B, Q, -1), kpos)
            keep &= kpos[:, None, :] <= pos[:, :, None]
            mask = torch.full((B, 1, Q, P + Q), torch.finfo(torch.bfloat16).min, device=dev, dtype=torch.bfloat16)
            mask.masked_fill_(keep[:, None], 0)
        # The MoE output is compared under lwb's routing (the router is checked on its own below:
        # bf16 differences upstream flip near-tied experts, which says nothing about the experts).
        routed = {}
        if moe:
            ids_lwb = t["lwb.moe.topk_ids"].to(dev).long()
            w_lwb = t["lwb.moe.topk_weights"].to(dev)
            gate_fwd = L.mlp.gate.forward

            def lwb_routing(h):
                r = gate_fwd(h)
                routed["kinds"] = [(tuple(x.shape), x.dtype) for x in r] if isinstance(r, tuple) else None
                if not isinstance(r, tuple):
                    raise SystemExit("transformers' router returns one tensor; this script expects (logits, weights, ids)")
                return tuple(ids_lwb.to(x.dtype) if not x.is_floating_point()
                             else w_lwb.to(x.dtype) if tuple(x.shape) == tuple(w_lwb.shape) else x for x in r)

            L.mlp.gate.forward = lwb_routing
        def forward():
            seen = {}
            hook = L.self_attn.register_forward_hook(
                lambda m, a, out: seen.__setitem__("attn", out[0] if isinstance(out, tuple) else out))
            out, cache_kind, errors = None, None, []
            for kind in (["latent", "expanded"] if P else ["none"]):
                try:
                    with torch.no_grad():
                        out = L(hidden_states=x, attention_mask=mask, position_ids=pos,
                                past_key_values=make_cache(kind), use_cache=P > 0,
                                cache_position=torch.arange(P, P + Q, device=dev), position_embeddings=(cos, sin))
                    cache_kind = kind
                    break
                except RuntimeError as e:
                    errors.append(f"{kind}: {e}")
            hook.remove()
            if out is None:
                raise SystemExit("transformers' layer rejected the cache in both forms: " + " | ".join(errors))
            return out, x.float() + seen["attn"].float(), cache_kind

        if trt:
            ours = t["lwb.output.residual"].float().to(dev).view(B, Q, H)
            ours_attn = t["lwb.attention.residual"].to(dev).view(B, Q, H)
        else:
            ours = (t["lwb.output.hidden_states"].float() + t["lwb.output.residual"].float()).to(dev).view(B, Q, H)
            ours_attn = t["lwb.output.residual"].to(dev).view(B, Q, H)
        out, attn, cache_kind = forward()
        e_out, e_attn = rel_l2(ours, out), rel_l2(ours_attn, attn)
        e_norm = None
        if trt:  # the closing norm on transformers' output against lwb's output hidden_states
            with torch.no_grad():
                e_norm = rel_l2(t["lwb.output.hidden_states"].to(dev).view(B, Q, H), next_norm(out.to(torch.bfloat16)))
        if quant is None:
            ok = e_out <= tol and e_attn <= tol and math.isfinite(e_out)
            line = f"layer {layer} ({'MoE' if moe else 'dense'}): layer output rel L2 {e_out:.2e}, attention rel L2 {e_attn:.2e}"
            if e_norm is not None:
                ok = ok and e_norm <= tol
                line += f", closing norm {e_norm:.2e} ({nn_name})"
        else:
            # The fp8 reference, and its spread under bf16 nudges of the quantisers' inputs.
            quant.on = True
            out8, attn8, _ = forward()
            e8, e8_attn = rel_l2(ours, out8), rel_l2(ours_attn, attn8)
            spread, spread_attn = [], []
            for seed in NUDGE_SEEDS:
                quant.gen = torch.Generator(device=dev).manual_seed(seed)
                o, a, _ = forward()
                spread.append(rel_l2(o, out8))
                spread_attn.append(rel_l2(a, attn8))
            quant.gen, quant.on = None, False
            ok = (math.isfinite(e8) and e8 <= max(spread) and e8_attn <= max(spread_attn) and e8 <= tol8 and
                  e8_attn <= tol8)
            line = (f"layer {layer} ({'MoE' if moe else 'dense'}, fp8): layer output rel L2 {e8:.2e} against the fp8 "
                    f"reference (its spread under bf16 nudges {min(spread):.2e}..{max(spread):.2e}; against the "
                    f"unquantised reference {e_out:.2e}), attention {e8_attn:.2e} (spread {min(spread_attn):.2e}.."
                    f"{max(spread_attn):.2e}; unquantised {e_attn:.2e})")
            if trt:
                with torch.no_grad():
                    e_norm8 = rel_l2(t["lwb.output.hidden_states"].to(dev).view(B, Q, H),
                                     next_norm(out8.to(torch.bfloat16)))
                ok = ok and e_norm8 <= tol8
                line += f", closing norm {e_norm8:.2e} against the fp8 reference's"
        if moe:
            L.mlp.gate.forward = gate_fwd
        if moe:
            # The router on lwb's own MoE input: the same expert sets, except near-ties (choice
            # scores within 1e-3, where fp32 summation order decides).
            xm = t["lwb.moe.hidden_states"].to(dev).view(B * Q, H)
            with torch.no_grad():
                r = L.mlp.gate(xm)
            ids = next(x for x in r if not x.is_floating_point()) if isinstance(r, tuple) else None
            logits = next((x for x in r if x.is_floating_point() and x.shape[-1] == cfg.n_routed_experts), None)
            choice = torch.sigmoid(logits.float()) + L.mlp.gate.e_score_correction_bias.float()
            ref = ids.long().sort(dim=-1).values
            got = t["lwb.moe.topk_ids"].to(dev).long().sort(dim=-1).values.view_as(ref)
            differ = (ref != got).any(dim=-1)
            ties = 0
            for tok in differ.nonzero().flatten().tolist():
                a = set(ref[tok].tolist()) - set(got[tok].tolist())
                b = set(got[tok].tolist()) - set(ref[tok].tolist())
                gap = max(abs(choice[tok, i] - choice[tok, j]).item() for i in a for j in b)
                ties += gap < 1e-3
            same = int((~differ).sum())
            balance = meta.get("balance_method", "NotModified")
            line += f", routing on lwb's MoE input: {same}/{len(differ)} tokens choose the same experts"
            if same < len(differ):
                line += f" ({ties} of the others are near-ties)"
            if balance == "NotModified":
                ok = ok and same + ties == len(differ)
            line += f" [cache: {cache_kind}]"
        print(("PASS  " if ok else "FAIL  ") + line, flush=True)
        if v32:
            ok_i, line_i = check_indexer(conf, layer, t, L, quant, pos, P, dev, rot.inv_freq)
            print(("PASS  " if ok_i else "FAIL  ") + line_i, flush=True)
            ok = ok and ok_i
        failures += not ok
        del L, t
        torch.cuda.empty_cache()
    print(f"{failures} of {len(meta['layers'])} layers failed (tolerance {tol}; fp8: within the spread and {tol8})")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
