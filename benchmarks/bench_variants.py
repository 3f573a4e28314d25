"""Forward time of every attention variant vs N, with fitted exponents.

    python benchmarks/bench_variants.py [--quick] [--lengths 4096 8192 ...] [--time-cap 300]

fp32 on the CPU, bf16 on --device cuda (--dtype, --modes fwd fwd+bwd), H = 8, D = 64, batch 1, causal. Each cell runs in
its own process through `longnet.profiling.sweep` (timeouts and OOM are recorded, never fatal).
For each variant the exponent of time vs N is fitted beside the exponent its own flops() predicts
(`analysis.tables.fit_exponent`). Configurations:
- fixed parameters: vanilla (~N^2), longnet with a schedule N never clips (segments 512..4096, so
  ~N^1), longnet with the paper's defaults (clipped to N below 32K, so steeper there), longformer
  window 512 (~N^1), sparse_fixed block 2048 / summary 148 (FLOP-matched to LongNet at 32K) and
  sparse_strided stride 128 (both ~N^2 once the N/l part dominates);
- sqrt-scaled: sparse_fixed block 16*sqrt(N), summary 32, and sparse_strided stride 2*sqrt(N):
  keys per query ~ sqrt(N), so ~N^1.5 (Table 1's N*sqrt(N)).
Writes results/benchmarks/variants_forward.csv (one row per cell) and
results/benchmarks/variants_exponents.csv (variant, points, measured_exponent, flops_exponent).
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd

from analysis.tables import fit_exponent
from longnet.io import write_csv
from longnet.profiling import sweep

OUT = Path(__file__).resolve().parent.parent / "results" / "benchmarks"
LENGTHS = [4096, 8192, 16384, 32768, 65536]
FIXED = {
    "vanilla": ("vanilla", {}),
    "longnet": ("longnet", {"segment_lengths": [512, 1024, 2048, 4096],
                            "dilation_rates": [1, 2, 4, 8]}),
    "longnet_paper": ("longnet", {}),
    "longformer": ("longformer", {"window": 512}),
    "sparse_fixed": ("sparse_fixed", {"block": 2048, "summary": 148}),
    "sparse_strided": ("sparse_strided", {"stride": 128}),
}
SQRT_SCALED = {
    "sparse_fixed_sqrt": ("sparse_fixed", lambda n: {"block": 16 * math.isqrt(n), "summary": 32}),
    "sparse_strided_sqrt": ("sparse_strided", lambda n: {"stride": 2 * math.isqrt(n)}),
}


def run(lengths, device: str, time_cap_s: float, repeats: int, dtype: str = "float32",
        modes=("fwd",)) -> pd.DataFrame:
    common = dict(modes=list(modes), dtype=dtype, device=device, heads=8, head_dim=64,
                  repeats=repeats, time_cap_s=time_cap_s, progress=True)
    frames = []
    for label, (name, params) in FIXED.items():
        frames.append(sweep([dict(name=name, params=params)], lengths, **common)
                      .assign(config=label))
    for label, (name, params_at) in SQRT_SCALED.items():
        for n in lengths:
            frames.append(sweep([dict(name=name, params=params_at(n))], [n], **common)
                          .assign(config=label))
    return pd.concat(frames, ignore_index=True)


def exponents(cells: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for label, group in cells[cells["status"] == "ok"].groupby("config", sort=False):
        rows.append(dict(variant=label, points=len(group), min_seq_len=group["seq_len"].min(),
                         max_seq_len=group["seq_len"].max(),
                         measured_exponent=fit_exponent(group["seq_len"], group["median_ms"]),
                         flops_exponent=fit_exponent(group["seq_len"], group["flops"])))
    return pd.DataFrame(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=LENGTHS)
    parser.add_argument("--quick", action="store_true", help="N = 1K..4K, one repeat")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                        help="default: bfloat16 on cuda (what the flash kernels take), float32 on cpu")
    parser.add_argument("--modes", nargs="+", default=["fwd"], choices=["fwd", "fwd+bwd"])
    parser.add_argument("--time-cap", type=float, default=300.0, help="seconds per cell")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    lengths, repeats = ([1024, 2048, 4096], 1) if args.quick else (args.lengths, args.repeats)
    dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    cells = run(lengths, args.device, args.time_cap, repeats, dtype, args.modes)
    fits = exponents(cells)
    write_csv(cells, args.out / "variants_forward.csv")
    write_csv(fits, args.out / "variants_exponents.csv")
    print(cells[["config", "seq_len", "status", "median_ms", "gflops_per_s"]].to_string(index=False))
    print(fits.to_string(index=False))


if __name__ == "__main__":
    main()
