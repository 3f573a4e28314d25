"""Sequence-parallel dilated attention benchmark (longnet.sequence_parallel), one process per
rank under torchrun; rank 0 writes the CSV (one thread per rank on CPU):

    python -m torch.distributed.run --nproc-per-node 2 benchmarks/sequence_parallel.py \
        --seq-lens 8192 16384 --out results/work/sp_p2.csv

Per N: the slowest rank's median latency, bytes communicated per rank, and the error against the
single-process `longnet.dilated_attention`. `--measure-link` also fits the all-gather's bandwidth
and latency on this group (`measure_link`; how the cost model's gloo_loopback link was measured).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import pandas as pd
import torch
import torch.distributed as dist

from longnet.backends import get_backend
from longnet.dilated_attention import dilated_attention
from longnet.io import write_csv
from longnet.provenance import provenance
from longnet.schedule import PAPER_DILATION_RATES, PAPER_SEGMENT_LENGTHS
from longnet.sequence_parallel import (CommCounter, gather_flat, process_group_backend,
                                       sequence_parallel_dilated_attention, shard_sequence)
from longnet.timing import summarize, synchronize, window_ms
from longnet.train import resolve_device


def benchmark(seq_lens, segment_lengths=PAPER_SEGMENT_LENGTHS, dilation_rates=PAPER_DILATION_RATES, *,
              heads: int = 8, head_dim: int = 64, batch: int = 1, causal: bool = True,
              dtype: str = "float32", backend: str = "auto", mode: str = "fwd", warmup: int = 1,
              repeats: int = 5, check_max_len: int = 65536, group=None) -> list[dict]:
    """Per-rank latency, bytes and error vs the single-process result, one row per seq_len.

    Call on every rank of an initialised process group; every rank returns the same rows.
    median_ms is the slowest rank's median (the step waits for it); median_cpu_ms the largest
    per-rank median of process CPU time, which other load on a shared CPU inflates less. The single-process reference
    runs on rank 0 for N <= check_max_len (max_abs_error_vs_single is NaN above).
    """
    if mode not in ("fwd", "fwd+bwd"):
        raise ValueError(f"mode={mode!r}; allowed: fwd, fwd+bwd")
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend(group) == "nccl" \
        else torch.device("cpu")
    torch_dtype = getattr(torch, dtype)
    kernel = get_backend(backend, device, torch_dtype, head_dim)
    rows = []
    for n in seq_lens:
        generator = torch.Generator().manual_seed(n)  # the same full inputs on every rank
        full = [torch.randn(batch, n, heads, head_dim, generator=generator).to(device, torch_dtype)
                for _ in range(4)]
        q, k, v, dout = (shard_sequence(x, group).contiguous() for x in full)
        grad = mode == "fwd+bwd"
        q, k, v = (x.requires_grad_(grad) for x in (q, k, v))
        counter = CommCounter()

        def step():
            with torch.set_grad_enabled(grad):
                step.last = sequence_parallel_dilated_attention(
                    q, k, v, segment_lengths, dilation_rates, group=group, causal=causal,
                    backend=kernel.name, counter=counter)
            if grad:
                step.last.backward(dout)

        for _ in range(warmup):
            step()
        counter.reset()
        times, cpu_times = [], []
        for _ in range(repeats):
            dist.barrier(group)
            synchronize(device)
            cpu_began = time.process_time()
            times.append(window_ms(step, device))
            cpu_times.append((time.process_time() - cpu_began) * 1e3)
        out = step.last
        medians = [None] * world
        dist.all_gather_object(medians, (summarize(times)["median_ms"], summarize(cpu_times)["median_ms"]),
                               group=group)
        error = float("nan")
        if n <= check_max_len:
            pieces = [torch.empty_like(out) for _ in range(world)]
            dist.all_gather(pieces, out.detach().contiguous(), group=group)
            if rank == 0:
                single = dilated_attention(*full[:3], segment_lengths, dilation_rates, causal=causal,
                                           backend=kernel.name)
                error = (torch.cat(pieces, 1).float() - single.float()).abs().max().item()
        errors = [None] * world
        dist.all_gather_object(errors, error, group=group)
        rows.append(dict(world_size=world, seq_len=n, tokens_per_rank=n // world, batch=batch,
                         heads=heads, head_dim=head_dim, mode=mode, dtype=dtype, causal=causal,
                         segment_lengths=" ".join(map(str, segment_lengths)),
                         dilation_rates=" ".join(map(str, dilation_rates)),
                         bytes_sent_per_rank=counter.bytes_sent // repeats,
                         bytes_recv_per_rank=counter.bytes_recv // repeats,
                         median_ms=max(m[0] for m in medians),
                         min_rank_median_ms=min(m[0] for m in medians),
                         median_cpu_ms=max(m[1] for m in medians),
                         max_abs_error_vs_single=errors[0], backend=kernel.name,
                         threads_per_rank=torch.get_num_threads()))
    return rows


def measure_link(group=None, sizes=(1 << 12, 1 << 16, 1 << 20, 1 << 22), repeats: int = 10) -> dict:
    """dict(bandwidth, latency) of this process group's all-gather, by a least-squares fit of
    time = (m - 1) * (latency + bytes / bandwidth) over float32 chunks of `sizes` bytes.
    Call on every rank of an initialised group (e.g. under torchrun)."""
    ranks = dist.get_world_size(group)
    xs, ys = [], []
    for size in sizes:
        send = torch.randn(size // 4)
        out = torch.empty(ranks * send.numel())
        times = []
        for i in range(repeats + 2):
            dist.barrier(group)
            began = time.perf_counter()
            gather_flat(out, send, group=group)
            if i >= 2:
                times.append(time.perf_counter() - began)
        xs.append(float(size))
        ys.append(statistics.median(times) / max(1, ranks - 1))
    slope, intercept = statistics.linear_regression(xs, ys)
    return dict(bandwidth=1.0 / max(slope, 1e-15), latency=max(intercept, 0.0))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Sequence-parallel dilated attention benchmark "
                                     "(launch with torchrun; rank 0 writes the CSV)")
    lengths = parser.add_mutually_exclusive_group(required=True)
    lengths.add_argument("--seq-lens", type=int, nargs="+", help="total sequence lengths N")
    lengths.add_argument("--tokens-per-rank", type=int, nargs="+", help="N = this x world size")
    parser.add_argument("--segment-lengths", type=int, nargs="+", default=list(PAPER_SEGMENT_LENGTHS))
    parser.add_argument("--dilation-rates", type=int, nargs="+", default=list(PAPER_DILATION_RATES))
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--no-causal", dest="causal", action="store_false")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--mode", default="fwd", choices=["fwd", "fwd+bwd"])
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--check-max-len", type=int, default=65536,
                        help="compare with the single-process result up to this N")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per rank")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="cpu: gloo ranks on this machine; cuda: one GPU per rank over NCCL")
    parser.add_argument("--out", required=True, help="CSV path (written atomically by rank 0)")
    parser.add_argument("--measure-link", action="store_true",
                        help="also fit the all-gather's bandwidth and latency (printed as JSON)")
    args = parser.parse_args(argv)

    device = resolve_device(args.device, int(os.environ.get("LOCAL_RANK", 0)))
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(args.threads)
    dist.init_process_group(process_group_backend(device))
    try:
        world = dist.get_world_size()
        seq_lens = args.seq_lens or [t * world for t in args.tokens_per_rank]
        rows = benchmark(seq_lens, args.segment_lengths, args.dilation_rates, heads=args.heads,
                         head_dim=args.head_dim, batch=args.batch, causal=args.causal,
                         dtype=args.dtype, backend=args.backend, mode=args.mode,
                         warmup=args.warmup, repeats=args.repeats, check_max_len=args.check_max_len)
        if dist.get_rank() == 0:
            options = {k: v for k, v in vars(args).items() if k != "measure_link"}  # as before the flag
            prov = provenance(options, device=str(device))
            prov["device_name"] = prov.pop("device")
            frame = pd.DataFrame([dict(row, device="cuda" if cuda else "cpu", **prov) for row in rows])
            write_csv(frame, args.out)
            print(frame[["world_size", "seq_len", "median_ms", "bytes_sent_per_rank",
                         "max_abs_error_vs_single"]].to_string(index=False))
        if args.measure_link:
            link = measure_link()
            if dist.get_rank() == 0:
                print(json.dumps(dict(link=link, world_size=world, device=str(device))))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
