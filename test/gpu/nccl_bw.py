# nccl_bw.py: NCCL's own bandwidth on this machine through torch.distributed, for comparison
# with lwb's MoE exchange: all-reduce, all-gather, reduce-scatter and all-to-all of bf16 tensors
# at the sizes DeepSeek's layers move (128 and 8192 tokens of 7168 bf16 values) and a large one.
# Bus bandwidth as nccl-tests defines it: all-reduce algbw x 2(n-1)/n, the others algbw x (n-1)/n,
# algbw = bytes per rank's full buffer / time.
#   python3 -m torch.distributed.run --standalone --nproc_per_node N test/gpu/nccl_bw.py
import os

import torch
import torch.distributed as dist


def timed(fn, reps=20):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    dist.barrier()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(reps):
        fn()
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b) / reps * 1e-3


def main():
    rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl")
    n = dist.get_world_size()
    for tokens in (128, 8192, 65536):
        numel = tokens * 7168  # the whole buffer (all ranks' rows)
        nbytes = numel * 2
        x = torch.randn(numel, device="cuda", dtype=torch.bfloat16)
        y = torch.empty_like(x)
        part = torch.empty(numel // n, device="cuda", dtype=torch.bfloat16)
        res = {}
        res["all_reduce"] = (timed(lambda: dist.all_reduce(x)), 2 * (n - 1) / n)
        res["all_gather"] = (timed(lambda: dist.all_gather_into_tensor(y, part)), (n - 1) / n)
        res["reduce_scatter"] = (timed(lambda: dist.reduce_scatter_tensor(part, x)), (n - 1) / n)
        res["all_to_all"] = (timed(lambda: dist.all_to_all_single(y, x)), (n - 1) / n)
        if rank == 0:
            for k, (t, f) in res.items():
                algbw = nbytes / t / 1e9
                print(f"{k:15s} ranks {n}  {nbytes / 1e6:9.1f} MB  {t * 1e6:9.1f} us  algbw {algbw:7.1f} GB/s  "
                      f"busbw {algbw * f:7.1f} GB/s", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
