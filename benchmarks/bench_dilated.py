"""Dilated attention benchmark: overhead over bare kernels, speed-up over dense
attention, and memory at scale. Writes results/benchmarks/dilated_attention.csv.

    python benchmarks/bench_dilated.py [--quick]

1. overhead: at N = 65,536 the whole forward (and forward+backward) against only the kernel
   calls it makes, on blocks gathered beforehand;
2. speed-up: dilated vs dense causal SDPA at N = 32,768, beside the FLOP ratio of the two, and
   the bare kernel calls vs dense (the ceiling this kernel allows with zero overhead);
3. scale: forward+backward at N = 128K .. 1M, peak RSS of a fresh process per length.
Timings interleave the compared runs and report medians, so a busy machine biases both alike.
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from longnet import dilated_attention
from longnet.backends import get_backend
from longnet.block_sparse import Gatherer, plan_chunks
from longnet.dilated_attention import dilated_plan
from longnet.flops import dense_attention_flops, dilated_attention_flops
from longnet.io import write_csv
from longnet.provenance import provenance
from longnet.schedule import DilatedSchedule
from longnet.timing import time_interleaved_ms

SEGMENTS, RATES, HEADS, DIM = [1024, 2048, 4096, 8192], [1, 2, 4, 8], 8, 64
OUT = Path(__file__).resolve().parent.parent / "results" / "benchmarks" / "dilated_attention.csv"


def interleaved_medians(functions: dict, repeats: int) -> dict:
    """{name: median seconds} of the functions timed in turns (longnet.timing)."""
    stats = time_interleaved_ms(functions, warmup=1, repeats=repeats)
    return {name: stat["median_ms"] / 1e3 for name, stat in stats.items()}


def qkv(n, requires_grad=False):
    return [torch.randn(1, n, HEADS, DIM, requires_grad=requires_grad) for _ in range(3)]


def gathered_blocks(q, k, v):
    """The blocks the dilated forward hands the kernel, gathered beforehand: [(q, k, v, causal)]."""
    n = q.shape[1]
    plan = dilated_plan(n, HEADS, DilatedSchedule(SEGMENTS, RATES), True, q.device)
    gather = Gatherer(1)
    return [[gather(0, x.reshape(1, n * HEADS, DIM), piece.gather_rows).clone() for x in (q, k, v)]
            for _, piece in plan_chunks(plan, 1, q.device)]


def overhead(n: int, repeats: int) -> list[dict]:
    q, k, v = qkv(n)
    backend = get_backend("auto", q.device, q.dtype, DIM)
    blocks = gathered_blocks(q, k, v)  # the same kernel calls the forward makes
    scale = DIM ** -0.5
    outs = [backend.forward(*b, True, scale) for b in blocks]
    douts = [torch.randn_like(o) for o, _ in outs]

    def kernels_forward():
        for b in blocks:
            backend.forward(*b, True, scale)

    def kernels_forward_backward():
        for b, dout in zip(blocks, douts):
            o, l = backend.forward(*b, True, scale)
            backend.backward(dout, *b, o, l, True, scale)

    def dilated_forward():
        with torch.no_grad():
            dilated_attention(q, k, v, SEGMENTS, RATES)

    qg, kg, vg = (x.clone().requires_grad_() for x in (q, k, v))
    dout_full = torch.randn_like(q)

    def dilated_forward_backward():
        torch.autograd.grad(dilated_attention(qg, kg, vg, SEGMENTS, RATES), (qg, kg, vg), dout_full)

    t = interleaved_medians({"kf": kernels_forward, "df": dilated_forward, "kfb": kernels_forward_backward,
                             "dfb": dilated_forward_backward}, repeats)
    flops = dilated_attention_flops(n, SEGMENTS, RATES, HEADS, DIM)
    return [dict(benchmark="overhead", seq_len=n, mode="fwd", ours_s=t["df"], reference_s=t["kf"],
                 ratio=t["df"] / t["kf"], target="<= 1.15", gflops_per_s=flops / t["df"] / 1e9),
            dict(benchmark="overhead", seq_len=n, mode="fwd+bwd", ours_s=t["dfb"], reference_s=t["kfb"],
                 ratio=t["dfb"] / t["kfb"], target="<= 1.3", gflops_per_s=3.5 * flops / t["dfb"] / 1e9)]


def speedup_vs_dense(n: int, repeats: int) -> list[dict]:
    """Dilated vs dense causal SDPA; beside it, the bare kernel calls alone against dense: the
    speed-up this kernel would allow with zero gather/merge overhead."""
    q, k, v = qkv(n)
    dense_q, dense_k, dense_v = (x.transpose(1, 2) for x in (q, k, v))
    backend = get_backend("auto", q.device, q.dtype, DIM)
    blocks = gathered_blocks(q, k, v)

    def dense():
        torch.nn.functional.scaled_dot_product_attention(dense_q, dense_k, dense_v, is_causal=True)

    def dilated():
        with torch.no_grad():
            dilated_attention(q, k, v, SEGMENTS, RATES)

    def kernels():
        for b in blocks:
            backend.forward(*b, True, None)

    t = interleaved_medians({"dense": dense, "dilated": dilated, "kernels": kernels}, repeats)
    flops = dilated_attention_flops(n, SEGMENTS, RATES, HEADS, DIM)
    flop_ratio = dense_attention_flops(n, HEADS, DIM) / flops
    return [dict(benchmark=name, seq_len=n, mode="fwd", ours_s=t[key], reference_s=t["dense"],
                 ratio=t["dense"] / t[key], target=target, flop_ratio=flop_ratio, gflops_per_s=flops / t[key] / 1e9)
            for name, key, target in (("speedup_vs_dense_causal", "dilated", f">= {0.8 * flop_ratio:.1f}"),
                                      ("speedup_vs_dense_causal_kernels_only", "kernels", "(ceiling)"))]


def one_forward_backward(n: int) -> None:
    """Run in a fresh process: forward+backward at n, print wall time and peak RSS."""
    q, k, v = qkv(n, requires_grad=True)
    start = time.perf_counter()
    dilated_attention(q, k, v, SEGMENTS, RATES).sum().backward()
    elapsed = time.perf_counter() - start
    print(elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def scale(lengths) -> list[dict]:
    rows = []
    for n in lengths:
        result = subprocess.run([sys.executable, __file__, "--one", str(n)], capture_output=True, text=True,
                                check=True)
        elapsed, peak = result.stdout.split()
        rows.append(dict(benchmark="scale", seq_len=n, mode="fwd+bwd", ours_s=float(elapsed),
                         peak_rss_bytes=int(peak), peak_rss_bytes_per_token=int(peak) / n))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the script runs")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return one_forward_backward(args.one)
    if args.quick:
        rows = overhead(8192, 2) + speedup_vs_dense(8192, 2) + scale([16384, 32768])
    else:
        rows = overhead(65536, args.repeats) + speedup_vs_dense(32768, args.repeats)
        rows += scale([131072, 262144, 524288, 1048576])
    table = pd.DataFrame(rows).assign(threads=torch.get_num_threads(), **provenance(
        dict(segments=SEGMENTS, rates=RATES, heads=HEADS, dim=DIM, quick=args.quick)))
    print(table.drop(columns=["git_commit", "torch_version", "date", "config_hash"]).to_string())
    OUT.parent.mkdir(parents=True, exist_ok=True)
    write_csv(table, OUT)


if __name__ == "__main__":
    main()
