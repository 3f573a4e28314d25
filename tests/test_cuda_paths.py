"""The CUDA code paths, run without a GPU: every CUDA backend through CPU stand-ins that enforce
the real kernels' preconditions (longnet/cuda_standins.py, docs/kernels.md), fake CUDA tensors for
device placement, and the device choices that must come from configuration, not from "CUDA exists".
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import warnings
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import baselines
from dilated_reference import reference_dilated_attention
from test_baselines import masked_reference
import longnet.cuda_standins as kernels
from longnet import backends, dilated_attention
from longnet.block_sparse import Plan, Piece, block_sparse_attention
from longnet.cuda_standins import CUDA_BACKENDS, cuda_standins
from longnet.schedule import DilatedSchedule

HALF = (torch.bfloat16, torch.float16)
# every CUDA backend with every dtype it takes
KERNEL_CASES = [(name, dtype) for name in CUDA_BACKENDS for dtype in (*HALF, torch.float32)
                if name in ("torch_efficient", "xformers") or dtype in HALF]


@pytest.fixture
def standins():
    with cuda_standins() as calls:
        calls.clear()
        yield calls


def _fwd_bwd(fn, inputs, dout, dtype):
    leaves = [x.to(dtype).detach().requires_grad_() for x in inputs]
    out = fn(*leaves)
    out.backward(dout.to(dtype))
    return [t.double() for t in (out, *(x.grad for x in leaves))]


def _errors(got, want):
    return [(g - w).abs().max().item() for g, w in zip(got, want)]


# --- 1. the flash backward: no cum_seq tensors -------------------------------------------------

def test_flash_backward_with_int64_cum_seq_is_what_crashed(standins):
    """The stand-in enforces the kernel's rule: a defined cum_seq selects varlen, which needs int32.
    This is the call the suite used to make; the fixed call passes None."""
    q, k, v = (torch.randn(1, 2, 16, 8, dtype=torch.bfloat16) for _ in range(3))
    out, lse = backends.BACKENDS["torch_flash"].forward(q, k, v, True, None)
    empty = torch.empty(0, dtype=torch.int64)
    with pytest.raises(RuntimeError, match="int32"):
        kernels.sdpa_flash_backward(out, q, k, v, out, lse, empty, empty, 16, 16, 0.0, True, empty, empty)
    dq, dk, dv = backends.BACKENDS["torch_flash"].backward(out, q, k, v, out, lse, True, None)
    assert dq.shape == q.shape and dq.dtype == torch.bfloat16


def test_standins_return_the_real_layouts(standins):
    q, k, v = (torch.randn(3, 2, 17, 8, dtype=torch.float16) for _ in range(3))
    flash = kernels.sdpa_flash_forward(q, k, v, 0.0, True)
    assert len(flash) == 9 and flash[2] is None and flash[3] is None and flash[4:6] == (17, 17)
    assert flash[1].shape == (3, 2, 17) and flash[1].dtype == torch.float32
    assert flash[0].transpose(1, 2).is_contiguous()  # (B, L, H, D) memory, as the kernel writes it
    out, lse, seed, offset = kernels.sdpa_efficient_forward(q, k, v, None, True, 0.0, True)
    assert lse.shape == (3, 2, 32) and torch.isnan(lse[..., 17:]).all()  # padded to 32, unwritten
    with pytest.raises(RuntimeError, match="aligned"):  # an unpadded lse: strideB 17 % 8 != 0
        kernels.sdpa_efficient_backward(out, q, k, v, None, out, lse[..., :17].contiguous(), seed, offset,
                                              0.0, [True, True, True, False], True)
    with pytest.raises(RuntimeError, match="multiple of 8"):
        kernels.sdpa_flash_forward(*(x[..., :6].contiguous() for x in (q, k, v)))
    with pytest.raises(RuntimeError, match="fp16 and bf16"):
        kernels.sdpa_flash_forward(q.float(), k.float(), v.float())
    with pytest.raises(RuntimeError, match="contiguous last dimension"):
        kernels.sdpa_flash_forward(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))


def test_every_backend_backward_uses_the_given_out_and_lse(standins):
    """The exact-gradient identity needs kernels that take the merged (out, lse), not their own:
    check each backend's backward against Math with a shifted lse and another out."""
    q, k, v, dout, other = (torch.randn(2, 1, 24, 16) for _ in range(5))
    for name, dtype in KERNEL_CASES:
        kernel = backends.BACKENDS[name]
        x = [t.to(dtype) for t in (q, k, v, dout, other)]
        _, lse = kernel.forward(*x[:3], False, None)
        want = backends.Math().backward(x[3], *x[:3], x[4], lse + 0.7, False, None)
        got = kernel.backward(x[3], *x[:3], x[4], lse + 0.7, False, None)
        for g, w in zip(got, want):
            torch.testing.assert_close(g.float(), w.float(), rtol=2e-2, atol=2e-2)


def test_the_efficient_backward_gets_out_in_the_kernels_layout(standins):
    """kernel_backward.h reads out as (B, L, H, D) rows (o_strideM == H * D). An out laid out as
    (B, H, L, D) with H > 1 is refused by the stand-in; TorchEfficient.backward restores the
    layout, and its gradients are the math path's."""
    q, k, v, dout = (torch.randn(2, 3, 24, 8, dtype=torch.bfloat16) for _ in range(4))
    kernel = backends.BACKENDS["torch_efficient"]
    out, lse = kernel.forward(q, k, v, True, None)
    bhld = out.contiguous()  # (B, H, L, D) memory: strideM = D, not H * D
    padded = torch.nn.functional.pad(lse, (0, 8)).contiguous()
    with pytest.raises(RuntimeError, match="o_strideM"):
        kernels.sdpa_efficient_backward(dout, q, k, v, None, bhld, padded, None, None, 0.0,
                                        [True, True, True, False], True)
    got = kernel.backward(dout, q, k, v, bhld, lse, True, None)
    want = backends.Math().backward(dout, q, k, v, bhld, lse, True, None)
    for g, w in zip(got, want):
        torch.testing.assert_close(g.float(), w.float(), rtol=2e-2, atol=2e-2)


def test_the_math_fallback_bounds_its_scores_per_call():
    """A kernel that materialises its scores (the math backend, 16 bytes a pair) gets at most
    WORKSPACE_BYTES of them per call, on CUDA too (CHUNK_ROWS alone let it build 4M x 2048 scores,
    34 GB); the fused kernels keep CHUNK_ROWS' chunks; the result is the same either way."""
    from longnet.block_sparse import CHUNK_ROWS, WORKSPACE_BYTES, plan_chunks
    from longnet.dilated_attention import dilated_plan
    from longnet.schedule import DilatedSchedule

    plan = dilated_plan(1 << 17, 1, DilatedSchedule([2048], [1]), True, torch.device("cpu"))
    cuda = torch.device("cuda")  # only its type is read
    for pair_bytes in (0, backends.Math.bytes_per_pair):
        chunks = [c for _, c in plan_chunks(plan, 1, cuda, None, pair_bytes)]
        rows = max(c.gather_rows.numel() for c in chunks)
        assert rows <= CHUNK_ROWS["cuda"]
        if pair_bytes:
            assert rows * 2048 * pair_bytes <= WORKSPACE_BYTES["cuda"] and len(chunks) > 1
    q, k, v = (torch.randn(1, 4096, 1, 8) for _ in range(3))
    from longnet.dilated_attention import dilated_attention
    torch.testing.assert_close(dilated_attention(q, k, v, [2048], [1], backend="math"),
                               dilated_attention(q, k, v, [2048], [1]), rtol=1e-4, atol=1e-5)


# --- 2. dilated attention end to end on every CUDA backend ----------------------------------------

@pytest.mark.parametrize("name, dtype", KERNEL_CASES)
@pytest.mark.parametrize("causal, exact_grad", [(True, True), (False, False)])
def test_dilated_attention_on_cuda_backends_matches_float64(standins, name, dtype, causal, exact_grad):
    """Out, dq, dk, dv within 2x (plus a rounding ulp) of the error of the same-dtype math path."""
    torch.manual_seed(0)
    segments, rates = [16, 32, 48], [1, 2, 3]  # 48 % ... w mod r != 0 for r = 3 at w = 16 and 32
    inputs = [torch.randn(2, 70, 4, 16, dtype=torch.float64) for _ in range(3)]
    dout = torch.randn(2, 70, 4, 16, dtype=torch.float64)
    want = _fwd_bwd(lambda *x: reference_dilated_attention(*x, segments, rates, causal=causal,
                                                           detach_weights=not exact_grad),
                    inputs, dout, torch.float64)
    math_err = _errors(_fwd_bwd(lambda *x: dilated_attention(*x, segments, rates, causal=causal, backend="math",
                                                             exact_grad=exact_grad), inputs, dout, dtype), want)
    got_err = _errors(_fwd_bwd(lambda *x: dilated_attention(*x, segments, rates, causal=causal, backend=name,
                                                            exact_grad=exact_grad), inputs, dout, dtype), want)
    ulp = {torch.bfloat16: 8e-3, torch.float16: 1e-3, torch.float32: 1e-6}[dtype]
    for got, ref in zip(got_err, math_err):
        assert got <= 2 * ref + ulp, (got_err, math_err)
    assert sum(standins.values()) > 0


def test_kernel_batches_stay_under_the_cuda_grid_limit(standins):
    """65,536+ blocks of one row: the engine must split them into calls of <= 65,535."""
    n = 65_536 + 37
    q, k, v = (torch.randn(2, n, 1, 8, dtype=torch.bfloat16) for _ in range(3))
    out = dilated_attention(q, k, v, [1], [1], causal=True, backend="torch_flash")
    torch.testing.assert_close(out, v)  # a one-row causal block returns its own value
    assert standins["_scaled_dot_product_flash_attention"] >= 3  # 2 * n blocks, <= 65,535 a call
    with pytest.raises(RuntimeError, match="invalid configuration"):  # what one call would have done
        kernels.sdpa_flash_forward(*(x.reshape(-1, 1, 1, 8)[:65_536] for x in (q, k, v)))
    plan = Plan([Piece(torch.arange(3).reshape(3, 1))], 3)
    with pytest.raises(ValueError, match="batch size"):
        block_sparse_attention(*(torch.randn(65_536, 3, 1, 8, dtype=torch.bfloat16) for _ in range(3)), plan,
                               backend="torch_flash")


def test_head_dim_not_a_multiple_of_8_falls_back(standins):
    """bf16 head dim 12: no CUDA kernel aligns it (flash: % 8; cutlass and xformers: % 8 for half
    types), so auto takes no CUDA kernel (here the CPU one; on a GPU the math path); the xformers
    stand-in refuses it as xformers does."""
    q, k, v = (torch.randn(1, 40, 2, 12, dtype=torch.bfloat16) for _ in range(3))
    assert backends.get_backend("auto", "cpu", torch.bfloat16, 12).name in ("torch_cpu", "math")
    for name in ("torch_flash", "xformers", "torch_efficient"):
        with pytest.raises(ValueError, match="usable here"):
            backends.get_backend(name, "cpu", torch.bfloat16, 12)
    assert backends.get_backend("xformers", "cpu", torch.float32, 12).name == "xformers"  # fp32: % 4
    import xformers.ops.fmha as fmha
    with pytest.raises(NotImplementedError, match="No operator found"):
        fmha.memory_efficient_attention_forward_requires_grad(q, k, v)
    with pytest.raises(ValueError, match="usable here"):
        backends.get_backend("torch_flash", "cpu", torch.bfloat16, 12)
    xformers_calls = standins["memory_efficient_attention_forward_requires_grad"]
    out = dilated_attention(q, k, v, [8, 16], [1, 2], backend="auto")
    torch.testing.assert_close(out, dilated_attention(q, k, v, [8, 16], [1, 2], backend="math"),
                               atol=1e-2, rtol=2e-2)  # bf16 rounding of two CPU paths
    assert standins["_scaled_dot_product_flash_attention"] == standins["flash_attn_func"] == 0
    assert standins["memory_efficient_attention_forward_requires_grad"] == xformers_calls


# --- 3. every baseline on every CUDA backend ------------------------------------------------------

@pytest.mark.parametrize("name", baselines.available())
@pytest.mark.parametrize("backend", ["torch_flash", "xformers"])
def test_every_baseline_on_cuda_backends(standins, name, backend):
    small = baselines.variant_class(name).small_params
    kernel = {"backend": backend} if "backend" in baselines.param_defaults(name) else {}
    attn = baselines.build(name, num_heads=4, **(small[0] if small else {}), **kernel)
    torch.manual_seed(1)
    q, k, v = (torch.randn(2, 45, 4, 16, dtype=torch.float64) for _ in range(3))
    out = attn(*(x.to(torch.bfloat16) for x in (q, k, v)), causal=True)
    mask = attn.mask(45, causal=True)
    if mask is not None:
        want = masked_reference(q, k, v, mask)
        math_attn = baselines.build(name, num_heads=4, **{**attn.params, **({"backend": "math"} if "backend"
                                                                             in attn.params else {})})
        math_err = (math_attn(*(x.to(torch.bfloat16) for x in (q, k, v))).double() - want).abs().max()
        assert (out.double() - want).abs().max() <= 2 * math_err + 8e-3
    assert torch.isfinite(out).all()


def test_longformer_flash_window_path_matches_its_block_sparse_path(standins):
    attn = baselines.build("longformer", num_heads=4, window=7, backend="flash_attn")
    reference = baselines.build("longformer", num_heads=4, window=7, backend="math")
    q, k, v = (torch.randn(2, 50, 4, 16, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    out = attn(q, k, v, causal=True)
    assert standins["flash_attn_func"] == 1
    want = reference(q, k, v, causal=True)
    torch.testing.assert_close(out.float(), want.float(), rtol=2e-2, atol=2e-2)
    grads = torch.autograd.grad(out.float().sum(), (q, k, v))
    want_grads = torch.autograd.grad(want.float().sum(), (q, k, v))
    for g, w in zip(grads, want_grads):
        torch.testing.assert_close(g.float(), w.float(), rtol=5e-2, atol=5e-2)


# --- 4. sequence parallelism on a CUDA backend (two gloo ranks, stand-ins in each) ------------------

def _sequence_parallel_rank(rank, world, port, path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=60))
    try:
        from longnet.sequence_parallel import sequence_parallel_dilated_attention, shard_sequence
        with cuda_standins() as calls:
            torch.manual_seed(3)
            full = [torch.randn(1, 32, 2, 16) for _ in range(3)]
            dout = torch.randn(1, 32, 2, 16)
            single = _fwd_bwd(lambda *x: dilated_attention(*x, [8, 32], [1, 2], backend="math"), full, dout,
                              torch.bfloat16)
            local = [shard_sequence(x, None).to(torch.bfloat16).detach().requires_grad_() for x in full]
            out = sequence_parallel_dilated_attention(*local, [8, 32], [1, 2], backend="torch_flash")
            out.backward(shard_sequence(dout, None).to(torch.bfloat16))
            mine = [shard_sequence(t, None) for t in single]
            errors = [(a.double() - b).abs().max().item() for a, b in zip([out, *(x.grad for x in local)], mine)]
        if rank == 0:
            with open(path, "w") as f:
                json.dump(dict(errors=errors, calls=dict(calls)), f)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_sequence_parallel_through_flash_standins(tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = tmp_path / "sp.json"
    mp.spawn(_sequence_parallel_rank, args=(2, port, str(path)), nprocs=2, join=True)
    result = json.loads(path.read_text())
    assert result["calls"]["_scaled_dot_product_flash_attention"] > 0
    assert result["calls"]["_scaled_dot_product_flash_attention_backward"] > 0
    assert max(result["errors"]) < 3e-2, result


# --- 5. a package that is installed but cannot be imported ------------------------------------------

def test_broken_package_falls_back_with_one_warning(tmp_path, monkeypatch):
    package = tmp_path / "broken_xformers_for_test"
    package.mkdir()
    (package / "__init__.py").write_text("raise ImportError('xformers needs flash_attn >= 2.7.1, <= 2.8.4')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    kernel = backends.BACKENDS["xformers"]
    monkeypatch.setattr(kernel, "module", "broken_xformers_for_test")
    monkeypatch.setattr(kernel, "device_type", "cpu")  # as if on a GPU machine
    monkeypatch.setattr(kernel, "_import_error", backends._UNTRIED)
    monkeypatch.setattr(backends, "_WARNED", set())
    with pytest.warns(UserWarning, match="flash_attn >= 2.7.1"):
        assert backends.get_backend("auto", "cpu", torch.float32, 8).name == "torch_cpu"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once only
        assert backends.get_backend("auto", "cpu", torch.float32, 8).name == "torch_cpu"
    with pytest.raises(ImportError, match="installed but cannot be imported.*2.8.4"):
        backends.get_backend("xformers", "cpu", torch.float32, 8)


# --- 6. fake CUDA tensors: everything is created on the input's device --------------------------------

def _fake_cuda(*shape, dtype=torch.float32):
    return torch.randn(*shape, device="cuda", dtype=dtype)


@pytest.fixture
def fake_cuda():
    from torch._subclasses.fake_tensor import FakeTensorMode
    from longnet.dilated_attention import branch_blocks, dilated_plan
    branch_blocks.cache_clear()
    dilated_plan.cache_clear()
    with FakeTensorMode(allow_non_fake_inputs=False):
        yield
    branch_blocks.cache_clear()  # plans built for the fake device hold fake tensors
    dilated_plan.cache_clear()


# Measured limits of FakeTensorMode on a CPU-only torch: copy_ (so .contiguous() and Module.to) on
# fake CUDA tensors raise "PyTorch is not linked with support for cuda devices", and so do Python
# slicing and torch.tensor(data, device=...); the autograd engine aborts. So these tests check
# what the engine creates (plans, index tensors, backend choice) and the forwards that need no
# copy_; the gathers themselves run in the stand-in tests above, on the same code.

def expected_auto(dtype, head_dim) -> str:
    """What `auto` must pick on CUDA, from what imports here, written out from the kernels' own
    rules: flash-attn, then torch's flash kernel (half types, head dim a multiple of 8, <= 256),
    then xformers, then torch's mem-efficient kernel (head dim a multiple of 8 for half types,
    4 for float32), then the math path."""
    half = dtype in (torch.float16, torch.bfloat16)
    flash_ok = half and head_dim % 8 == 0 and head_dim <= 256
    efficient_ok = head_dim % (8 if half else 4) == 0

    def importable(name):  # imports, not merely installed (a broken install falls back)
        return backends.BACKENDS[name].import_error() is None
    for name, ok in (("flash_attn", flash_ok and importable("flash_attn")), ("torch_flash", flash_ok),
                     ("xformers", efficient_ok and importable("xformers")),
                     ("torch_efficient", efficient_ok)):
        if ok:
            return name
    return "math"


CHOICES = [(dtype, d) for dtype in (torch.bfloat16, torch.float16, torch.float32) for d in (64, 12, 260)]


@pytest.mark.parametrize("packages", ["as installed", "flash_attn and xformers importable"])
def test_dilated_plans_and_backend_choice_on_cuda(fake_cuda, packages):
    """The choice holds on every machine the suite supports: computed from what imports, and
    once more with stand-in flash_attn and xformers modules importable under their real names
    (what a GPU box with both installed looks like)."""
    from longnet.cuda_standins import standin_packages
    from longnet.dilated_attention import dilated_plan
    cuda = torch.device("cuda", 0)
    plan = dilated_plan(100, 4, DilatedSchedule((16, 32, 64), (1, 2, 4)), True, cuda)
    tensors = [t for p in plan.prepared for t in (p.gather_rows, p.scatter_rows, p.k_rows)]
    assert tensors and all(t.device == cuda for t in tensors)
    with standin_packages() if packages != "as installed" else contextlib.nullcontext():
        for dtype, head_dim in CHOICES:
            assert backends.get_backend("auto", cuda, dtype, head_dim).name == \
                expected_auto(dtype, head_dim), (dtype, head_dim)
        if packages != "as installed":
            assert backends.get_backend("auto", cuda, torch.bfloat16, 64).name == "flash_attn"
            assert backends.get_backend("auto", cuda, torch.float32, 64).name == "xformers"
    assert backends.get_backend("auto", cuda, torch.bfloat16, 12).name == expected_auto(torch.bfloat16, 12)


def test_vanilla_forward_on_cuda(fake_cuda):
    attn = baselines.build("vanilla", num_heads=4)
    q, k, v = (_fake_cuda(2, 96, 4, 64, dtype=torch.bfloat16) for _ in range(3))
    out = attn(q, k, v, causal=True)
    assert out.device.type == "cuda" and out.shape == q.shape


# --- 7. the device comes from configuration, never from "CUDA exists" ---------------------------------

def test_device_choice_ignores_cuda_availability(monkeypatch):
    from longnet import sequence_parallel, train
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert train.TrainConfig().device == "cpu"
    assert train.resolve_device("cpu", local_rank=1).type == "cpu"
    assert sequence_parallel.process_group_backend(torch.device("cpu")) == "gloo"
    assert sequence_parallel.process_group_backend(torch.device("cuda", 0)) == "nccl"
    with pytest.raises(ValueError, match="LOCAL_RANK 1.*1 CUDA device"):
        train.resolve_device("cuda", local_rank=1)
    assert train.resolve_device("cuda", local_rank=0) == torch.device("cuda", 0)


def test_xpos_has_no_host_sync_off_the_cpu():
    """Meta tensors refuse to give a Python number, as a host sync would need: XPos must not ask."""
    from longnet.positions import XPos
    xpos = XPos(64, center=512).to("meta")
    q = torch.randn(2, 128, 4, 64, device="meta")
    out_q, out_k = xpos(q, q, torch.arange(128, device="meta"))
    assert out_q.device.type == "meta" and out_k.shape == q.shape
    with pytest.raises(ValueError, match="XPos supports positions within"):  # on CPU it is still checked
        cpu_q = torch.zeros(1, 10**6, 1, 64)
        XPos(64, center=0)(cpu_q, cpu_q, torch.arange(10**6))


# --- 8. numbers a GPU run would have got wrong -------------------------------------------------------

def test_timer_runs_inner_calls_between_synchronisations(monkeypatch):
    from longnet import timing
    calls, syncs = [], []
    monkeypatch.setattr(timing, "synchronize", lambda device: syncs.append(device))
    stats = timing.time_ms(lambda: calls.append(1), "cpu", warmup=2, repeats=3, inner=4)
    assert len(calls) == 2 + 3 * 4 and stats["repeats"] == 3 and stats["min_ms"] <= stats["median_ms"]
    assert timing.matmul_peak_flops("cpu", n=64, inner=2, repeats=2) > 0
    with pytest.raises(ValueError, match="inner >= 1"):
        timing.time_ms(lambda: None, inner=0)


def test_idle_memory_is_device_memory_on_cuda(monkeypatch):
    from longnet import profiling
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 12345)
    assert profiling.idle_mem_bytes("cuda:0") == 12345
    assert profiling.idle_mem_bytes("cpu") > 1 << 20  # this process's RSS


def test_scaling_benchmark_validates_with_the_link_it_ran_over():
    import importlib.util
    import pandas as pd
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "sequence_parallel_scaling.py"
    spec = importlib.util.spec_from_file_location("sequence_parallel_scaling", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.link_for(pd.DataFrame({"device": ["cuda", "cuda"]})) == "nvlink"
    assert module.link_for(pd.DataFrame({"device": ["cpu"]})) == "gloo_loopback"
    assert module.link_for(pd.DataFrame({"device": ["cuda"]}), "infiniband") == "infiniband"
    with pytest.raises(ValueError, match="several device types"):
        module.link_for(pd.DataFrame({"device": ["cpu", "cuda"]}))
