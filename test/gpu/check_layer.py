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
import json
import math
import sys

import torch
from safetensors.torch import load_file
from transformers import DeepseekV3Config
from transformers.models.deepseek_v3 import modeling_deepseek_v3 as M


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


class Quant:
    """The activation quantisation of fp8 projections (on/off), with optional bf16 nudges."""

    def __init__(self):
        self.on, self.gen = False, None

    def __call__(self, x):
        x = x.to(torch.bfloat16)
        if self.gen is not None:  # one step of the magnitude up or down (zeros, infinities and NaNs kept)
            bits = x.view(torch.int16)
            mag = bits & 0x7FFF
            step = torch.randint(-1, 2, x.shape, generator=self.gen, device=x.device, dtype=torch.int16)
            step = torch.where((mag > 1) & (mag < 0x7F7F), step, torch.zeros_like(step))
            x = (bits + step).view(torch.bfloat16)
        xf = x.float()
        if not self.on:
            return xf
        g = xf.reshape(-1, xf.shape[-1] // 128, 128)
        amax = g.abs().amax(dim=-1, keepdim=True)
        mul = torch.where(amax > 0, 448.0 / amax, torch.ones_like(amax))
        q = (g * mul).to(FP8).float()
        return (q * (1.0 / mul)).reshape(xf.shape)


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


def main():
    d = sys.argv[1]
    tol = float(sys.argv[sys.argv.index("--tol") + 1]) if "--tol" in sys.argv else 1e-2
    tol8 = float(sys.argv[sys.argv.index("--tol-fp8") + 1]) if "--tol-fp8" in sys.argv else 1e-1
    meta = json.load(open(f"{d}/meta.json"))
    cfg = DeepseekV3Config(**meta["config"])
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
            for seed in (1, 2, 3):
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
        failures += not ok
        del L, t
        torch.cuda.empty_cache()
    print(f"{failures} of {len(meta['layers'])} layers failed (tolerance {tol}; fp8: within the spread and {tol8})")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
