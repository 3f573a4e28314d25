"""Every GPU path of the suite in one command, with one summary table (at most 10 minutes on one GPU).

    python benchmarks/gpu_check.py                      # on a CUDA machine
    python benchmarks/gpu_check.py --quick --standins   # on a CPU: small sizes, CUDA backends via
                                                        # longnet/cuda_standins.py (the test suite runs this)

Sections (each row: section, case, status ok / FAIL / skip / not run, the numbers, a message):
 1 env       versions, which backends import (and why not), what `auto` picks per dtype / head dim
 2 kernels   every CUDA backend x fp16/bf16/fp32 x causal x L in {1, 17, 64, 300, 2048} x D in
             {64, 128}: out, lse, dq, dk, dv against float64 on the same rounded inputs; passes when
             its error is at most 2x that of the same-dtype PyTorch reference without upcasting
             (flash-attention's test rule: its attention_ref(upcast=False); see _same_dtype_run);
             every backend against every other; backward with a given (shifted) lse, as the merged
             identity needs; a head dim no flash kernel takes (12) must fall back cleanly
 3 grid      a 65,536+-block kernel batch (one-row blocks) through each CUDA backend
 4 dilated   N in {300, 4099, 32768}, the paper's and a short schedule, causal and not, exact_grad
             on and off, with gradients, against the float64 definition; decoding equals the forward
 5 baselines every variant against its own mask; Longformer's flash-attn window path vs block-sparse
 6 speed     the speed target: LongNet's bf16 fwd+bwd at N = 32K and 1M (the paper's schedule,
             extended until a segment covers N, H = 12, D = 64) against dense FA2 on the same block
             shapes (per branch a batch of N / w blocks of w / r rows): TFLOP/s of each branch's
             kernel, and LongNet's speed as a fraction of FA2's on those blocks (the time FA2 would
             take for LongNet's FLOPs / LongNet's time), ok at >= 0.70, else "below"
 6 latency   bf16 fwd and fwd+bwd of longnet and sparse_fixed at N = 32K, 256K, 1M and vanilla up
             to 256K (H = 12, D = 64): ms, TFLOP/s (attended pairs, longnet.flops), peak memory,
             and a timed bf16 matmul peak
 7 train     20 steps of the tiny LM in bf16: loss finite and falling, MFU below 1
 8 nccl      sequence parallelism over NCCL through torchrun with 2 GPUs ("not run: 1 GPU" else)
 9 decode    per-token decode latency and cache bytes of longnet and vanilla (H = 12, D = 64) at
             64K and 1M tokens of context

Sections run in order of value (SECTION_S: env, kernels, dilated, speed, latency, train,
baselines, grid, decode, nccl) within --budget-s seconds (default 540): one whose estimate
(SECTION_S, scaled down by --quick) would overrun is a "skip" row saying so. gpu_check.csv and
gpu_check.json (rows, provenance with the library versions) under --out/<device name>/ are
rewritten after every section, so a run stopped at a time limit leaves every finished row.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import baselines  # noqa: E402
from analysis.io import write_csv, write_text  # noqa: E402
from longnet import backends, dilated_attention  # noqa: E402
from longnet.schedule import PAPER_DILATION_RATES, PAPER_SEGMENT_LENGTHS, DilatedSchedule  # noqa: E402
from longnet.provenance import device_name, provenance  # noqa: E402
from longnet.reference import reference_dilated_attention  # noqa: E402
from longnet.timing import matmul_peak_flops, time_ms  # noqa: E402

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
CUDA_BACKENDS = backends.CUDA_BACKENDS
ULP = {torch.float16: 1e-3, torch.bfloat16: 8e-3, torch.float32: 1e-5}


class Report:
    def __init__(self):
        self.rows: list[dict] = []

    def add(self, section, case, status, message="", **numbers):
        self.rows.append(dict(section=section, case=case, status=status, message=message, **numbers))

    @contextlib.contextmanager
    def section(self, section, case):
        """Run one check; an exception is a FAIL row with its message, never the end of the run."""
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - reported, and the next check runs
            self.add(section, case, "FAIL", f"{type(exc).__name__}: {exc}".splitlines()[0][:300])
            if os.environ.get("GPU_CHECK_TRACEBACK"):
                traceback.print_exc()


def errors(got, want):
    return [(g.double() - w.double()).abs().max().item() if g.numel() else 0.0 for g, w in zip(got, want)]


# 1 ------------------------------------------------------------------------------------------------

def check_env(report, device):
    report.add("env", "torch", "ok", f"{torch.__version__}, CUDA {torch.version.cuda}, device {device_name(device)}")
    for name, backend in backends.BACKENDS.items():
        if backend.module is None:
            continue
        error = backend.import_error()
        version = getattr(sys.modules.get(backend.module.split(".")[0]), "__version__", "?")
        report.add("env", f"import {backend.module}", "ok" if error is None else "skip",
                   f"version {version}" if error is None else error)
    for dtype in DTYPES.values():
        for head_dim in (64, 128, 12):
            with report.section("env", f"auto {dtype} D={head_dim}"):
                report.add("env", f"auto {dtype} D={head_dim}", "ok",
                           backends.get_backend("auto", device, dtype, head_dim).name)


# 2 ------------------------------------------------------------------------------------------------

def _kernel_run(kernel, q, k, v, dout, causal, given_lse_shift=0.0):
    out, lse = kernel.forward(q, k, v, causal, None)
    grads = kernel.backward(dout, q, k, v, out, lse + given_lse_shift, causal, None)
    return [out, lse, *grads]


def _same_dtype_run(q, k, v, dout, causal):
    """flash-attention's own test baseline (its attention_ref with upcast=False): softmax
    attention through autograd with every product in the input dtype, as a kernel that keeps its
    probabilities and their gradients in that dtype computes it. The float32 math path rounds
    once at the end, a stricter bar than any such kernel (the CPU flash kernel's fp16 dk / dv
    errors are 2-5x the math path's, about 1 ulp, and within 2x this baseline's)."""
    q, k, v = (x.detach().requires_grad_() for x in (q, k, v))
    scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    if causal:
        visible = torch.ones(q.shape[2], k.shape[2], dtype=torch.bool, device=q.device).tril()
        scores = scores.masked_fill(~visible, float("-inf"))
    out = torch.softmax(scores, dim=-1) @ v
    out.backward(dout)
    return [out, torch.logsumexp(scores.float(), dim=-1), q.grad, k.grad, v.grad]


def check_kernels(report, device, names, lengths, head_dims):
    math_kernel = backends.BACKENDS["math"]
    results = {}
    for dtype in DTYPES.values():
        for causal in (True, False):
            for length in lengths:
                for head_dim in head_dims:
                    gen = torch.Generator(device="cpu").manual_seed(length * 1000 + head_dim)
                    base = [torch.randn(2, 3, length, head_dim, generator=gen) for _ in range(4)]
                    rounded = [x.to(device, dtype) for x in base]  # the same rounded inputs for all
                    want = _kernel_run(math_kernel, *(x.double() for x in rounded), causal)
                    ref_err = errors(_same_dtype_run(*rounded, causal), want)
                    for name in names:
                        kernel = backends.BACKENDS[name]
                        case = f"{name} {str(dtype)[6:]} causal={causal} L={length} D={head_dim}"
                        if not (kernel.installed() and kernel.supports(device, dtype, head_dim)):
                            continue
                        with report.section("kernels", case):
                            got = _kernel_run(kernel, *rounded, causal)
                            err = errors(got, want)
                            bad = [i for i, (e, r) in enumerate(zip(err, ref_err)) if e > 2 * r + ULP[dtype]]
                            results[(name, dtype, causal, length, head_dim)] = got
                            report.add("kernels", case, "FAIL" if bad else "ok",
                                       "" if not bad else "over 2x the same-dtype reference: " + ", ".join(
                                           ["out", "lse", "dq", "dk", "dv"][i] for i in bad),
                                       max_abs_error=max(err), reference_error=max(ref_err))
    # every backend against every other, on the cases both ran
    for (name, *key), got in results.items():
        for (other, *key2), got2 in results.items():
            if key == key2 and name < other:
                diff = max(errors(got, got2))
                dtype = key[0]
                report.add("kernels", f"{name} vs {other} {str(dtype)[6:]} causal={key[1]} L={key[2]} D={key[3]}",
                           "ok" if diff <= 4 * ULP[dtype] + 0.05 else "FAIL", max_abs_error=diff)
    # backward with a given lse (the merged-lse identity): must follow the lse it is given
    for name in names:
        kernel = backends.BACKENDS[name]
        for dtype in DTYPES.values():
            if not (kernel.installed() and kernel.supports(device, dtype, 64)):
                continue
            with report.section("kernels", f"{name} {str(dtype)[6:]} backward with a given lse"):
                x = [t.to(device, dtype) for t in (torch.randn(1, 2, 40, 64) for _ in range(4))]
                got = _kernel_run(kernel, *x, False, given_lse_shift=0.7)[2:]
                want = _kernel_run(math_kernel, *(t.double() for t in x), False, given_lse_shift=0.7)[2:]
                err = max(errors(got, want))
                report.add("kernels", f"{name} {str(dtype)[6:]} backward with a given lse",
                           "ok" if err < 20 * ULP[dtype] + 0.05 else "FAIL", max_abs_error=err)
    with report.section("kernels", "head dim 12 falls back"):
        q = torch.randn(1, 64, 2, 12, device=device, dtype=torch.bfloat16)
        picked = backends.get_backend("auto", device, torch.bfloat16, 12).name
        out = dilated_attention(q, q, q, [16, 32], [1, 2])
        ok = picked not in ("flash_attn", "torch_flash") and torch.isfinite(out).all().item()
        report.add("kernels", "head dim 12 falls back", "ok" if ok else "FAIL", f"auto picks {picked}")


# 3 ------------------------------------------------------------------------------------------------

def check_grid(report, device, names):
    n = 65_536 + 37
    for name in names:
        kernel = backends.BACKENDS[name]
        dtype = torch.bfloat16
        if not (kernel.installed() and kernel.supports(device, dtype, 64)):
            continue
        with report.section("grid", f"{name} 2 x {n} one-row blocks"):
            q = torch.randn(2, n, 1, 64, device=device, dtype=dtype)
            out = dilated_attention(q, q, q, [1], [1], backend=name)
            err = (out - q).abs().max().item()
            report.add("grid", f"{name} 2 x {n} one-row blocks", "ok" if err == 0 else "FAIL", max_abs_error=err)


# 4 ------------------------------------------------------------------------------------------------

def check_dilated(report, device, lengths, dtype, heads=8, head_dim=64):
    schedules = {"paper": (PAPER_SEGMENT_LENGTHS, PAPER_DILATION_RATES), "short": ((64, 128, 256), (1, 2, 4))}
    for n in lengths:
        for label, (segments, rates) in schedules.items():
            for causal, exact in ((True, True), (True, False), (False, True)):
                case = f"N={n} {label} causal={causal} exact_grad={exact} {str(dtype)[6:]}"
                with report.section("dilated", case):
                    gen = torch.Generator().manual_seed(n)
                    base = [torch.randn(1, n, heads, head_dim, generator=gen) for _ in range(4)]
                    rounded = [x.to(device, dtype) for x in base]

                    def run(fn, inputs):
                        leaves = [x.detach().requires_grad_() for x in inputs[:3]]
                        out = fn(*leaves)
                        out.backward(inputs[3])
                        return [out.detach(), *(x.grad for x in leaves)]

                    want = run(lambda *x: reference_dilated_attention(*x, segments, rates, causal=causal,
                                                                      detach_weights=not exact),
                               [x.double() for x in rounded])
                    got = run(lambda *x: dilated_attention(*x, segments, rates, causal=causal, exact_grad=exact),
                              rounded)
                    ref = run(lambda *x: dilated_attention(*x, segments, rates, causal=causal, exact_grad=exact,
                                                           backend="math"), rounded)
                    err, ref_err = errors(got, want), errors(ref, want)
                    bad = any(e > 2 * r + ULP[dtype] for e, r in zip(err, ref_err))
                    report.add("dilated", case, "FAIL" if bad else "ok", max_abs_error=max(err),
                               math_error=max(ref_err), backend=backends.get_backend("auto", device, dtype, head_dim).name)
    with report.section("dilated", "decoding equals the forward"):
        attn = baselines.build("longnet", num_heads=4, segment_lengths=[16, 32, 64], dilation_rates=[1, 2, 4])
        n = 150
        q, k, v = (torch.randn(1, n, 4, 32, device=device) for _ in range(3))
        full = attn(q, k, v, causal=True)
        cache = attn.new_cache(1, 32, dtype=torch.float32, device=device, max_len=n)
        steps = []
        for t in range(n):
            cache.append(k[:, t:t + 1], v[:, t:t + 1])
            steps.append(cache.attend(q[:, t:t + 1]))
        err = (torch.cat(steps, 1) - full).abs().max().item()
        report.add("dilated", "decoding equals the forward", "ok" if err < 1e-4 else "FAIL", max_abs_error=err)


# 5 ------------------------------------------------------------------------------------------------

def check_baselines(report, device, n=300):
    for name in baselines.available():
        with report.section("baselines", name):
            attn = baselines.build(name, num_heads=4)
            small = baselines.variant_class(name).small_params
            if small:
                attn = baselines.build(name, num_heads=4, **small[0])
            q, k, v = (torch.randn(1, n, 4, 64, device=device, dtype=torch.float64) for _ in range(3))
            out = attn(*(x.to(torch.bfloat16) for x in (q, k, v)), causal=True)
            mask = attn.mask(n, causal=True)
            if mask is None:
                report.add("baselines", name, "ok" if torch.isfinite(out).all() else "FAIL",
                           "no single mask (checked by section 4)")
                continue
            scores = torch.einsum("bihd,bjhd->bhij", q, k) / 8.0
            want = torch.einsum("bhij,bjhd->bihd", scores.masked_fill(~mask.to(device), float("-inf")).softmax(-1), v)
            err = (out.double() - want).abs().max().item()
            report.add("baselines", name, "ok" if err < 3e-2 else "FAIL", max_abs_error=err)
    with report.section("baselines", "longformer flash-attn window vs block-sparse"):
        if not backends.BACKENDS["flash_attn"].installed() or not backends.BACKENDS["flash_attn"].supports(
                device, torch.bfloat16, 64):
            report.add("baselines", "longformer flash-attn window vs block-sparse", "skip", "flash-attn not usable")
        else:
            q, k, v = (torch.randn(1, n, 4, 64, device=device, dtype=torch.bfloat16) for _ in range(3))
            flash = baselines.build("longformer", num_heads=4, window=33, backend="flash_attn")(q, k, v)
            sparse = baselines.build("longformer", num_heads=4, window=33, backend="math")(q, k, v)
            err = (flash.float() - sparse.float()).abs().max().item()
            report.add("baselines", "longformer flash-attn window vs block-sparse", "ok" if err < 3e-2 else "FAIL",
                       max_abs_error=err)


# 6 ------------------------------------------------------------------------------------------------

SPEED_GOAL = 0.70  # LongNet's speed as a fraction of dense FA2's on the same blocks


def check_speed(report, device, lengths, dtype, repeats, schedule=None, standins=False):
    """The speed target: per branch of the paper's schedule at N, dense FA2 (the auto kernel) on
    that branch's blocks, fwd+bwd; then LongNet's fwd+bwd and its speed as a fraction of the
    time FA2 needs for the same pairs."""
    from longnet.schedule import paper_schedule

    heads, head_dim = 12, 64
    kernel = backends.get_backend("auto", device, dtype, head_dim)
    note = " (stand-in kernels: not a measurement)" if standins else ""
    for n in lengths:
        plan = paper_schedule(n) if schedule is None else schedule.extended_to(n)
        ideal_s, total_flops, measured = 0.0, 0.0, 0
        for branch in plan.branches:
            case = f"fa2 blocks N={n} w={branch.segment_length} r={branch.dilation_rate}"
            with report.section("speed", case):
                w = min(branch.segment_length, n)
                rows = -(-w // branch.dilation_rate)
                blocks = max(1, n // w)
                x = [torch.randn(blocks, heads, rows, head_dim, device=device, dtype=dtype)
                     for _ in range(4)]

                def step():
                    out, lse = kernel.forward(*x[:3], True, None)
                    kernel.backward(x[3], *x[:3], out, lse, True, None)
                stats = time_ms(step, device, warmup=1, repeats=repeats)
                kernel_flops = 3.5 * 4 * head_dim * heads * blocks * rows * (rows + 1) / 2
                rate = kernel_flops / (stats["median_ms"] * 1e-3)
                branch_flops = 3.5 * 4 * head_dim * sum(
                    branch.pairs(n, h, causal=True) for h in range(heads))
                ideal_s += branch_flops / rate
                total_flops += branch_flops
                measured += 1
                report.add("speed", case, "ok", kernel.name + note, ms=stats["median_ms"],
                           tflops=rate / 1e12, blocks=blocks, rows=rows)
            if device.type == "cuda":
                torch.cuda.empty_cache()
        case = f"longnet N={n} fwd+bwd vs fa2 blocks"
        with report.section("speed", case):
            if measured < len(plan.branches):
                raise RuntimeError("a block-shape row failed: no ratio")
            attn = baselines.build("longnet", num_heads=heads, segment_lengths=list(
                plan.segment_lengths), dilation_rates=list(plan.dilation_rates))
            x = [torch.randn(1, n, heads, head_dim, device=device, dtype=dtype, requires_grad=True)
                 for _ in range(3)]
            dout = torch.randn_like(x[0])

            def step():
                attn(*x, causal=True).backward(dout)
                for t in x:
                    t.grad = None
            stats = time_ms(step, device, warmup=1, repeats=repeats)
            fraction = ideal_s / (stats["median_ms"] * 1e-3)
            status = "ok" if fraction >= SPEED_GOAL else "below"
            report.add("speed", case, status,
                       f"{fraction:.2f} of FA2's speed on its blocks (goal {SPEED_GOAL}){note}",
                       ms=stats["median_ms"], tflops=total_flops / (stats["median_ms"] * 1e-3) / 1e12,
                       fraction_of_fa2=fraction, peak_mem_gb=_peak_bytes(device) / 1e9)
        if device.type == "cuda":
            torch.cuda.empty_cache()


def _peak_bytes(device):
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else float("nan")


VANILLA_MAX_N = 262_144


def check_latency(report, device, lengths, dtype, repeats, standins=False):
    peak = matmul_peak_flops(device, dtype, n=4096 if device.type == "cuda" else 512)
    report.add("latency", f"matmul peak {str(dtype)[6:]}", "ok", tflops=peak / 1e12)
    heads, head_dim = 12, 64
    for n in lengths:
        for mode in ("fwd", "fwd+bwd"):
            grad = mode == "fwd+bwd"
            for name in ("vanilla", "longnet", "sparse_fixed"):
                if name == "vanilla" and n > VANILLA_MAX_N:
                    continue  # quadratic: 1M would take minutes of the budget (speed has FA2)
                case = f"{name} N={n} {mode}"
                with report.section("latency", case):
                    attn = baselines.build(name, num_heads=heads)
                    flops = float(attn.flops(n, head_dim, causal=True))
                    x = [torch.randn(1, n, heads, head_dim, device=device, dtype=dtype, requires_grad=grad)
                         for _ in range(3)]
                    dout = torch.randn_like(x[0])

                    def step():
                        if grad:
                            attn(*x, causal=True).backward(dout)
                            for t in x:
                                t.grad = None
                        else:
                            with torch.no_grad():
                                attn(*x, causal=True)
                    label = ""
                    if grad:
                        flops *= 3.5  # forward + backward (2.5x: dS, dQ, dK, dV and the recompute)
                    if device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(device)
                    stats = time_ms(step, device, warmup=1, repeats=repeats)
                    if standins:
                        label = (label + " " if label else "") + "(stand-in kernels: not a measurement)"
                    report.add("latency", case, "ok", label, ms=stats["median_ms"],
                               tflops=flops / (stats["median_ms"] * 1e-3) / 1e12, peak_mem_gb=_peak_bytes(device) / 1e9)
                if device.type == "cuda":
                    torch.cuda.empty_cache()


def check_decode(report, device, context_lens, dtype):
    """Per-token decode latency and cache bytes (one layer, B = 1, H = 12, D = 64): the cache is
    filled with random rows, then one real step (append + attend) is timed, synchronised."""
    heads, head_dim = 12, 64
    for name in ("longnet", "vanilla"):
        attn = baselines.build(name, num_heads=heads)
        for n in context_lens:
            case = f"{name} context={n}"
            with report.section("decode", case):
                cache = attn.new_cache(1, head_dim, dtype=dtype, device=device, max_len=n)
                chunk = torch.randn(2, 1, min(n, 65_536), heads, head_dim, device=device, dtype=dtype)
                while cache.length < n - 8:
                    m = min(chunk.shape[2], n - 8 - cache.length)
                    cache.append(chunk[0, :, :m], chunk[1, :, :m])
                q, k, v = torch.randn(3, 1, 1, heads, head_dim, device=device, dtype=dtype).unbind(0)

                def step():
                    cache.append(k, v)
                    cache.attend(q)
                stats = time_ms(step, device, warmup=2, repeats=5)
                report.add("decode", case, "ok", ms=stats["median_ms"], cache_mb=cache.nbytes / 2**20)



# 7 ------------------------------------------------------------------------------------------------

def check_training(report, device, steps=20):
    from longnet.model import LanguageModel, ModelConfig
    with report.section("train", f"tiny LM {steps} steps bf16"):
        torch.manual_seed(0)
        cfg = ModelConfig.from_size("tiny", vocab_size=256, attention="longnet", max_seq_len=1024,
                                    attention_params=dict(segment_lengths=[128, 256, 512], dilation_rates=[1, 2, 4]))
        model = LanguageModel(cfg).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        seq_len, batch = 512, 4
        pattern = torch.arange(seq_len + 1, device=device) % 17  # learnable: loss must fall
        tokens = pattern.repeat(batch, 1)
        losses = []
        began = time.perf_counter()
        for _ in range(steps):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits = model(tokens[:, :-1])
                loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, 256), tokens[:, 1:].reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        elapsed = time.perf_counter() - began
        flops = model.training_flops_per_token(seq_len) * batch * seq_len * steps
        mfu = flops / elapsed / matmul_peak_flops(device, torch.bfloat16 if device.type == "cuda" else torch.float32,
                                                  n=2048 if device.type == "cuda" else 256)
        ok = all(math.isfinite(x) for x in losses) and losses[-1] < losses[0] and mfu < 1
        report.add("train", f"tiny LM {steps} steps bf16", "ok" if ok else "FAIL",
                   f"loss {losses[0]:.3f} -> {losses[-1]:.3f}", mfu=mfu)


# 8 ------------------------------------------------------------------------------------------------

def check_nccl(report, device, quick):
    world = torch.cuda.device_count() if device.type == "cuda" else 2
    if world < 2:
        report.add("nccl", "sequence parallel P=2", "not run", "1 GPU")
        return
    case = f"sequence parallel P=2 over {'NCCL' if device.type == 'cuda' else 'gloo'}"
    with report.section("nccl", case), tempfile.TemporaryDirectory() as tmp:
        n = 4096 if quick else 262_144
        out = Path(tmp) / "sp.csv"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
               str(ROOT / "benchmarks" / "sequence_parallel.py"), "--device", device.type, "--seq-lens", str(n),
               "--segment-lengths", "512", "1024", "2048", "--dilation-rates", "1", "2", "4",
               "--dtype", "bfloat16" if device.type == "cuda" else "float32", "--mode", "fwd+bwd",
               "--repeats", "2", "--out", str(out)]
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300, cwd=ROOT)
        import pandas as pd
        row = pd.read_csv(out).iloc[0]
        err = float(row["max_abs_error_vs_single"])
        report.add("nccl", case, "ok" if err < (5e-2 if device.type == "cuda" else 1e-4) else "FAIL",
                   ms=float(row["median_ms"]), max_abs_error=err)


# Sections in order of value, with what each takes on one H100 (seconds, estimated from their
# sizes: the budget's guide, not a measurement); --quick runs each in a fraction of that.
SECTION_S = {"env": 5, "kernels": 60, "dilated": 60, "speed": 60, "latency": 120, "train": 30,
             "baselines": 20, "grid": 10, "decode": 40, "nccl": 60}
QUICK_FRACTION = 0.05
QUICK_SCHEDULE = DilatedSchedule([128, 256], [1, 2])  # --quick: extended to its N (1024)


def versions(device) -> dict:
    """The library versions a GPU result depends on: torch, CUDA, cuDNN, flash-attn, xformers,
    the NVIDIA driver and the GPU (None where absent)."""
    found = {"torch": torch.__version__, "cuda": torch.version.cuda,
             "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
             "gpu": device_name(device)}
    for module in ("flash_attn", "xformers"):
        backend = next((b for b in backends.BACKENDS.values() if b.module and
                        b.module.split(".")[0] == module), None)
        imported = backend is not None and backend.import_error() is None
        found[module] = getattr(sys.modules.get(module), "__version__", "?") if imported else None
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        found["driver"] = smi.stdout.strip().splitlines()[0] if smi.returncode == 0 and smi.stdout.strip() else None
    except (OSError, subprocess.TimeoutExpired):
        found["driver"] = None
    return {f"version_{key}": value for key, value in found.items()}


def write_results(report, out: Path, prov: dict, began: float) -> None:
    """gpu_check.csv and .json with every row so far (each file written atomically)."""
    import pandas as pd
    frame = pd.DataFrame(report.rows)
    write_csv(frame.assign(**prov), out / "gpu_check.csv")
    write_text(json.dumps(dict(provenance=prov, wall_s=time.perf_counter() - began, rows=report.rows),
                          indent=1, default=str), out / "gpu_check.json")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes; on a CPU, under 2 minutes")
    parser.add_argument("--standins", action="store_true",
                        help="route the CUDA backends through longnet/cuda_standins.py (CPU only)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "gpu")
    parser.add_argument("--sections", nargs="+", default=list(SECTION_S), choices=list(SECTION_S),
                        help="in order of value; default all")
    parser.add_argument("--budget-s", type=float, default=540,
                        help="skip a section whose estimate would overrun this many seconds")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.standins and device.type != "cpu":
        parser.error("--standins replaces CUDA kernels by CPU code: use it with --device cpu")
    report = Report()
    began = time.perf_counter()
    context = contextlib.nullcontext()
    if args.standins:
        from longnet.cuda_standins import cuda_standins
        context = cuda_standins()
    names = [n for n in CUDA_BACKENDS if device.type == "cuda" or args.standins] or ["torch_cpu"]
    with context:
        sections = {
            "env": lambda: check_env(report, device),
            "kernels": lambda: check_kernels(report, device, names, [1, 17, 64] if args.quick else
                                             [1, 17, 64, 300, 2048], [64] if args.quick else [64, 128]),
            "grid": lambda: check_grid(report, device, names),
            "dilated": lambda: check_dilated(report, device, [300] if args.quick else [300, 4099, 32768],
                                             torch.float32 if device.type == "cpu" else torch.bfloat16,
                                             *((4, 32) if args.quick else (8, 64))),
            "baselines": lambda: check_baselines(report, device, n=96 if args.quick else 300),
            "speed": lambda: check_speed(report, device, [1024] if args.quick else [32_768, 1_048_576],
                                         torch.float32 if device.type == "cpu" else torch.bfloat16,
                                         repeats=1 if args.quick else 3,
                                         schedule=QUICK_SCHEDULE if args.quick else None,
                                         standins=args.standins),
            "latency": lambda: check_latency(report, device, [1024] if args.quick else [32_768, 262_144, 1_048_576],
                                             torch.float32 if device.type == "cpu" else torch.bfloat16,
                                             repeats=1 if args.quick else 3, standins=args.standins),
            "train": lambda: check_training(report, device, steps=4 if args.quick else 20),
            "nccl": lambda: check_nccl(report, device, args.quick),
            "decode": lambda: check_decode(report, device, [4096] if args.quick else [65_536, 1_048_576],
                                           torch.float32 if device.type == "cpu" else torch.bfloat16),
        }
        label = re.sub(r"[^A-Za-z0-9]+", "-", device_name(device)).strip("-").lower()
        if args.quick or args.standins:
            label += "-quick" + ("-standins" if args.standins else "")
        out = args.out / label
        prov = provenance(vars(args) | {"out": str(args.out)}, device=device) | versions(device)
        for name in args.sections:
            estimate = SECTION_S[name] * (QUICK_FRACTION if args.quick else 1)
            left = args.budget_s - (time.perf_counter() - began)
            if estimate > left:
                report.add(name, "(section)", "skip", f"skipped: budget ({left:.0f} s left of "
                           f"--budget-s {args.budget_s:g}, the section takes ~{estimate:.0f} s)")
            else:
                started = time.perf_counter()
                sections[name]()
                print(f"[gpu_check] {name}: {time.perf_counter() - started:.1f} s", file=sys.stderr,
                      flush=True)
            write_results(report, out, prov, began)  # after every section: a stopped run keeps it

    import pandas as pd
    frame = pd.DataFrame(report.rows)
    with pd.option_context("display.max_rows", None, "display.width", 200, "display.max_colwidth", 60):
        print(frame.astype(object).fillna("").to_string(index=False))
    failed = int((frame["status"] == "FAIL").sum())
    print(f"\n{len(frame)} checks: {int((frame['status'] == 'ok').sum())} ok, {failed} FAIL, "
          f"{int(frame['status'].isin(['skip', 'not run']).sum())} skipped or not run; "
          f"{time.perf_counter() - began:.0f} s; written to {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
