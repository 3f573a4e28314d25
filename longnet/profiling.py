"""Latency, memory and FLOP/s of attention variants across sequence lengths (the Figure 5 sweep).

Each cell (variant x seq_len x mode) runs in a fresh child process, for two reasons:
- peak memory is honest: CPU peak RSS (and CUDA peak allocated) of one cell never includes the
  allocations of the cells before it;
- a cell that runs past its time cap or memory cap is killed and recorded as `timeout` / `oom`;
  the sweep goes on and never hangs or crashes.

    df = sweep([dict(name="vanilla", params={}), dict(name="longnet", params={})],
               seq_lens=[4096, 8192], modes=["fwd", "fwd+bwd"], total_tokens=8192)

Timing: `warmup` untimed calls (0: the first call is timed too), then up to `repeats` timed calls (fewer when the cell's time cap
would not allow them; the `repeats` column says how many ran); CUDA events on GPU, perf_counter
on CPU. FLOPs come from the variant's own `flops()` (forward; forward+backward is 3.5x by the
convention in `longnet.flops`).

Command line (one cell, used by the sweep's child processes; prints one JSON line):
    python -m longnet.profiling --cell '{"variant": "vanilla", "seq_len": 1024, ...}'
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import select
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field

MODES = ("fwd", "fwd+bwd")
DTYPES = ("float32", "bfloat16", "float16")
READY = "ready"  # the child's signal that start-up is over and the timed cell begins
STARTUP_CAP_S = 120.0  # importing torch on a loaded machine, before the cell's own time cap


@dataclass
class Cell:
    """One measurement: a variant at one sequence length, batch, mode, dtype and device."""
    variant: str
    params: dict = field(default_factory=dict)
    seq_len: int = 1024
    batch: int = 1
    mode: str = "fwd"
    dtype: str = "float32"
    device: str = "cpu"
    heads: int = 8
    head_dim: int = 64
    causal: bool = True
    warmup: int = 1
    repeats: int = 5
    time_cap_s: float = 60.0
    threads: int | None = None  # CPU threads in the child; None keeps torch's default


def _check(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r}; allowed: {', '.join(map(str, allowed))}")


def _rss_bytes(pid: int | str = "self") -> int:
    """Current resident set size of a process (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _is_oom(exc: BaseException) -> bool:
    import torch
    return isinstance(exc, (MemoryError, torch.OutOfMemoryError)) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def _backend_name(attn, device: str, dtype, head_dim: int) -> str:
    """The `longnet.backends` kernel a variant runs ("auto" resolved); "" when the variant does
    not say (no `backend` attribute, e.g. one calling torch's SDPA directly)."""
    name = getattr(attn, "backend", None)
    if name != "auto":
        return name if isinstance(name, str) else ""
    from longnet.backends import get_backend
    return get_backend("auto", device, dtype, head_dim).name


def build_variant(name: str, heads: int, params: dict):
    """A registered variant (`longnet.variants.build`), or `module:factory` for an unregistered callable.

    The factory is called as factory(num_heads=heads, **params) and must return what
    `longnet.variants.build` returns: attn(q, k, v, causal=...) and attn.flops(n, head_dim, causal=...).
    """
    if ":" in name:
        import importlib
        module, attr = name.split(":", 1)
        return getattr(importlib.import_module(module), attr)(num_heads=heads, **params)
    from longnet.variants import build
    return build(name, num_heads=heads, **params)


def idle_mem_bytes(device) -> int:
    """Memory in use before a cell's inputs exist, of the same kind as its peak: device memory
    allocated on CUDA (torch.cuda.max_memory_allocated is the peak), process RSS on the CPU."""
    import torch
    device = torch.device(device)
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else _rss_bytes()


def run_cell(cell: Cell, on_ready=None) -> dict:
    """Measure one cell in this process; returns the measured columns (status 'ok' or 'oom').

    on_ready() is called once the variant is built, just before the timed part begins.
    """
    import torch

    from longnet.timing import summarize, window_ms

    _check("mode", cell.mode, MODES)
    _check("dtype", cell.dtype, DTYPES)
    if cell.threads:
        torch.set_num_threads(cell.threads)
    dtype, device = getattr(torch, cell.dtype), torch.device(cell.device)
    cuda = device.type == "cuda"
    attn = build_variant(cell.variant, cell.heads, cell.params)
    if isinstance(attn, torch.nn.Module):
        attn = attn.to(device=device, dtype=dtype)
    flops = float(attn.flops(cell.seq_len, cell.head_dim, causal=cell.causal)) * cell.batch
    if cell.mode == "fwd+bwd":
        from longnet.flops import training_step_flops
        flops = training_step_flops(flops)
    # idle and peak memory of the same kind: device memory allocated on CUDA, RSS on the CPU
    result = dict(flops=flops, backend=_backend_name(attn, cell.device, dtype, cell.head_dim),
                  idle_mem_bytes=idle_mem_bytes(device))
    if on_ready:
        on_ready()
    try:
        shape = (cell.batch, cell.seq_len, cell.heads, cell.head_dim)
        grad = cell.mode == "fwd+bwd"
        q, k, v = (torch.randn(shape, device=device, dtype=dtype, requires_grad=grad)
                   for _ in range(3))
        dout = torch.randn(shape, device=device, dtype=dtype) if grad else None

        def step():
            if grad:
                attn(q, k, v, causal=cell.causal).backward(dout)
                q.grad = k.grad = v.grad = None
            else:
                with torch.no_grad():
                    attn(q, k, v, causal=cell.causal)

        def timed() -> float:  # milliseconds, synchronised (longnet.timing)
            return window_ms(step, device)

        began = time.perf_counter()
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        first = timed()  # warm-up (timed too when warmup == 0); tells how many repeats fit the cap
        for _ in range(cell.warmup - 1):
            timed()
        left_ms = (cell.time_cap_s - (time.perf_counter() - began)) * 1e3 * 0.8
        times = [first] if cell.warmup == 0 else []
        repeats = max(1, min(cell.repeats, len(times) + int(left_ms // max(first, 1e-3))))
        times += [timed() for _ in range(repeats - len(times))]
    except Exception as exc:  # noqa: BLE001 - only out-of-memory is recorded, the rest re-raised
        if not _is_oom(exc):
            raise
        return dict(result, status="oom", error=str(exc).splitlines()[0][:200])
    stats = summarize(times, flops)
    peak = torch.cuda.max_memory_allocated(device) if cuda else _peak_rss_bytes()
    return dict(result, status="ok", median_ms=stats["median_ms"], min_ms=stats["min_ms"],
                max_ms=stats["max_ms"], repeats=repeats, peak_mem_bytes=peak,
                gflops_per_s=stats["tflops_per_s"] * 1e3)


def run_cell_isolated(cell: Cell, mem_cap_bytes: int | None = None, poll_s: float = 0.02) -> dict:
    """Run one cell in a fresh child process, killing it at its time cap or memory cap.

    The time cap counts from the child's READY line (after importing torch and building the
    variant). On CPU the memory cap is checked against the child's RSS every `poll_s` seconds; on
    CUDA it is passed to the child as the per-process memory fraction. Never raises for a failing
    cell.
    """
    env = dict(os.environ)
    if mem_cap_bytes and cell.device.startswith("cuda"):
        env["LONGNET_CUDA_MEM_CAP"] = str(mem_cap_bytes)
    cmd = [sys.executable, "-m", "longnet.profiling", "--cell", json.dumps(asdict(cell))]
    # own session so a kill reaches any helpers the child started
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env, start_new_session=True)
    # the time cap starts when the child says it is ready (torch imported, variant built)
    deadline = time.monotonic() + STARTUP_CAP_S + cell.time_cap_s
    killed_for, peak_seen, stdout = None, 0, []
    while child.poll() is None:
        if select.select([child.stdout], [], [], poll_s)[0]:
            line = child.stdout.readline()
            if line.strip() == READY:
                deadline = time.monotonic() + cell.time_cap_s
            elif line.startswith("{"):  # the result: only the interpreter's exit is left
                deadline = float("inf")
            stdout.append(line)
        peak_seen = max(peak_seen, _rss_bytes(child.pid))
        if mem_cap_bytes and not cell.device.startswith("cuda") and peak_seen > mem_cap_bytes:
            killed_for = "oom"
        elif time.monotonic() > deadline:
            killed_for = "timeout"
        if killed_for:
            os.killpg(child.pid, signal.SIGKILL)
            break
    rest, stderr = child.communicate()
    stdout = "".join(stdout) + rest
    if killed_for:
        return dict(status=killed_for, peak_mem_bytes=peak_seen,
                    error=f"killed at {'memory' if killed_for == 'oom' else 'time'} cap")
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if child.returncode == 0 and lines:
        return json.loads(lines[-1])
    if child.returncode == -signal.SIGKILL:  # the kernel's OOM killer
        return dict(status="oom", peak_mem_bytes=peak_seen, error="killed by the system (SIGKILL)")
    tail = (stderr.strip().splitlines() or ["no output"])[-1]
    return dict(status="error", error=f"exit {child.returncode}: {tail[:300]}")


def sweep(variants: list[dict], seq_lens, modes=MODES, dtype: str = "float32",
          device: str = "cpu", heads: int = 8, head_dim: int = 64,
          total_tokens: int | None = None, warmup: int = 1, repeats: int = 5,
          time_cap_s: float = 60.0, mem_cap_bytes: int | None = None, causal: bool = True,
          batch: int = 1, threads: int | None = None, skip_after_failure: bool = True,
          config=None, progress: bool = False):
    """Profile every variant x seq_len x mode; one row per cell, failures included.

    variants: [dict(name=..., params={...}), ...], names from `longnet.variants.available()` (or
    `module:factory`, see `build_variant`).
    total_tokens: when given, batch = total_tokens // seq_len (the paper's constant token budget);
    lengths above total_tokens run with batch 1. Otherwise `batch` is used as is.
    skip_after_failure: once a variant/mode times out or runs out of memory, longer lengths are
    recorded as that status without running (they would only fail more slowly).
    Returns a pandas DataFrame with the measurement columns plus `longnet.provenance` columns
    (its device name is in `device_name`; `device` is the torch device the cell ran on).
    """
    import pandas as pd
    from longnet.provenance import provenance

    for mode in modes:
        _check("mode", mode, MODES)
    _check("dtype", dtype, DTYPES)
    if not variants:
        raise ValueError("variants: give at least one dict(name=..., params=...)")
    prov = provenance(config if config is not None else dict(
        variants=variants, seq_lens=list(seq_lens), modes=list(modes), dtype=dtype, device=device,
        heads=heads, head_dim=head_dim, total_tokens=total_tokens, causal=causal), device=device)
    prov["device_name"] = prov.pop("device")
    from longnet.variants import schedule_columns

    rows = []
    for spec in variants:
        name, params = spec["name"], dict(spec.get("params") or {})
        try:  # its schedule at each length, for the rows; a cell records a variant that fails
            attn = build_variant(name, heads, params)
        except Exception:  # noqa: BLE001 - the child cell records why
            attn = None
        for mode in modes:
            failed = None
            for n in sorted(seq_lens):
                b = max(1, total_tokens // n) if total_tokens else batch
                cell = Cell(name, params, n, b, mode, dtype, device, heads, head_dim, causal,
                            warmup, repeats, time_cap_s, threads)
                if failed:
                    result = dict(status=failed, error="skipped: a shorter length already failed")
                else:
                    result = run_cell_isolated(cell, mem_cap_bytes)
                    if skip_after_failure and result["status"] in ("oom", "timeout"):
                        failed = result["status"]
                row = dict(variant=name, params=json.dumps(params, sort_keys=True), seq_len=n,
                           batch=b, tokens=n * b, mode=mode, device=device, dtype=dtype,
                           heads=heads, head_dim=head_dim, causal=causal, median_ms=float("nan"),
                           min_ms=float("nan"), max_ms=float("nan"), repeats=0,
                           peak_mem_bytes=float("nan"), idle_mem_bytes=float("nan"),
                           flops=float("nan"), gflops_per_s=float("nan"), backend="", error="",
                           **schedule_columns(attn, n))
                row.update(result)
                row.update(prov)
                rows.append(row)
                if progress:
                    print(f"{name} {mode} N={n} B={b}: {row['status']} "
                          f"{row['median_ms']:.1f} ms", file=sys.stderr, flush=True)
    columns = list(rows[0])
    return pd.DataFrame(rows, columns=columns)


def _main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cell", required=True, help="JSON of a Cell")
    args = parser.parse_args(argv)
    cell = Cell(**json.loads(args.cell))
    cap = os.environ.get("LONGNET_CUDA_MEM_CAP")
    if cap and cell.device.startswith("cuda"):
        import torch
        total = torch.cuda.get_device_properties(cell.device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, int(cap) / total), cell.device)
    print(json.dumps(run_cell(cell, on_ready=lambda: print(READY, flush=True))), flush=True)


if __name__ == "__main__":
    _main()
