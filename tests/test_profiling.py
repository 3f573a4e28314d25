"""The profiler: measured cells, constant token budget, and oom / timeout / error recorded, not raised."""
import math
import textwrap

import pytest

from longnet.profiling import Cell, run_cell, sweep

# A tiny unregistered variant module (profiled as "module:factory"), so these tests do not depend
# on which baselines are registered. `hog` grabs memory and `sleeper` never finishes.
VARIANTS = '''
import time
import torch
import torch.nn.functional as F

class Dense:
    def __init__(self, num_heads, alloc_bytes=0, sleep_s=0.0):
        self.alloc_bytes, self.sleep_s = alloc_bytes, sleep_s
    def __call__(self, q, k, v, causal=True):
        if self.alloc_bytes:
            hog = torch.ones(self.alloc_bytes // 4)  # touched, so it is resident
        time.sleep(self.sleep_s)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                             v.transpose(1, 2), is_causal=causal)
        return out.transpose(1, 2)
    def flops(self, n, head_dim, causal=True):
        return 4.0 * 2 * head_dim * (n * (n + 1) // 2 if causal else n * n)

def dense(num_heads, **params):
    return Dense(num_heads, **params)

def broken(num_heads):
    raise ValueError("this variant cannot be built")
'''


@pytest.fixture
def variant_module(tmp_path, monkeypatch):
    (tmp_path / "profiled_variants.py").write_text(textwrap.dedent(VARIANTS))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # for the sweep's child processes
    return "profiled_variants"


def test_run_cell_in_process(variant_module):
    cell = Cell(f"{variant_module}:dense", seq_len=64, batch=2, mode="fwd+bwd", heads=2,
                head_dim=8, repeats=3)
    row = run_cell(cell)
    assert row["status"] == "ok" and row["repeats"] == 3
    assert 0 < row["min_ms"] <= row["median_ms"] <= row["max_ms"]
    # forward FLOPs of the variant x batch x 3.5 for forward+backward
    assert row["flops"] == pytest.approx(3.5 * 2 * 4.0 * 2 * 8 * (64 * 65 // 2))
    assert row["gflops_per_s"] == pytest.approx(row["flops"] / row["median_ms"] / 1e6)
    assert row["peak_mem_bytes"] > 0
    # warmup=0: the first call is the measurement (for cells too slow to run twice)
    once = run_cell(Cell(f"{variant_module}:dense", seq_len=64, heads=2, head_dim=8, warmup=0,
                         repeats=1))
    assert once["status"] == "ok" and once["repeats"] == 1


def test_sweep_constant_tokens_and_failures_recorded(variant_module):
    """One sweep covers the ok cells, the token budget, and every failure status, in child processes."""
    variants = [dict(name=f"{variant_module}:dense"),
                dict(name=f"{variant_module}:dense", params=dict(alloc_bytes=1 << 30)),
                dict(name=f"{variant_module}:dense", params=dict(sleep_s=60.0)),
                dict(name=f"{variant_module}:broken")]
    df = sweep(variants, seq_lens=[128, 64], modes=["fwd"], heads=2, head_dim=8,
               total_tokens=256, repeats=2, time_cap_s=3.0, mem_cap_bytes=900 << 20)
    required = {"variant", "params", "seq_len", "batch", "mode", "device", "dtype", "median_ms",
                "min_ms", "max_ms", "peak_mem_bytes", "flops", "gflops_per_s", "status",
                "backend", "git_commit", "torch_version", "config_hash"}
    assert required <= set(df.columns)
    assert len(df) == 8
    ok = df[(df.params == "{}") & df.variant.str.endswith(":dense")]
    assert list(ok.status) == ["ok", "ok"]
    assert list(ok.seq_len) == [64, 128] and list(ok.batch) == [4, 2]  # batch = 256 / N
    assert (ok.tokens == 256).all() and (ok.median_ms > 0).all() and (ok.peak_mem_bytes > 0).all()

    hog = df[df.params.str.contains("alloc_bytes")]
    assert list(hog.status) == ["oom", "oom"]  # the second was skipped after the first
    assert hog.peak_mem_bytes.iloc[0] > 900 << 20
    slow = df[df.params.str.contains("sleep_s")]
    assert list(slow.status) == ["timeout", "timeout"]
    assert math.isnan(slow.median_ms.iloc[0])
    broken = df[df.variant.str.endswith(":broken")]
    assert list(broken.status) == ["error", "error"]
    assert broken.error.str.contains("cannot be built").all()


def test_bad_input_names_the_field():
    with pytest.raises(ValueError, match="mode='bwd'.*fwd"):
        sweep([dict(name="vanilla")], seq_lens=[64], modes=["bwd"])
    with pytest.raises(ValueError, match="dtype"):
        sweep([dict(name="vanilla")], seq_lens=[64], dtype="float8")
