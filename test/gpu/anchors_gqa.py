# anchors_gqa.py: torch's scaled_dot_product_attention on the shapes test/gpu/check_gqa.h times,
# one line per backend (flash, cuDNN, memory-efficient), for comparison with lwb's gqa kernels.
#
#   python3 test/gpu/anchors_gqa.py [ctx] [gen]     (default: both)
#
# Keys and values are dense (torch has no paged cache); grouped heads go through enable_gqa=True
# where the backend takes it, else through repeat_interleave (the line says which). Causal masks
# are bottom-right aligned (query i of a chunk after `past` cached keys sees keys 0 .. past + i):
# is_causal=True when there is no past, torch.nn.attention.bias.causal_lower_right otherwise.
# Timing as lwb's: CUDA events around `reps` launches each after an L2 flush, less the flushes
# alone, median of the rounds. Prints `anchor <name> <us> us  <TFLOP/s>`.
import sys
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

dev = torch.device("cuda")
torch.manual_seed(0)
flush = torch.empty(4 * 50 * 2**20, dtype=torch.uint8, device=dev)
BACKENDS = [("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION),
            ("efficient", SDPBackend.EFFICIENT_ATTENTION)]


def flushed_ms(fn, reps):
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for i in range(reps):
        flush.fill_(i & 0xFF)
        if fn is not None:
            fn()
    b.record()
    b.synchronize()
    return a.elapsed_time(b)


def time_us(fn, reps=10, rounds=5):
    fn()
    torch.cuda.synchronize()
    samples = sorted((flushed_ms(fn, reps) - flushed_ms(None, reps)) * 1e3 / reps for _ in range(rounds))
    return samples[len(samples) // 2]


def line(name, us, flops):
    print(f"anchor {name:<60} {us:9.1f} us  {flops / us * 1e-6:7.1f} TFLOP/s", flush=True)


def pairs(qlen, past):
    return qlen * past + qlen * (qlen + 1) / 2


def attend(tag, batch, qh, kvh, hd, qlen, past, causal):
    """SDPA of (batch, qh, qlen, hd) queries over (batch, kvh, past + qlen, hd) keys and values."""
    kv = past + qlen
    q = torch.randn(batch, qh, qlen, hd, device=dev, dtype=torch.bfloat16)
    k = torch.randn(batch, kvh, kv, hd, device=dev, dtype=torch.bfloat16)
    v = torch.randn(batch, kvh, kv, hd, device=dev, dtype=torch.bfloat16)
    mask, is_causal = None, False
    if causal and past == 0:
        is_causal = True
    elif causal:
        from torch.nn.attention.bias import causal_lower_right
        mask = causal_lower_right(qlen, kv)
    flops = 4.0 * qh * hd * batch * (pairs(qlen, past) if causal else qlen * kv)
    for bname, backend in BACKENDS:
        done = False
        for how in ("enable_gqa", "repeat_interleave"):
            kk, vv, extra = k, v, {"enable_gqa": True}
            if how == "repeat_interleave":
                kk, vv, extra = k.repeat_interleave(qh // kvh, dim=1), v.repeat_interleave(qh // kvh, dim=1), {}
            fn = lambda: F.scaled_dot_product_attention(q, kk, vv, attn_mask=mask, is_causal=is_causal, **extra)
            try:
                with sdpa_kernel([backend]):
                    fn()
                    torch.cuda.synchronize()
                    us = time_us(fn)
            except Exception as e:  # the next form, or report the backend's refusal below
                err = str(e).splitlines()[0][:100] if str(e) else type(e).__name__
                continue
            line(f"sdpa {bname} ({how}) {tag}", us, flops)
            done = True
            break
        if not done:
            print(f"anchor sdpa {bname} {tag}: not available: {err}", flush=True)
        del kk, vv
    del q, k, v
    torch.cuda.empty_cache()


def ctx():
    attend("ctx nemotron b=1 q=8193 past=0 (32/2 x 128)", 1, 32, 2, 128, 8193, 0, True)
    attend("ctx qwen/tp2 b=4 q=8193 past=0 (8/1 x 256)", 4, 8, 1, 256, 8193, 0, True)
    attend("ctx nemotron b=1 q=1000 past=4096 (32/2 x 128)", 1, 32, 2, 128, 1000, 4096, True)
    attend("ctx qwen/tp2 b=4 q=1000 past=4096 (8/1 x 256)", 4, 8, 1, 256, 1000, 4096, True)


def gen():
    # One new token: no mask (it sees the whole cache); MTP rows are causal among themselves.
    attend("gen nemotron b=128 q=1 past=8193 (32/2 x 128)", 128, 32, 2, 128, 1, 8193, False)
    attend("gen qwen/tp2 b=512 q=1 past=8193 (8/1 x 256)", 512, 8, 1, 256, 1, 8193, False)
    attend("gen nemotron b=128 q=2 past=8193 (32/2 x 128)", 128, 32, 2, 128, 2, 8193, True)


if __name__ == "__main__":
    what = sys.argv[1:] or ["ctx", "gen"]
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}", flush=True)
    if "ctx" in what:
        ctx()
    if "gen" in what:
        gen()
