"""Projected per-device attention latency from 8K to 1B tokens (Figure 5 beyond what we can run).

    projected_ms = compute_ms + comm_ms            (no overlap of the two: an upper bound)
    compute_ms   = FLOPs of the slowest rank / measured kernel throughput
    comm_ms      = sum over all-gathers of steps * latency + (m - 1) * chunk_bytes / bandwidth

The alpha-beta term is an all-gather over the m ranks that share a segment (bytes as counted by
`longnet.sequence_parallel.CommCounter`), with m - 1 latency steps (ring, the default) or log2(m)
(algorithm="tree"; at 1B tokens the ring's latency term dominates); forward+backward adds a reduce-scatter of the same rows
(in float32, as the implementation accumulates) and 3.5x the FLOPs (`longnet.flops` convention).

Models, per rank of a sequence split over P = N / tokens_per_device devices (L tokens each):
- longnet: exactly the algorithm of `longnet.sequence_parallel`: local branches cost their blocks
  on the chunk; a spanning branch (segment of m = w/L ranks) all-gathers L*H/r rows of k and v per
  rank, and the last rank of a segment (the slowest, when causal) attends its L/r queries per head
  to all (m-1)*L/r earlier keys plus the causal part of its own.
- vanilla: sequence-parallel dense attention (all-gather the full k, v; the last rank's queries see
  every earlier key): per-device compute grows like N, communication like N.

Throughput ("rates") comes from measurements: a dict {variant: GFLOP/s}, or a profiling sweep
DataFrame (`longnet.profiling.sweep`), from which each variant's rate at its longest successful
length is taken. `validate` compares projections with measured multi-rank points
(`benchmarks/sequence_parallel.py` CSVs), calibrating the rate on the P = 1 rows.
"""
from __future__ import annotations

import math

from .flops import BACKWARD_FACTOR, attention_flops, causal_pairs
from .schedule import (PAPER_DILATION_RATES, PAPER_SEGMENT_LENGTHS, DilatedSchedule, paper_schedule,
                       schedule_label)

# Nominal per-GPU link numbers (bytes/s, seconds). NVLink: A100 NVLink3 is 300 GB/s per direction
# (H100 NVLink4: 450 GB/s); InfiniBand: HDR 200 Gb/s = 25 GB/s per GPU (NDR 400 Gb/s: 50 GB/s).
# Latencies are the usual small-message all-gather step costs of NCCL over each link.
# gloo_loopback: gloo all-gather between processes on one 2-core CPU box, measured with
# `benchmarks/sequence_parallel.py --measure-link` (about 0.5 GB/s, 0.4 ms per step; noisy on a
# shared machine).
LINKS = {
    "nvlink": dict(bandwidth=300e9, latency=5e-6),
    "infiniband": dict(bandwidth=25e9, latency=10e-6),
    "gloo_loopback": dict(bandwidth=0.5e9, latency=0.4e-3),
}
MODELLED = ("longnet", "vanilla")
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def resolve_link(link) -> tuple[str, float, float]:
    """(name, bandwidth bytes/s, latency s) from a preset name or dict(bandwidth=, latency=)."""
    if isinstance(link, str):
        if link not in LINKS:
            raise ValueError(f"link={link!r}; allowed: {', '.join(LINKS)} or "
                             "dict(bandwidth=bytes_per_s, latency=seconds)")
        return link, LINKS[link]["bandwidth"], LINKS[link]["latency"]
    if not (isinstance(link, dict) and set(link) == {"bandwidth", "latency"}
            and link["bandwidth"] > 0 and link["latency"] >= 0):
        raise ValueError(f"link={link!r}; allowed: {', '.join(LINKS)} or "
                         "dict(bandwidth=bytes_per_s > 0, latency=seconds >= 0)")
    return "custom", float(link["bandwidth"]), float(link["latency"])


ALGORITHMS = ("ring", "tree")


def _all_gather_s(ranks: int, chunk_bytes: float, bandwidth: float, latency: float,
                  algorithm: str = "ring") -> float:
    """Ring: m - 1 steps, each one latency plus one chunk. Tree (recursive doubling, NCCL's PAT):
    log2(m) latencies and the same m - 1 chunks of bandwidth."""
    steps = ranks - 1 if algorithm == "ring" else math.ceil(math.log2(ranks)) if ranks > 1 else 0
    return steps * latency + (ranks - 1) * chunk_bytes / bandwidth


def rank_cost(variant: str, n: int, devices: int, *, segment_lengths=PAPER_SEGMENT_LENGTHS,
              dilation_rates=PAPER_DILATION_RATES, heads: int = 12, head_dim: int = 64,
              batch: int = 1, causal: bool = True, dtype_bytes: int = 2):
    """Forward (FLOPs of the slowest rank, [(ranks, chunk_bytes) per all-gather]) for one call.

    n must be divisible by devices. The all-gathers are those the slowest rank takes part in.
    """
    if variant not in MODELLED:
        raise ValueError(f"variant={variant!r}; the cost model knows: {', '.join(MODELLED)}")
    if devices < 1 or n % devices:
        raise ValueError(f"seq_len={n} must be divisible by devices={devices}")
    chunk = n // devices
    row_bytes = 2 * batch * head_dim * dtype_bytes  # one row of k and of v
    if variant == "vanilla":
        # the last rank: its chunk's causal block plus every earlier key (all keys if not causal)
        pairs = (causal_pairs(chunk) + chunk * (n - chunk)) if causal else chunk * n
        gathers = [(devices, chunk * heads * row_bytes)] if devices > 1 else []
        return attention_flops(pairs, heads, head_dim, batch), gathers
    pairs, gathers = 0, []
    for branch in DilatedSchedule(segment_lengths, dilation_rates).branches:
        w, r = min(branch.segment_length, n), branch.dilation_rate
        if devices == 1 or chunk % w == 0:  # local: the branch's blocks on one chunk
            pairs += sum(branch.pairs(chunk, h, causal) for h in range(heads))
            continue
        if w % chunk:
            raise ValueError(f"the cost model needs segments that are whole multiples of the "
                             f"chunk: w={w}, tokens per device={chunk}")
        ranks = w // chunk  # the slowest rank is the last of a full segment
        for h in range(heads):
            own = len(branch.rows(chunk, branch.offset(h)))  # rows per chunk (exact when r divides the chunk)
            pairs += own * own * (ranks - 1) + causal_pairs(own) if causal else own * own * ranks
        gathers.append((ranks, math.ceil(chunk / r) * heads * row_bytes))
    return attention_flops(pairs, 1, head_dim, batch), gathers


def point(variant: str, n: int, devices: int, rate_gflops: float, link="nvlink",
          mode: str = "fwd", algorithm: str = "ring", **shape) -> dict:
    """compute_ms, comm_ms and projected_ms of one (variant, N, devices) point."""
    if mode not in ("fwd", "fwd+bwd"):
        raise ValueError(f"mode={mode!r}; allowed: fwd, fwd+bwd")
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm={algorithm!r}; allowed: {', '.join(ALGORITHMS)}")
    name, bandwidth, latency = resolve_link(link)
    flops, gathers = rank_cost(variant, n, devices, **shape)
    comm_s = sum(_all_gather_s(m, c, bandwidth, latency, algorithm) for m, c in gathers)
    if mode == "fwd+bwd":
        flops *= 1.0 + BACKWARD_FACTOR
        fp32_ratio = 4 / shape.get("dtype_bytes", 2)  # the reduce-scatter runs in float32
        comm_s += sum(_all_gather_s(m, c * fp32_ratio, bandwidth, latency, algorithm)
                      for m, c in gathers)
    compute_ms = flops / (rate_gflops * 1e9) * 1e3
    return dict(variant=variant, seq_len=n, devices=devices, tokens_per_device=n // devices,
                mode=mode, algorithm=algorithm, compute_ms=compute_ms, comm_ms=comm_s * 1e3,
                projected_ms=compute_ms + comm_s * 1e3, flops_per_device=flops,
                rate_gflops=rate_gflops, link=name)


def rates_from(measured, mode: str = "fwd") -> dict:
    """{variant: GFLOP/s}: a dict as is, or from a sweep DataFrame (longest ok length per variant)."""
    if isinstance(measured, dict):
        return dict(measured)
    ok = measured[(measured["status"] == "ok") & (measured["mode"] == mode)]
    if ok.empty:
        raise ValueError(f"no successful {mode!r} rows in the measured data to take rates from")
    longest = ok.sort_values("seq_len").groupby("variant").tail(1)
    return dict(zip(longest["variant"], longest["gflops_per_s"].astype(float)))


def project(measured, seq_lens, tokens_per_device: int, link="nvlink", *,
            variants=MODELLED, mode: str = "fwd", segment_lengths=PAPER_SEGMENT_LENGTHS,
            dilation_rates=PAPER_DILATION_RATES, heads: int = 12, head_dim: int = 64, batch: int = 1,
            causal: bool = True, dtype: str = "bfloat16", extend_schedule: bool = False,
            algorithm: str = "ring"):
    """Projected per-device latency for each variant and N, devices = max(1, N / tokens_per_device).

    extend_schedule: the paper's rule (`longnet.schedule.paper_schedule`): the branches continued
    by (2w, 2r) until one segment covers N; otherwise the given schedule is used as is (the
    paper's stops at 32K, beyond which nothing crosses a 4-device block). Rows say which in
    `schedule` (paper / pinned / truncated) and `widest_segment`.
    measured: {variant: GFLOP/s} or a profiling sweep DataFrame (see `rates_from`).
    Returns a DataFrame: variant, seq_len, devices, projected_ms, compute_ms, comm_ms, link,
    kind="projected", plus tokens_per_device, mode, flops_per_device, rate_gflops.
    """
    import pandas as pd

    if dtype not in DTYPE_BYTES:
        raise ValueError(f"dtype={dtype!r}; allowed: {', '.join(DTYPE_BYTES)}")
    rates = rates_from(measured, mode)
    missing = [v for v in variants if v not in rates]
    if missing:
        raise ValueError(f"no measured rate for {missing}; measured: {sorted(rates)}")
    rows = []
    for variant in variants:
        for n in seq_lens:
            devices = max(1, n // tokens_per_device)
            base = DilatedSchedule(segment_lengths, dilation_rates)
            schedule = paper_schedule(n, base) if extend_schedule else base
            row = point(variant, n, devices, rates[variant], link, mode, algorithm,
                        segment_lengths=list(schedule.segment_lengths),
                        dilation_rates=list(schedule.dilation_rates), heads=heads,
                        head_dim=head_dim, batch=batch, causal=causal,
                        dtype_bytes=DTYPE_BYTES[dtype])
            longnet = variant == "longnet"
            row.update(schedule=schedule_label(base, n, extend_schedule) if longnet else "",
                       widest_segment=schedule.widest_segment if longnet else math.nan)
            rows.append(row)
    return pd.DataFrame(rows).assign(kind="projected", dtype=dtype, extend_schedule=extend_schedule)


def validate(distributed, link="gloo_loopback", rate_gflops: float | None = None,
             cores: int | None = None):
    """Projection vs measurement for each row of sequence-parallel benchmark CSVs (concatenated).

    The rate is calibrated on the world_size == 1 rows (longest N) unless given, so the P > 1 rows
    test the model's scaling and communication terms. cores: when the ranks shared a CPU of this
    many cores, compute is slowed by max(1, ranks x threads_per_rank / cores) (4 one-thread ranks
    on 2 cores run at half speed). Returns the rows with measured_ms, projected_ms, compute_ms,
    comm_ms and relative_error = projected / measured - 1, kind="validation".
    """
    import pandas as pd

    rows = []
    for _, m in distributed.iterrows():
        shape = dict(segment_lengths=[int(x) for x in str(m["segment_lengths"]).split()],
                     dilation_rates=[int(x) for x in str(m["dilation_rates"]).split()],
                     heads=int(m["heads"]), head_dim=int(m["head_dim"]), batch=int(m["batch"]),
                     causal=bool(m["causal"]), dtype_bytes=DTYPE_BYTES[m["dtype"]])
        flops, _ = rank_cost("longnet", int(m["seq_len"]), int(m["world_size"]), **shape)
        if m["mode"] == "fwd+bwd":
            flops *= 1.0 + BACKWARD_FACTOR
        threads = int(m.get("threads_per_rank", 1))
        share = max(1.0, int(m["world_size"]) * threads / cores) if cores else 1.0
        rows.append(dict(seq_len=int(m["seq_len"]), devices=int(m["world_size"]),
                         measured_ms=float(m["median_ms"]), mode=m["mode"], shape=shape,
                         flops_per_device=flops, oversubscription=share))
    if rate_gflops is None:
        single = [r for r in rows if r["devices"] == 1]
        if not single:
            raise ValueError("no world_size == 1 rows to calibrate the rate on; pass rate_gflops")
        longest = max(single, key=lambda r: r["seq_len"])
        rate_gflops = (longest["flops_per_device"] / longest["oversubscription"]
                       / (longest["measured_ms"] * 1e-3) / 1e9)
    out = []
    for r in rows:
        p = point("longnet", r["seq_len"], r["devices"], rate_gflops / r["oversubscription"], link,
                  r["mode"], **r["shape"])
        out.append(dict(p, measured_ms=r["measured_ms"], oversubscription=r["oversubscription"],
                        relative_error=p["projected_ms"] / r["measured_ms"] - 1.0))
    return pd.DataFrame(out).assign(kind="validation")
