"""One timer for benchmarks and the profiler: warm-up, then repeated timed windows, synchronised
on CUDA, summarised as median / min / max milliseconds and, given a FLOP count, TFLOP/s.

    stats = time_ms(step, device, warmup=1, repeats=5, inner=10, flops=None)
    stats["median_ms"]        # per call: each window runs `step` `inner` times between two syncs
    time_interleaved_ms({"a": f, "b": g}, device)   # the same, the functions taking turns, so a
                                                    # busy machine slows all of them alike
    window_ms(step, device)   # one timed window, for callers that choose repeats as they go
    summarize(times_ms, flops)                      # the stats of times they collected

On CUDA a window is timed with CUDA events around `inner` back-to-back calls and one
synchronisation at its end, so launch gaps between calls are not hidden by a sync after each
(timing one short kernel with a sync after it measures the sync, not the kernel). On CPU it is
perf_counter around the same window.
"""
from __future__ import annotations

import statistics
import time

import torch


def synchronize(device: torch.device | str) -> None:
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def window_ms(fn, device: torch.device | str = "cpu", inner: int = 1) -> float:
    """Milliseconds per call of fn() over one window of `inner` back-to-back calls, synchronised
    (CUDA events around the window, one synchronisation at its end; perf_counter on the CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / inner
    began = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - began) * 1e3 / inner


def summarize(times_ms, flops: float | None = None) -> dict:
    """{median_ms, min_ms, max_ms, repeats}, plus tflops_per_s (at the median) given `flops`, the
    FLOPs of one call (longnet.flops conventions)."""
    times_ms = list(times_ms)
    median = statistics.median(times_ms)
    stats = dict(median_ms=median, min_ms=min(times_ms), max_ms=max(times_ms), repeats=len(times_ms))
    if flops is not None:
        stats["tflops_per_s"] = flops / (median * 1e-3) / 1e12 if median > 0 else float("nan")
    return stats


def _check_counts(warmup: int, repeats: int, inner: int) -> None:
    if repeats < 1 or inner < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1, inner >= 1, warmup >= 0; got repeats={repeats}, "
                         f"inner={inner}, warmup={warmup}")


def time_ms(fn, device: torch.device | str = "cpu", *, warmup: int = 1, repeats: int = 5,
            inner: int = 1, flops: float | None = None) -> dict:
    """`summarize` of fn() over `repeats` windows of `inner` calls, after `warmup` calls."""
    _check_counts(warmup, repeats, inner)
    for _ in range(warmup):
        fn()
    synchronize(device)
    return summarize([window_ms(fn, device, inner) for _ in range(repeats)], flops)


def time_interleaved_ms(functions: dict, device: torch.device | str = "cpu", *, warmup: int = 1,
                        repeats: int = 5, inner: int = 1, flops: dict | None = None) -> dict:
    """{name: `summarize`} of several functions timed in turns (one window each per round), after
    `warmup` calls of each; flops: {name: FLOPs of one call}, optional."""
    _check_counts(warmup, repeats, inner)
    for fn in functions.values():
        for _ in range(warmup):
            fn()
    synchronize(device)
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            times[name].append(window_ms(fn, device, inner))
    return {name: summarize(t, (flops or {}).get(name)) for name, t in times.items()}


def matmul_peak_flops(device: torch.device | str, dtype: torch.dtype = torch.float32, n: int = 2048,
                      inner: int = 8, repeats: int = 5) -> float:
    """Best FLOP/s of n x n x n matmuls on this device, `inner` back to back per timed window: the
    peak that MFU and the GPU check's TFLOP/s are read against. Best of `repeats`: a shared
    machine only ever makes it slower."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    stats = time_ms(lambda: a @ b, device, warmup=2, repeats=repeats, inner=inner)
    return 2 * n ** 3 / (stats["min_ms"] * 1e-3)
