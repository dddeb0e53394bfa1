# check_qwen3next.py: lwb's Qwen3-Next layers (Gated DeltaNet or gated attention, then the MoE block)
# against transformers' Qwen3Next modules.
#
#   python3 test/gpu/check_qwen3next.py DUMP_DIR [--tol 1e-2]
#
# DUMP_DIR comes from `lwb run --model <qwen3_next> ... --dump DUMP_DIR` (layers/qwen3next.h says
# what it holds; meta.json "as_run" gives the shapes as run, e.g. one rank's share under
# --scaled-from 2). transformers' modules are built with those shapes and lwb's weights (the
# DeltaNet projection's rows put back into transformers' per-key-head grouping; the norms' 1 + w
# back to w), then:
#   - the residual adds: lwb.mid.residual = input hidden + residual; lwb.moe.input =
#     post_attention_layernorm(lwb.output.residual) with transformers' Qwen3NextRMSNorm;
#   - the mixer on input_layernorm(lwb.mid.residual), against lwb.mixer.output:
#       Gated DeltaNet: transformers' Qwen3NextGatedDeltaNet (its torch chunked path) when there is
#       no past; always a token-by-token fp32 recurrence from lwb's states before the forward (its
#       projections, conv and gated norm from the transformers module), which also gives the conv
#       and recurrent states after the forward, compared with lwb's;
#       attention: transformers' Qwen3NextAttention with the causal mask and its rotary embedding
#       when there is no past; always a reference over lwb's cached keys and values (transformers'
#       q/k norms and rotary function, softmax in fp32, the sigmoid gate, o_proj);
#   - the MoE block on lwb.moe.input: transformers' Qwen3NextSparseMoeBlock, compared when its own
#     choice (from bf16 logits) equals lwb's for every token (else reported: two experts a bf16 step
#     apart go either way; lwb's expert sets are checked against fp32 logits, near ties reported);
#     always a reference under lwb's routing
#     (SwiGLU experts in bf16 products, weights in fp32, the shared expert times its sigmoid gate);
#     the routing weights (softmax of the chosen logits) against lwb's.
# Pass: relative L2 <= tol for every output and state. Exit code 1 on any failure.
import json
import math
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import Qwen3NextConfig
from transformers.models.qwen3_next import modeling_qwen3_next as M

dev = "cuda"
failures = 0


def rel_l2(got, want):
    got, want = got.float(), want.float()
    return (torch.linalg.vector_norm(got - want) / torch.linalg.vector_norm(want).clamp_min(1e-30)).item()


def verdict(what, err, tol):
    global failures
    ok = err <= tol and math.isfinite(err)
    failures += not ok
    print(f"{'PASS' if ok else 'FAIL'}  {what:60s} rel_l2 {err:.3e} (tol {tol:g})", flush=True)


def set_param(module, name, value):
    p = dict(module.named_parameters()).get(name)
    if p is None:
        p = dict(module.named_buffers()).get(name)
    if p is None:
        raise KeyError(f"{type(module).__name__} has no {name}: {[n for n, _ in module.named_parameters()]}")
    with torch.no_grad():
        p.copy_(value.to(p.dtype).reshape(p.shape))


def out0(x):
    return x[0] if isinstance(x, tuple) else x


def load_gdn(mixer, t, Hk, Hv, Dk, Dv):
    """lwb's q | k | v | z | b | a rows into transformers' per-key-head groups."""
    P = t["lwb.w.proj"]
    r = Hv // Hk
    q, k = P[: Hk * Dk], P[Hk * Dk : 2 * Hk * Dk]
    v = P[2 * Hk * Dk : 2 * Hk * Dk + Hv * Dv]
    z = P[2 * Hk * Dk + Hv * Dv : 2 * Hk * Dk + 2 * Hv * Dv]
    b = P[2 * Hk * Dk + 2 * Hv * Dv : 2 * Hk * Dk + 2 * Hv * Dv + Hv]
    a = P[2 * Hk * Dk + 2 * Hv * Dv + Hv :]
    qkvz, ba = [], []
    for g in range(Hk):
        qkvz += [q[g * Dk : (g + 1) * Dk], k[g * Dk : (g + 1) * Dk], v[g * r * Dv : (g + 1) * r * Dv],
                 z[g * r * Dv : (g + 1) * r * Dv]]
        ba += [b[g * r : (g + 1) * r], a[g * r : (g + 1) * r]]
    set_param(mixer, "in_proj_qkvz.weight", torch.cat(qkvz))
    set_param(mixer, "in_proj_ba.weight", torch.cat(ba))
    set_param(mixer, "conv1d.weight", t["lwb.w.conv_w"].t().contiguous().unsqueeze(1))
    set_param(mixer, "A_log", t["lwb.w.A_log"])
    set_param(mixer, "dt_bias", t["lwb.w.dt_bias"])
    set_param(mixer, "norm.weight", t["lwb.w.gnorm"])
    set_param(mixer, "out_proj.weight", t["lwb.w.out_proj"])


def gdn_reference(mixer, t, h, B, Q, past, Hk, Hv, Dk, Dv, K):
    P = F.linear(h, t["lwb.w.proj"].to(dev))  # (B, Q, proj) bf16, lwb's row order
    cd = 2 * Hk * Dk + Hv * Dv
    x = P[..., :cd]
    z = P[..., cd : cd + Hv * Dv].view(B, Q, Hv, Dv)
    bb = P[..., cd + Hv * Dv : cd + Hv * Dv + Hv].float()
    aa = P[..., cd + Hv * Dv + Hv :].float()
    cb = t["lwb.state.conv_before"].to(dev) if past else torch.zeros(B, K - 1, cd, device=dev, dtype=torch.bfloat16)
    win = torch.cat([cb, x], dim=1).float()
    w = t["lwb.w.conv_w"].to(dev).float()  # (K, conv_dim)
    acc = sum(win[:, k : k + Q] * w[k] for k in range(K))
    u = F.silu(acc).to(torch.bfloat16).float()
    conv_after = win[:, -(K - 1) :].to(torch.bfloat16)
    q = u[..., : Hk * Dk].view(B, Q, Hk, Dk)
    k = u[..., Hk * Dk : 2 * Hk * Dk].view(B, Q, Hk, Dk)
    v = u[..., 2 * Hk * Dk :].view(B, Q, Hv, Dv)
    q = q * torch.rsqrt((q * q).sum(-1, keepdim=True) + 1e-6) / math.sqrt(Dk)
    k = k * torch.rsqrt((k * k).sum(-1, keepdim=True) + 1e-6)
    r = Hv // Hk
    q, k = q.repeat_interleave(r, dim=2), k.repeat_interleave(r, dim=2)
    beta = torch.sigmoid(bb)
    g = -torch.exp(t["lwb.w.A_log"].to(dev)) * F.softplus(aa + t["lwb.w.dt_bias"].to(dev))
    S = t["lwb.state.rec_before"].to(dev).float() if past else torch.zeros(B, Hv, Dk, Dv, device=dev)
    outs = []
    for i in range(Q):
        S = S * torch.exp(g[:, i])[..., None, None]
        kv = torch.einsum("bhk,bhkv->bhv", k[:, i], S)
        delta = beta[:, i, :, None] * (v[:, i] - kv)
        S = S + k[:, i, :, :, None] * delta[:, :, None, :]
        outs.append(torch.einsum("bhk,bhkv->bhv", q[:, i], S))
    o = torch.stack(outs, 1).to(torch.bfloat16)  # (B, Q, Hv, Dv)
    on = mixer.norm(o.reshape(-1, Dv), z.reshape(-1, Dv)).view(B, Q, Hv * Dv)
    return mixer.out_proj(on), conv_after, S


def attention_reference(attn, t, h, B, Q, past, heads, kvh, D, rope, pos):
    q, gate = torch.chunk(attn.q_proj(h).view(B, Q, heads, 2 * D), 2, dim=-1)
    q = attn.q_norm(q).transpose(1, 2)
    k = attn.k_norm(attn.k_proj(h).view(B, Q, kvh, D)).transpose(1, 2)
    v = attn.v_proj(h).view(B, Q, kvh, D).transpose(1, 2)
    cos, sin = rope(h, pos)
    q, k = M.apply_rotary_pos_emb(q, k, cos, sin)
    if past:
        k = torch.cat([t["lwb.past_kv.k"].to(dev), k], dim=2)
        v = torch.cat([t["lwb.past_kv.v"].to(dev), v], dim=2)
    rep = heads // kvh
    k, v = k.repeat_interleave(rep, 1).float(), v.repeat_interleave(rep, 1).float()
    s = torch.einsum("bhqd,bhkd->bhqk", q.float(), k) / math.sqrt(D)
    qpos = past + torch.arange(Q, device=dev)
    s = s.masked_fill(torch.arange(past + Q, device=dev)[None, :] > qpos[:, None], float("-inf"))
    o = torch.einsum("bhqk,bhkd->bhqd", torch.softmax(s, -1), v).to(torch.bfloat16).transpose(1, 2)
    o = (o.float() * torch.sigmoid(gate.float())).to(torch.bfloat16).reshape(B, Q, heads * D)
    return attn.o_proj(o)


def load_moe(block, t):
    set_param(block.gate, "weight", t["lwb.w.gate"])
    w13 = t["lwb.w.w13"]  # (E, 2I, H): gate/up rows interleaved
    gate, up = w13[:, 0::2], w13[:, 1::2]
    names = dict(block.experts.named_parameters())
    if "gate_up_proj" in names:
        set_param(block.experts, "gate_up_proj", torch.cat([gate, up], dim=1))
        set_param(block.experts, "down_proj", t["lwb.w.w2"])
    else:
        for e in range(w13.shape[0]):
            set_param(block.experts[e], "gate_proj.weight", gate[e])
            set_param(block.experts[e], "up_proj.weight", up[e])
            set_param(block.experts[e], "down_proj.weight", t["lwb.w.w2"][e])
    if "lwb.w.s13" in t:
        s13 = t["lwb.w.s13"]
        set_param(block.shared_expert, "gate_proj.weight", s13[0::2])
        set_param(block.shared_expert, "up_proj.weight", s13[1::2])
        set_param(block.shared_expert, "down_proj.weight", t["lwb.w.s2"])
        set_param(block.shared_expert_gate, "weight", t["lwb.w.sg"].view(1, -1))


def main():
    dump = sys.argv[1]
    tol = float(sys.argv[sys.argv.index("--tol") + 1]) if "--tol" in sys.argv else 1e-2
    meta = json.load(open(f"{dump}/meta.json"))
    cfg = dict(meta["config"])
    cfg.pop("auto_map", None)
    run = meta["as_run"]
    cfg.update(num_attention_heads=run["heads"], num_key_value_heads=run["kv_heads"],
               linear_num_key_heads=run["k_heads"], linear_num_value_heads=run["v_heads"], num_experts=run["experts"],
               shared_expert_intermediate_size=run["shared_inter"])
    config = Qwen3NextConfig(**cfg)
    config._attn_implementation = "eager"
    prob = meta["problem"]
    B, Q, past = prob["batch_size"], prob["seq_len_q"], prob["seq_len_kv_cache"]
    H = cfg["hidden_size"]
    Hk, Hv, Dk, Dv = run["k_heads"], run["v_heads"], cfg["linear_key_head_dim"], cfg["linear_value_head_dim"]
    K = cfg["linear_conv_kernel_dim"]
    print(f"transformers Qwen3Next; {meta['run_type']} b={B} s={Q} past={past} state {meta['ssm_cache_dtype']}; "
          f"as run: {run}")
    for layer in meta["layers"]:
        t = load_file(f"{dump}/layer{layer}.safetensors")
        lay = M.Qwen3NextDecoderLayer(config, layer_idx=layer).to(dev, torch.bfloat16).eval()
        set_param(lay, "input_layernorm.weight", t["lwb.w.in_norm"].float() - 1)
        set_param(lay, "post_attention_layernorm.weight", t["lwb.w.post_norm"].float() - 1)
        res_in = (t["lwb.input.hidden_states"].float() + t["lwb.input.residual"].float()).to(torch.bfloat16)
        verdict(f"layer {layer}: residual add", rel_l2(t["lwb.mid.residual"], res_in), 1e-3)
        mid = t["lwb.mid.residual"].to(dev).view(B, Q, H)
        got = t["lwb.mixer.output"].to(dev).view(B, Q, H)
        with torch.no_grad():
            h = lay.input_layernorm(mid)
            if hasattr(lay, "linear_attn"):
                mixer = lay.linear_attn
                load_gdn(mixer, t, Hk, Hv, Dk, Dv)
                ref, conv_after, rec_after = gdn_reference(mixer, t, h, B, Q, past, Hk, Hv, Dk, Dv, K)
                verdict(f"layer {layer} Gated DeltaNet: output vs recurrence", rel_l2(got, ref), tol)
                verdict(f"layer {layer} Gated DeltaNet: conv state", rel_l2(t["lwb.state.conv_after"].to(dev), conv_after), tol)
                verdict(f"layer {layer} Gated DeltaNet: recurrent state", rel_l2(t["lwb.state.rec_after"].to(dev), rec_after), tol)
                if past == 0:
                    try:
                        hf = out0(mixer(hidden_states=h, cache_params=None, attention_mask=None))
                        verdict(f"layer {layer} Gated DeltaNet: output vs transformers", rel_l2(got, hf), tol)
                        print(f"      recurrence vs transformers rel_l2 {rel_l2(ref, hf):.3e}")
                    except Exception as e:
                        print(f"note  transformers' Qwen3NextGatedDeltaNet did not run here: {type(e).__name__}: {e}")
            else:
                attn = lay.self_attn
                heads, kvh, D = run["heads"], run["kv_heads"], cfg["head_dim"]
                qkv = t["lwb.w.qkv"]
                set_param(attn, "q_proj.weight", qkv[: 2 * heads * D])
                set_param(attn, "k_proj.weight", qkv[2 * heads * D : (2 * heads + kvh) * D])
                set_param(attn, "v_proj.weight", qkv[(2 * heads + kvh) * D :])
                set_param(attn, "o_proj.weight", t["lwb.w.o"])
                set_param(attn, "q_norm.weight", t["lwb.w.q_norm"])
                set_param(attn, "k_norm.weight", t["lwb.w.k_norm"])
                rope = M.Qwen3NextRotaryEmbedding(config).to(dev)
                pos = (past + torch.arange(Q, device=dev))[None].expand(B, Q)
                ref = attention_reference(attn, t, h, B, Q, past, heads, kvh, D, rope, pos)
                verdict(f"layer {layer} attention: output", rel_l2(got, ref), tol)
                if past == 0:
                    mask = torch.full((Q, Q), float("-inf"), device=dev).triu(1)[None, None].to(torch.bfloat16)
                    hf = out0(attn(hidden_states=h, position_embeddings=rope(h, pos), attention_mask=mask))
                    verdict(f"layer {layer} attention: output vs transformers", rel_l2(got, hf), tol)
            res2 = t["lwb.output.residual"].to(dev).view(B, Q, H)
            verdict(f"layer {layer}: second residual add",
                    rel_l2(res2, (mid.float() + got.float()).to(torch.bfloat16)), 1e-3)
            x = t["lwb.moe.input"].to(dev).view(B, Q, H)
            verdict(f"layer {layer}: post_attention_layernorm", rel_l2(x, lay.post_attention_layernorm(res2)), 1e-2)
            block = lay.mlp
            load_moe(block, t)
            gotm = t["lwb.output.hidden_states"].to(dev).view(B, Q, H)
            hf = out0(block(x))
            xf = x.reshape(-1, H)
            ids = t["lwb.moe.topk_ids"].to(dev).long()
            wts = t["lwb.moe.topk_weights"].to(dev).float()
            w13, w2 = t["lwb.w.w13"].to(dev), t["lwb.w.w2"].to(dev)
            routed = torch.zeros(xf.shape[0], H, device=dev)
            for e in ids.unique().tolist():
                tok, slot = (ids == e).nonzero(as_tuple=True)
                gu = (xf[tok] @ w13[e].t()).float()
                a = (F.silu(gu[:, 0::2]) * gu[:, 1::2]).to(torch.bfloat16)
                routed.index_add_(0, tok, wts[tok, slot, None] * (a @ w2[e].t()).float())
            if "lwb.w.s13" in t:
                sh = block.shared_expert(xf).float()
                sg = torch.sigmoid(F.linear(xf.float(), t["lwb.w.sg"].to(dev).float().view(1, -1)))
                routed = routed + sg * sh
            verdict(f"layer {layer} MoE: output under lwb's routing", rel_l2(gotm, routed.to(torch.bfloat16).view(B, Q, H)), tol)
            logits = F.linear(xf.float(), t["lwb.w.gate"].to(dev).float())
            lw = torch.softmax(logits.gather(1, ids), -1)
            verdict(f"layer {layer} MoE: routing weights", rel_l2(wts, lw), 1e-2)
            k = cfg["num_experts_per_tok"]
            # transformers' router rounds its logits to bf16 (a bf16 Linear) before the softmax, so
            # its choice can differ from the fp32 logits' where two experts are a bf16 step apart.
            hf_top = F.linear(xf, t["lwb.w.gate"].to(dev)).float().topk(k, dim=-1).indices
            hf_same = (hf_top.sort(-1).values == ids.sort(-1).values).all(-1)
            top = logits.topk(k + 1, dim=-1)
            same = (top.indices[:, :k].sort(-1).values == ids.sort(-1).values).all(-1)
            tie = (top.values[:, k - 1] - top.values[:, k]).abs() < 1e-3
            bad = (~same & ~tie).sum().item()
            print(f"      expert sets: {same.sum().item()} of {same.numel()} tokens equal, "
                  f"{(~same & tie).sum().item()} near ties, {bad} other")
            if bad:
                verdict(f"layer {layer} MoE: expert sets", 1.0, 0.0)
            if hf_same.all():
                verdict(f"layer {layer} MoE: output vs transformers", rel_l2(gotm, hf), tol)
            else:
                print(f"      transformers' block vs lwb rel_l2 {rel_l2(gotm, hf):.3e}: its bf16 router logits choose "
                      f"other experts for {(~hf_same).sum().item()} of {hf_same.numel()} tokens")
    print(f"{failures} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
