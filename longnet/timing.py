"""One timer for benchmarks: warm-up, then repeated timed windows, synchronised on CUDA.

    stats = time_ms(step, device, warmup=1, repeats=5, inner=10)
    stats["median_ms"]        # per call: each window runs `step` `inner` times between two syncs

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


def time_ms(fn, device: torch.device | str = "cpu", *, warmup: int = 1, repeats: int = 5,
            inner: int = 1) -> dict:
    """{median_ms, min_ms, max_ms, repeats} per call of fn() over `repeats` windows of `inner` calls."""
    if repeats < 1 or inner < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1, inner >= 1, warmup >= 0; got repeats={repeats}, "
                         f"inner={inner}, warmup={warmup}")
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(inner):
                fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / inner)
        else:
            began = time.perf_counter()
            for _ in range(inner):
                fn()
            times.append((time.perf_counter() - began) * 1e3 / inner)
    return dict(median_ms=statistics.median(times), min_ms=min(times), max_ms=max(times), repeats=repeats)


def matmul_peak_flops(device: torch.device | str, dtype: torch.dtype = torch.float32, n: int = 2048,
                      inner: int = 8, repeats: int = 5) -> float:
    """Best FLOP/s of n x n x n matmuls on this device, `inner` back to back per timed window: the
    peak that MFU and the GPU check's TFLOP/s are read against. Best of `repeats`: a shared
    machine only ever makes it slower."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    stats = time_ms(lambda: a @ b, device, warmup=2, repeats=repeats, inner=inner)
    return 2 * n ** 3 / (stats["min_ms"] * 1e-3)
