# check_nemotron.py: lwb's Nemotron-H layers (Mamba2, attention, MoE) against transformers'.
#
#   python3 test/gpu/check_nemotron.py DUMP_DIR [--tol 1e-2]
#
# DUMP_DIR comes from `lwb run --model <nemotron_h> ... --dump DUMP_DIR` (layers/nemotron.h says
# what it holds). For each layer, transformers' NemotronHBlock is built with lwb's weights; its
# input is lwb's residual after the layer's add (lwb.output.residual, which the layer normalises);
# its mixer's output is compared with lwb.output.hidden_states. The add itself is checked against
# input.hidden_states + input.residual.
#
# References:
#   - CTX without past tokens: transformers' own mixers (NemotronHMamba2Mixer's torch path with
#     dt unclamped as mamba_ssm and TensorRT-LLM run it, NemotronHAttention, NemotronHMoE).
#   - Mamba2 with a prior state (GEN, chunked prefill), and every final state: a torch recurrence
#     token by token in fp32 (the definition: S = exp(dt A) S + dt x B^T, y = S C + D x) using the
#     transformers module's projections and gated norm, from lwb's states before the forward;
#     its conv and recurrent states after the forward are compared with lwb's (lwb keeps them in
#     the cache's dtype, the reference rounds to it at the end only).
#   - Attention with past tokens: softmax attention over lwb's cached keys and values and the new
#     tokens' (projections from the transformers module), causal, no positional encoding.
#   - MoE: transformers' NemotronHMoE on the same input; the expert sets per token are compared
#     with lwb.moe.topk_ids (near ties, choice scores within 1e-3, reported, not failed).
# Pass: relative L2 <= tol for every output and state. Exit code 1 on any failure.
import json
import math
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import NemotronHConfig
from transformers.models.nemotron_h import modeling_nemotron_h as M

dev = "cuda"


def rel_l2(got, want):
    got, want = got.float(), want.float()
    return (torch.linalg.vector_norm(got - want) / torch.linalg.vector_norm(want).clamp_min(1e-30)).item()


failures = 0


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


def mamba_reference(mixer, cfg, t, h, B, Q, past):
    """Token-by-token Mamba2 from lwb's states before the forward; returns (out, conv_after, ssm_after)."""
    H = cfg["mamba_num_heads"]
    P = cfg["mamba_head_dim"]
    G = cfg["n_groups"]
    N = cfg["ssm_state_size"]
    d_inner = H * P
    conv_dim = d_inner + 2 * G * N
    K = cfg["conv_kernel"]
    zxbcdt = mixer.in_proj(h)  # (B, Q, proj) bf16
    z = zxbcdt[..., :d_inner]
    xbc = zxbcdt[..., d_inner : d_inner + conv_dim]
    dt_raw = zxbcdt[..., d_inner + conv_dim :]
    conv_before = t["lwb.state.conv_before"].to(dev)  # (B, K-1, conv_dim)
    if past == 0:
        conv_before = torch.zeros_like(conv_before)
    window = torch.cat([conv_before, xbc], dim=1).float()  # (B, K-1+Q, conv_dim)
    w = mixer.conv1d.weight.float().squeeze(1)  # (conv_dim, K)
    acc = mixer.conv1d.bias.float().view(1, 1, -1).expand(B, Q, conv_dim).clone()
    for k in range(K):
        acc += window[:, k : k + Q, :] * w[:, k].view(1, 1, -1)
    u = F.silu(acc).to(torch.bfloat16).float()
    conv_after = window[:, -(K - 1) :, :].to(torch.bfloat16)
    x = u[..., :d_inner].view(B, Q, H, P)
    Bm = u[..., d_inner : d_inner + G * N].view(B, Q, G, N)
    Cm = u[..., d_inner + G * N :].view(B, Q, G, N)
    rep = H // G
    Bh = Bm.repeat_interleave(rep, dim=2)
    Ch = Cm.repeat_interleave(rep, dim=2)
    dt = F.softplus(dt_raw.float() + mixer.dt_bias.float())  # (B, Q, H)
    A = -torch.exp(mixer.A_log.float())
    S = t["lwb.state.ssm_before"].to(dev).float() if past > 0 else torch.zeros(B, H, P, N, device=dev)
    ys = []
    for i in range(Q):
        dA = torch.exp(dt[:, i] * A)  # (B, H)
        S = S * dA[..., None, None] + (dt[:, i, :, None] * x[:, i])[..., None] * Bh[:, i, :, None, :]
        ys.append(torch.einsum("bhpn,bhn->bhp", S, Ch[:, i]) + mixer.D.float()[None, :, None] * x[:, i])
    y = torch.stack(ys, dim=1).reshape(B, Q, d_inner).to(torch.bfloat16)
    out = mixer.out_proj(mixer.norm(y, z))
    return out, conv_after, S


def attention_reference(mixer, t, h, B, Q, past, heads, kv_heads, D):
    q = mixer.q_proj(h).view(B, Q, heads, D).transpose(1, 2)
    k = mixer.k_proj(h).view(B, Q, kv_heads, D).transpose(1, 2)
    v = mixer.v_proj(h).view(B, Q, kv_heads, D).transpose(1, 2)
    if past:
        k = torch.cat([t["lwb.past_kv.k"].to(dev), k], dim=2)
        v = torch.cat([t["lwb.past_kv.v"].to(dev), v], dim=2)
    rep = heads // kv_heads
    k = k.repeat_interleave(rep, dim=1).float()
    v = v.repeat_interleave(rep, dim=1).float()
    s = torch.einsum("bhqd,bhkd->bhqk", q.float(), k) / math.sqrt(D)
    qpos = past + torch.arange(Q, device=dev)
    kpos = torch.arange(past + Q, device=dev)
    s = s.masked_fill(kpos[None, :] > qpos[:, None], float("-inf"))
    o = torch.einsum("bhqk,bhkd->bhqd", torch.softmax(s, dim=-1), v).to(torch.bfloat16)
    return mixer.o_proj(o.transpose(1, 2).reshape(B, Q, heads * D))


def load_moe(mixer, t):
    set_param(mixer.gate, "weight", t["lwb.w.gate"])
    set_param(mixer.gate, "e_score_correction_bias", t["lwb.w.bias"])
    names = dict(mixer.experts.named_parameters())
    up, down = t["lwb.w.up"], t["lwb.w.down"]
    if "up_proj" in names:  # experts stored as (E, I, H) / (E, H, I) tensors
        set_param(mixer.experts, "up_proj", up)
        set_param(mixer.experts, "down_proj", down)
    else:  # a list of expert MLPs
        for e in range(up.shape[0]):
            set_param(mixer.experts[e], "up_proj.weight", up[e])
            set_param(mixer.experts[e], "down_proj.weight", down[e])
    if "lwb.w.s_up" in t:
        set_param(mixer.shared_experts, "up_proj.weight", t["lwb.w.s_up"])
        set_param(mixer.shared_experts, "down_proj.weight", t["lwb.w.s_down"])


def main():
    dump = sys.argv[1]
    tol = float(sys.argv[sys.argv.index("--tol") + 1]) if "--tol" in sys.argv else 1e-2
    meta = json.load(open(f"{dump}/meta.json"))
    cfg = dict(meta["config"])
    cfg.pop("auto_map", None)
    config = NemotronHConfig(**cfg)
    config._attn_implementation = "eager"
    config.use_mamba_kernels = False
    config.time_step_min = 0.0  # mamba_ssm and TensorRT-LLM leave dt unclamped
    prob = meta["problem"]
    B, Q, past = prob["batch_size"], prob["seq_len_q"], prob["seq_len_kv_cache"]
    pattern = cfg["hybrid_override_pattern"]
    print(f"transformers NemotronH; {meta['run_type']} b={B} s={Q} past={past} state {meta['ssm_cache_dtype']}")
    torch.manual_seed(0)
    for layer in meta["layers"]:
        t = load_file(f"{dump}/layer{layer}.safetensors")
        kind = pattern[layer]
        H = cfg["hidden_size"]
        block = M.NemotronHBlock(config, layer_idx=layer).to(dev, torch.bfloat16).eval()
        set_param(block, "norm.weight", t["lwb.w.norm"])
        res_in = t["lwb.input.hidden_states"].float() + t["lwb.input.residual"].float()
        verdict(f"layer {layer}: residual add", rel_l2(t["lwb.output.residual"], res_in.to(torch.bfloat16)), 1e-3)
        res = t["lwb.output.residual"].to(dev).view(B, Q, H)
        got = t["lwb.output.hidden_states"].to(dev).view(B, Q, H)
        with torch.no_grad():
            h = block.norm(res)
            mixer = block.mixer
            if kind == "M":
                set_param(mixer, "in_proj.weight", t["lwb.w.in_proj"])
                set_param(mixer, "conv1d.weight", t["lwb.w.conv_w"].t().contiguous())
                set_param(mixer, "conv1d.bias", t["lwb.w.conv_b"])
                set_param(mixer, "dt_bias", t["lwb.w.dt_bias"])
                set_param(mixer, "A_log", t["lwb.w.A_log"])
                set_param(mixer, "D", t["lwb.w.D"])
                set_param(mixer, "norm.weight", t["lwb.w.gnorm"])
                set_param(mixer, "out_proj.weight", t["lwb.w.out_proj"])
                if hasattr(mixer, "time_step_limit"):
                    mixer.time_step_limit = (0.0, float("inf"))
                if hasattr(mixer, "time_step_min"):
                    mixer.time_step_min = 0.0
                ref, conv_after, ssm_after = mamba_reference(mixer, cfg, t, h, B, Q, past)
                verdict(f"layer {layer} Mamba2: output vs recurrence", rel_l2(got, ref), tol)
                # The cached inputs are in_proj outputs: two GEMMs' bf16 roundings apart (~2^-9 each).
                verdict(f"layer {layer} Mamba2: conv state", rel_l2(t["lwb.state.conv_after"].to(dev), conv_after), tol)
                verdict(f"layer {layer} Mamba2: recurrent state", rel_l2(t["lwb.state.ssm_after"].to(dev), ssm_after), tol)
                if past == 0 and Q <= 2048:
                    try:
                        hf = mixer(h, cache_params=None, attention_mask=None)
                        hf = hf[0] if isinstance(hf, tuple) else hf
                        verdict(f"layer {layer} Mamba2: output vs transformers", rel_l2(got, hf), tol)
                        print(f"      recurrence vs transformers rel_l2 {rel_l2(ref, hf):.3e}")
                    except Exception as e:  # report, the recurrence stays the reference
                        print(f"note  transformers' Mamba2 mixer did not run here: {type(e).__name__}: {e}")
            elif kind == "*":
                heads, kvh, D = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
                qkv = t["lwb.w.qkv"]
                set_param(mixer, "q_proj.weight", qkv[: heads * D])
                set_param(mixer, "k_proj.weight", qkv[heads * D : (heads + kvh) * D])
                set_param(mixer, "v_proj.weight", qkv[(heads + kvh) * D :])
                set_param(mixer, "o_proj.weight", t["lwb.w.o"])
                ref = attention_reference(mixer, t, h, B, Q, past, heads, kvh, D)
                verdict(f"layer {layer} attention: output", rel_l2(got, ref), tol)
                if past == 0:  # transformers' own attention, given the causal mask its model would build
                    mask = torch.full((Q, Q), float("-inf"), device=dev).triu(1)[None, None].to(torch.bfloat16)
                    hf = mixer(hidden_states=h, attention_mask=mask)
                    hf = hf[0] if isinstance(hf, tuple) else hf
                    verdict(f"layer {layer} attention: output vs transformers", rel_l2(got, hf), tol)
            else:
                load_moe(mixer, t)
                hf = mixer(h)
                hf = hf[0] if isinstance(hf, tuple) else hf
                # Under lwb's routing (a flipped near tie moves a token's output by O(1)): the chosen
                # experts' relu2 MLPs in bf16 products, weighted in fp32, plus transformers' shared expert.
                x = h.reshape(-1, H)
                ids = t["lwb.moe.topk_ids"].to(dev).long()
                wts = t["lwb.moe.topk_weights"].to(dev).float()
                up, down = t["lwb.w.up"].to(dev), t["lwb.w.down"].to(dev)
                routed = torch.zeros(x.shape[0], H, device=dev)
                for e in ids.unique().tolist():
                    tok, slot = (ids == e).nonzero(as_tuple=True)
                    a = (F.relu((x[tok] @ up[e].t()).float()) ** 2).to(torch.bfloat16)
                    routed.index_add_(0, tok, wts[tok, slot, None] * (a @ down[e].t()).float())
                shared = mixer.shared_experts(x).float() if "lwb.w.s_up" in t else 0
                ref = (routed + shared).to(torch.bfloat16).view(B, Q, H)
                verdict(f"layer {layer} MoE: output under lwb's routing", rel_l2(got, ref), tol)
                # The routing weights: sigmoid scores of the chosen experts, normalised, scaled.
                lg = F.linear(x.float(), t["lwb.w.gate"].to(dev).float())
                sc = torch.sigmoid(lg).gather(1, ids)
                want_w = sc / (sc.sum(-1, keepdim=True) + 1e-20) * cfg["routed_scaling_factor"]
                verdict(f"layer {layer} MoE: routing weights", rel_l2(wts, want_w), 1e-3)
                # The expert sets: transformers' router on the same input.
                logits = F.linear(h.reshape(-1, H).float(), t["lwb.w.gate"].to(dev).float())
                scores = torch.sigmoid(logits) + t["lwb.w.bias"].to(dev).float()
                k = cfg["num_experts_per_tok"]
                top = scores.topk(k + 1, dim=-1)
                want = top.indices[:, :k].sort(-1).values.cpu()
                gotids = t["lwb.moe.topk_ids"].long().sort(-1).values
                same = (want == gotids).all(-1)
                tie = (top.values[:, k - 1] - top.values[:, k]).abs().cpu() < 1e-3
                bad = (~same & ~tie).sum().item()
                if same.all():
                    verdict(f"layer {layer} MoE: output vs transformers", rel_l2(got, hf), tol)
                else:
                    print(f"      transformers' NemotronHMoE vs lwb rel_l2 {rel_l2(got, hf):.3e} (near ties chosen apart)")
                print(f"      expert sets: {same.sum().item()} of {same.numel()} tokens equal, "
                      f"{(~same & tie).sum().item()} near ties, {bad} other")
                failures_add = bad > 0
                if failures_add:
                    verdict(f"layer {layer} MoE: expert sets", 1.0, 0.0)
    print(f"{failures} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
