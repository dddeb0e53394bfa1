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


F8 = torch.float8_e4m3fn


def fp8_operand(rows, k, spread):
    """Random e4m3 values of the whole code range times `spread`, and their bf16 values."""
    x = ((torch.rand(rows, k, device=dev) * 2 - 1) * 448).to(F8)
    return x


def scaled_mm_modes(m, n, k):
    """The scalings torch._scaled_mm may take on this device, finest first: DeepSeek's blocks
    (1x128 for A, 128x128 for B), per row and column, one per tensor."""
    one = torch.ones((), device=dev)
    kb, nb = k // 128, (n + 127) // 128
    sa = torch.ones(kb, m, device=dev).t()  # (m, K/128), outer-dimension-major
    for sb_name, sb in [("B scales (K/128, N/128)", torch.ones(kb, nb, device=dev)),
                        ("B scales (K/128, N/128) column-major", torch.ones(nb, kb, device=dev).t()),
                        ("B scales (N/128, K/128)", torch.ones(nb, kb, device=dev)),
                        ("B scales (N/128, K/128) column-major", torch.ones(kb, nb, device=dev).t())]:
        yield f"blockwise 1x128/128x128, {sb_name}", sa, sb
    yield "rowwise", torch.ones(m, 1, device=dev), torch.ones(1, n, device=dev)
    yield "tensorwise", one, one


def scaled_mm(name, m, n, k):
    """The finest-scaled fp8 product torch offers here, on the shape lwb's fp8 GEMM times: DeepSeek's
    block-wise recipe through torch.nn.functional.scaled_mm (scales outer-dimension-major), else
    torch._scaled_mm's coarser scalings."""
    a, b = fp8_operand(m, k, 1), fp8_operand(n, k, 1)
    errors = []
    F = torch.nn.functional
    if hasattr(F, "scaled_mm") and hasattr(F, "ScalingType"):
        S = F.ScalingType
        sa = torch.ones(k // 128, m, device=dev).t()
        sb = torch.ones((n + 127) // 128, k // 128, device=dev).t()
        try:
            f = lambda: F.scaled_mm(a, b.t(), sa, S.BlockWise1x128, sb, S.BlockWise128x128, output_dtype=torch.bfloat16)
            f()
            torch.cuda.synchronize()
            line(f"F.scaled_mm blockwise 1x128/128x128 {name} {m}x{n}x{k}", time_us(f), 2.0 * m * n * k)
            return
        except Exception as e:  # the coarser scalings below
            errors.append(f"F.scaled_mm blockwise: {str(e).splitlines()[0][:120]}")
    for mode, sa, sb in scaled_mm_modes(m, n, k):
        try:
            f = lambda: torch._scaled_mm(a, b.t(), scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16)
            f()
            torch.cuda.synchronize()
        except Exception as e:  # the next, coarser scaling
            errors.append(f"{mode}: {str(e).splitlines()[0][:120]}")
            continue
        line(f"torch._scaled_mm {mode} {name} {m}x{n}x{k}", time_us(f), 2.0 * m * n * k)
        if errors:
            print("  (not offered here: " + "; ".join(errors) + ")", flush=True)
        return
    print(f"anchor torch._scaled_mm {name}: failed: {errors}", flush=True)


def scaled_grouped(name, experts, rows, n, k):
    x = fp8_operand(experts * rows, k, 1)
    w = torch.stack([fp8_operand(n, k, 1) for _ in range(experts)])
    offs = torch.arange(1, experts + 1, device=dev, dtype=torch.int32) * rows
    sa, sb = torch.ones(experts * rows, device=dev), torch.ones(experts, n, device=dev)
    try:
        f = lambda: torch._scaled_grouped_mm(x, w.transpose(-2, -1), sa, sb, offs=offs, out_dtype=torch.bfloat16)
        us = time_us(f)
        line(f"torch._scaled_grouped_mm rowwise {name} {experts}x{rows} rows {n}x{k}", us, 2.0 * experts * rows * n * k)
    except Exception as e:  # report, do not hide
        print(f"anchor torch._scaled_grouped_mm {name}: failed: {str(e).splitlines()[0][:200]}", flush=True)
    del x, w


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
if "fp8" in which:
    for name, m, n, k in [("fused_a", 128, 2112, 7168), ("q_b", 8192, 24576, 1536), ("o_proj", 8192, 7168, 16384),
                          ("square", 8192, 8192, 8192), ("fused_a", 8192, 2112, 7168)]:
        scaled_mm(name, m, n, k)
    for name, e, r, n, k in [("experts13", 256, 4, 4096, 7168), ("experts2", 256, 4, 7168, 2048),
                             ("experts13", 256, 256, 4096, 7168)]:
        scaled_grouped(name, e, r, n, k)
