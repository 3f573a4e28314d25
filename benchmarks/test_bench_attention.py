"""pytest-benchmark timings of every registered attention variant and of the raw kernels.

Not part of the default test run (pytest's testpaths is tests/). Run:
    pytest benchmarks/ --benchmark-only --benchmark-json=results/work/bench.json
Each benchmark's extra_info holds variant, params, seq_len, mode, flops (forward+backward counted
as 3.5x forward), so GFLOP/s = flops / stats.median / 1e9 can be computed from the JSON.
Sizes: BENCH_SEQ_LENS (space-separated, default "2048 8192"), H = 8, D = 64, fp32, causal.
"""
import os

import pytest
import torch

import baselines
from longnet.backends import available_backends, get_backend
from longnet.flops import dense_attention_flops, training_step_flops

SEQ_LENS = [int(n) for n in os.environ.get("BENCH_SEQ_LENS", "2048 8192").split()]
HEADS, DIM = 8, 64


def _inputs(n, grad, layout="bnhd"):
    shape = (1, n, HEADS, DIM) if layout == "bnhd" else (1, HEADS, n, DIM)
    generator = torch.Generator().manual_seed(n)
    return [torch.randn(shape, generator=generator).requires_grad_(grad) for _ in range(4)]


@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("n", SEQ_LENS)
@pytest.mark.parametrize("variant", baselines.available())
def test_variant(benchmark, variant, n, mode):
    torch.manual_seed(0)
    attn = baselines.build(variant, num_heads=HEADS)
    grad = mode == "fwd+bwd"
    q, k, v, dout = _inputs(n, grad)
    flops = attn.flops(n, DIM, causal=True)
    benchmark.extra_info.update(variant=variant, params=attn.params, seq_len=n, mode=mode,
                                heads=HEADS, head_dim=DIM, dtype="float32",
                                flops=training_step_flops(flops) if grad else flops)

    def step():
        if grad:
            attn(q, k, v, causal=True).backward(dout)
        else:
            with torch.no_grad():
                attn(q, k, v, causal=True)

    benchmark.pedantic(step, warmup_rounds=1, rounds=5, iterations=1)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("n", SEQ_LENS)
@pytest.mark.parametrize("backend", available_backends("cpu", torch.float32, DIM))
def test_kernel_forward(benchmark, backend, n, causal):
    """One dense block through a backend's forward: the throughput the cost model starts from."""
    if backend == "math" and n > 4096:
        pytest.skip("the math reference materialises n x n scores")
    kernel = get_backend(backend, "cpu", torch.float32, DIM)
    q, k, v, _ = _inputs(n, False, layout="bhnd")
    benchmark.extra_info.update(variant=f"kernel:{backend}", seq_len=n, mode="fwd", causal=causal,
                                heads=HEADS, head_dim=DIM, dtype="float32",
                                flops=dense_attention_flops(n, HEADS, DIM, causal))
    with torch.no_grad():
        benchmark.pedantic(kernel.forward, args=(q, k, v, causal, None), warmup_rounds=1, rounds=5,
                           iterations=1)
