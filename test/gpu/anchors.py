# anchors.py: torch's best ops on the shapes lwb's checks time, for side-by-side comparison.
# cuBLAS through torch.matmul, CUTLASS grouped GEMM through torch._grouped_mm. L2 is flushed
# before every timed launch and not charged to it; the median is printed (us), like test/gpu/check.c.
import sys
import torch

torch.manual_seed(0)
dev = torch.device("cuda")
flush = torch.empty(4 * 50 * 2**20, dtype=torch.uint8, device=dev)


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
    """Per-launch time beyond the L2 flushes (lwb's method: flushes then the work, less the flushes
    alone), median of the rounds."""
    fn()
    samples = sorted((flushed_ms(fn, reps) - flushed_ms(None, reps)) * 1e3 / reps for _ in range(rounds))
    return samples[len(samples) // 2]


def line(what, us, flops):
    print(f"anchor {what:<46} {us:9.1f} us  {flops / us * 1e-6:7.1f} TFLOP/s", flush=True)


def gemm(name, m, n, k):
    a = torch.rand(m, k, device=dev, dtype=torch.bfloat16) * 2 - 1
    b = (torch.rand(n, k, device=dev, dtype=torch.bfloat16) * 2 - 1) / k**0.5
    line(f"torch.matmul {name} {m}x{n}x{k}", time_us(lambda: a @ b.t()), 2.0 * m * n * k)


def router(m, n, k):
    # The router's product with fp32 logits, where this torch offers it.
    a = torch.rand(m, k, device=dev, dtype=torch.bfloat16) * 2 - 1
    b = (torch.rand(n, k, device=dev, dtype=torch.bfloat16) * 2 - 1) / k**0.5
    try:
        us = time_us(lambda: torch.mm(a, b.t(), out_dtype=torch.float32))
        line(f"torch.mm fp32-out gate {m}x{n}x{k}", us, 2.0 * m * n * k)
    except Exception as e:  # report, do not hide
        print(f"anchor torch.mm fp32-out gate: failed: {e}", flush=True)
    one = torch.empty(1, device=dev, dtype=torch.bfloat16)
    line("fill of one element (launch cost)", time_us(lambda: one.fill_(1.0)), 0)


def grouped(name, experts, rows, n, k):
    x = torch.rand(experts * rows, k, device=dev, dtype=torch.bfloat16) * 2 - 1
    w = (torch.rand(experts, n, k, device=dev, dtype=torch.bfloat16) * 2 - 1) / k**0.5
    offs = torch.arange(1, experts + 1, device=dev, dtype=torch.int32) * rows
    wt = w.transpose(-2, -1)
    try:
        us = time_us(lambda: torch._grouped_mm(x, wt, offs=offs), reps=10)
        line(f"torch._grouped_mm {name} {experts}x{rows} rows {n}x{k}", us, 2.0 * experts * rows * n * k)
    except Exception as e:  # report, do not hide
        print(f"anchor torch._grouped_mm {name} {experts}x{rows}: failed: {e}", flush=True)
    del x, w, wt


which = sys.argv[1:] or ["gemm"]
print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}", flush=True)
if "gemm" in which:
    for name, m, n, k in [("fused_a", 128, 2112, 7168), ("q_b", 128, 24576, 1536), ("o_proj", 128, 7168, 16384),
                          ("gate", 128, 256, 7168), ("shared13", 128, 4096, 7168), ("shared2", 128, 7168, 2048),
                          ("fused_a", 8193, 2112, 7168), ("q_b", 8193, 24576, 1536), ("kv_b", 8193, 32768, 512),
                          ("o_proj", 8193, 7168, 16384), ("dense13", 8192, 36864, 7168),
                          ("square", 8192, 8192, 8192)]:
        gemm(name, m, n, k)
    router(128, 256, 7168)
    for name, e, r, n, k in [("experts13", 256, 4, 4096, 7168), ("experts2", 256, 4, 7168, 2048),
                             ("experts13", 256, 256, 4096, 7168), ("experts2", 256, 256, 7168, 2048)]:
        grouped(name, e, r, n, k)
