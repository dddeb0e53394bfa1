# check_layer.py: lwb's DeepSeek-V3 decoder layers against transformers' DeepseekV3DecoderLayer.
#
#   python3 test/gpu/check_layer.py DUMP_DIR [--tol 1e-2]
#
# DUMP_DIR comes from `lwb run ... --dump DUMP_DIR`: meta.json (model config, problem) and one
# layer<i>.safetensors per layer (weights under checkpoint names, lwb's inputs and outputs, the
# routing it applied, and the cached tokens). For each layer this builds the transformers layer
# with the same weights, feeds it lwb's input (hidden_states + residual, as lwb's fused add+norm
# sees it), puts the cached tokens into a DynamicCache as transformers' own attention would have
# written them, and compares:
#   - the layer output (transformers' hidden_states vs lwb's hidden_states + residual),
#   - the attention block (lwb's output residual vs input + transformers' self_attn output),
#   - for MoE layers, the routing: transformers' router on lwb's MoE input, expert sets per token.
# Pass: relative L2 error <= tol for both tensors, identical expert sets (NotModified) or the
# override lwb applied (other balance methods). Exit code 1 on any failure.
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


def load_layer(cfg, layer, t, dev):
    # transformers decides dense vs MoE by layer index; keep the module at index 0 (its own cache
    # slot) and set first_k_dense_replace so it gets the right kind.
    moe = f"model.layers.{layer}.mlp.gate.weight" in t
    c = DeepseekV3Config(**{**cfg.to_dict(), "first_k_dense_replace": 0 if moe else 1})
    c._attn_implementation = "eager"
    L = M.DeepseekV3DecoderLayer(c, layer_idx=0).to(dev, torch.bfloat16)
    prefix = f"model.layers.{layer}."
    sd = L.state_dict()
    new = {}
    E = cfg.n_routed_experts
    for k, v in sd.items():
        name = prefix + k
        if name in t:
            new[k] = t[name].to(v.dtype)
            continue
        # transformers 5 keeps routed experts as stacked parameters.
        if k.endswith("experts.gate_up_proj"):
            g = torch.stack([t[f"{prefix}mlp.experts.{e}.gate_proj.weight"] for e in range(E)])
            u = torch.stack([t[f"{prefix}mlp.experts.{e}.up_proj.weight"] for e in range(E)])
            w = torch.cat([g, u], dim=1)  # (E, 2I, H)
            new[k] = w if w.shape == v.shape else w.transpose(1, 2).contiguous()
        elif k.endswith("experts.down_proj"):
            w = torch.stack([t[f"{prefix}mlp.experts.{e}.down_proj.weight"] for e in range(E)])  # (E, H, I)
            new[k] = w if w.shape == v.shape else w.transpose(1, 2).contiguous()
        else:
            raise SystemExit(f"no tensor for transformers' {k} {tuple(v.shape)} in the dump")
        assert new[k].shape == v.shape, (k, new[k].shape, v.shape)
    L.load_state_dict({k: x.to(dev) for k, x in new.items()}, strict=True)
    return L, c, moe


def main():
    d = sys.argv[1]
    tol = float(sys.argv[sys.argv.index("--tol") + 1]) if "--tol" in sys.argv else 1e-2
    meta = json.load(open(f"{d}/meta.json"))
    cfg = DeepseekV3Config(**meta["config"])
    prob = meta["problem"]
    B, Q, P = prob["batch_size"], prob["seq_len_q"], prob["seq_len_kv_cache"]
    dev = torch.device("cuda")
    print(f"transformers check of {d}: {meta['run_type']} b={B} q={Q} past={P}, layers {meta['layers']}")
    failures = 0
    for layer in meta["layers"]:
        t = load_file(f"{d}/layer{layer}.safetensors")
        L, c, moe = load_layer(cfg, layer, t, dev)
        H = cfg.hidden_size
        x = (t["lwb.input.hidden_states"] + t["lwb.input.residual"]).to(dev).view(B, Q, H)
        pos = t["lwb.position_ids"].to(dev).view(B, Q)
        rot = M.DeepseekV3RotaryEmbedding(config=c).to(dev)
        cos, sin = rot(x, pos)
        cache = None
        if P:
            cache = M.DynamicCache() if hasattr(M, "DynamicCache") else __import__("transformers").DynamicCache()
            lat = t["lwb.past_kv.latent"].to(dev)  # (B, P, kv_lora)
            kpe = t["lwb.past_kv.k_pe"].to(dev)  # (B, P, rope)
            kv = (lat @ L.self_attn.kv_b_proj.weight.t()).view(B, P, c.num_attention_heads, -1).transpose(1, 2)
            k_nope, v = torch.split(kv, [c.qk_nope_head_dim, c.v_head_dim], dim=-1)
            k_rope = kpe.view(B, 1, P, c.qk_rope_head_dim).expand(-1, c.num_attention_heads, -1, -1)
            cache.update(torch.cat([k_nope, k_rope], dim=-1), v.contiguous(), 0)
        # Causal among the new tokens; everything cached is visible.
        mask = None
        if Q > 1:
            keys = P + Q
            qi = torch.arange(Q, device=dev)[:, None]
            kj = torch.arange(keys, device=dev)[None, :]
            mask = torch.zeros(Q, keys, device=dev, dtype=torch.bfloat16)
            mask[kj > P + qi] = torch.finfo(torch.bfloat16).min
            mask = mask[None, None].expand(B, 1, Q, keys)
        seen = {}
        hook = L.self_attn.register_forward_hook(lambda m, a, out: seen.__setitem__("attn", out[0] if isinstance(out, tuple) else out))
        with torch.no_grad():
            out = L(hidden_states=x, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=cache is not None,
                    cache_position=torch.arange(P, P + Q, device=dev), position_embeddings=(cos, sin))
        hook.remove()
        out = out[0] if isinstance(out, tuple) else out
        ours = (t["lwb.output.hidden_states"].float() + t["lwb.output.residual"].float()).to(dev).view(B, Q, H)
        e_out = rel_l2(ours, out)
        e_attn = rel_l2(t["lwb.output.residual"].to(dev).view(B, Q, H), x.float() + seen["attn"].float())
        ok = e_out <= tol and e_attn <= tol and math.isfinite(e_out)
        line = f"layer {layer} ({'MoE' if moe else 'dense'}): layer output rel L2 {e_out:.2e}, attention rel L2 {e_attn:.2e}"
        if moe:
            xm = t["lwb.moe.hidden_states"].to(dev).view(B * Q, H)
            with torch.no_grad():
                r = L.mlp.gate(xm)
                if isinstance(r, tuple) and r[0].dtype in (torch.int64, torch.int32):
                    ids = r[0]
                elif isinstance(r, tuple):
                    ids = r[1] if r[1].dtype in (torch.int64, torch.int32) else r[0]
                else:  # router logits
                    ids = L.mlp.route_tokens_to_experts(r)[0]
            ref = ids.sort(dim=-1).values.cpu()
            got = t["lwb.moe.topk_ids"].long().sort(dim=-1).values.view_as(ref)
            same = (ref == got).all(dim=-1)
            balance = meta.get("balance_method", "NotModified")
            line += f", routing: {int(same.sum())}/{len(same)} tokens choose the same experts"
            if balance == "NotModified":
                ok = ok and bool(same.all())
        print(("PASS  " if ok else "FAIL  ") + line, flush=True)
        failures += not ok
        del L, t
        torch.cuda.empty_cache()
    print(f"{failures} of {len(meta['layers'])} layers failed (tolerance {tol})")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
