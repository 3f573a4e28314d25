"""Per-rank latency of sequence-parallel LongNet at fixed tokens per rank, P = 1, 2, 4, and the
cost model's error on those points (the multi-rank part of Figure 5). Rerunnable:

    python benchmarks/sequence_parallel_scaling.py --tokens-per-rank 8192 16384 --out results/work/sp

Each P runs under torchrun (one gloo process per rank, one thread each on CPU), `--rounds` times
interleaved (P=1, P=2, ..., then again) so slow phases of a shared machine hit every P alike;
the per-P, per-N minimum over rounds of the slowest rank's median is reported.
"""
import argparse
import os
import subprocess
import sys

import pandas as pd

from longnet.cost_model import LINKS, validate
from longnet.io import write_csv

BENCHMARK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sequence_parallel.py")


def link_for(runs: pd.DataFrame, requested: str | None = None) -> str:
    """The link the measured runs went over: the requested one, else gloo on this machine for CPU
    ranks and NVLink for CUDA ranks (NCCL). Mixed devices cannot be validated against one link."""
    devices = set(runs["device"].astype(str).str.split(":").str[0])
    if len(devices) != 1:
        raise ValueError(f"runs on several device types {sorted(devices)}: validate them separately")
    if requested is not None:
        return requested
    return "nvlink" if devices == {"cuda"} else "gloo_loopback"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--world-sizes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--tokens-per-rank", type=int, nargs="+", default=[8192, 16384])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default="results/work/sp_scaling")
    parser.add_argument("--link", default=None, choices=sorted(LINKS),
                        help="link the cost model is checked with (default: gloo_loopback for CPU "
                             "runs, nvlink for CUDA runs)")
    parser.add_argument("extra", nargs=argparse.REMAINDER,
                        help="after --: more arguments for benchmarks/sequence_parallel.py")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    frames = []
    for round_ in range(args.rounds):
        for p in args.world_sizes:
            csv = os.path.join(args.out, f"round{round_}_P{p}.csv")
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc-per-node={p}", BENCHMARK, "--tokens-per-rank",
                   *map(str, args.tokens_per_rank), "--out", csv, *args.extra[1:]]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            frames.append(pd.read_csv(csv).assign(round=round_))
    runs = pd.concat(frames, ignore_index=True)
    best = runs.loc[runs.groupby(["world_size", "seq_len"]).median_ms.idxmin()]
    write_csv(best, os.path.join(args.out, "best.csv"))
    table = best[["world_size", "seq_len", "tokens_per_rank", "median_ms", "median_cpu_ms",
                  "bytes_sent_per_rank", "max_abs_error_vs_single"]].sort_values(
        ["tokens_per_rank", "world_size"])
    base = table[table.world_size == 1].set_index("tokens_per_rank").median_ms
    table["vs_P1"] = table.median_ms / table.tokens_per_rank.map(base)
    print(table.to_string(index=False))
    checked = validate(best, link=link_for(runs, args.link), cores=os.cpu_count())
    print(checked[["seq_len", "devices", "measured_ms", "projected_ms", "comm_ms",
                   "relative_error"]].to_string(index=False))


if __name__ == "__main__":
    main()
