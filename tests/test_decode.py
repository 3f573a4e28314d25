"""Token-by-token decoding: LongNet's bounded cache is exact, generation equals the full forward.

(Every registered variant's cache is checked against its own forward by the conformance suite in
tests/test_baselines.py; here: the dilated cache's bound and edge cases, the LM's generate.)
"""
from __future__ import annotations

import math

import pytest
import torch

from dilated_reference import reference_dilated_attention
from longnet import DilatedKVCache, dilated_attention
from longnet.model import LanguageModel, ModelConfig
from longnet.positions import XPos

# (segments, rates, heads): the paper's shape scaled down; w mod r != 0; heads fewer than r;
# r larger than a segment; a single branch with r > 1 (rows no branch selects are 0)
SCHEDULES = [
    ([4, 8, 16], [1, 2, 4], 4),
    ([5, 7, 12], [1, 3, 5], 6),
    ([6, 9], [1, 4], 2),
    ([3, 10], [5, 4], 3),
    ([8], [3], 2),
]


def qkv(batch, n, heads, dim, dtype, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, n, heads, dim, generator=generator, dtype=torch.float64).to(dtype)
            for _ in range(3)]


def decode_all(cache, q, k, v, prompt):
    """Prefill `prompt` positions with one append, then append + attend every later position."""
    if prompt:
        cache.append(k[:, :prompt], v[:, :prompt])
    steps, sizes = [], set()
    for t in range(prompt, q.shape[1]):
        cache.append(k[:, t:t + 1], v[:, t:t + 1])
        steps.append(cache.attend(q[:, t:t + 1]))
        sizes.add(cache.nbytes)
    return torch.cat(steps, 1), sizes


@pytest.mark.parametrize("segments, rates, heads", SCHEDULES)
@pytest.mark.parametrize("prompt", [0, 1, 13])
def test_dilated_cache_equals_the_full_forward_and_stays_bounded(segments, rates, heads, prompt):
    n, dim = 5 * max(segments) + 3, 8  # several times the widest segment, crossing every boundary
    q, k, v = qkv(2, n, heads, dim, torch.float64)
    reference = reference_dilated_attention(q, k, v, segments, rates, causal=True)
    cache = DilatedKVCache(2, heads, dim, segments, rates, dtype=torch.float64)
    out, sizes = decode_all(cache, q, k, v, prompt)
    torch.testing.assert_close(out, reference[:, prompt:], rtol=1e-10, atol=1e-12)
    rows = sum(math.ceil(w / r) for w, r in zip(segments, rates))
    assert cache.rows_per_head == rows
    assert sizes == {2 * 2 * heads * rows * dim * 8}  # keys + values, float64: constant in t


@pytest.mark.parametrize("segments, rates, heads", SCHEDULES[:3])
def test_dilated_cache_in_float32_within_1e_5(segments, rates, heads):
    n = 4 * max(segments)
    q, k, v = qkv(1, n, heads, 16, torch.float32, seed=1)
    full = dilated_attention(q, k, v, segments, rates, causal=True)
    out, _ = decode_all(DilatedKVCache(1, heads, 16, segments, rates), q, k, v, prompt=5)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, full[:, 5:], rtol=1e-5, atol=1e-5)


def test_dilated_cache_size_does_not_depend_on_the_context():
    # the paper's schedule, 12 heads: 2048 + 2048 + 2048 + 2731 + 2731 rows per head
    cache = DilatedKVCache(1, 12, 64, [2048, 4096, 8192, 16384, 32768], [1, 2, 4, 6, 12])
    assert cache.rows_per_head == 11606
    before = cache.nbytes
    cache.append(*qkv(1, 40000, 12, 64, torch.float32)[:2])  # past the widest segment
    cache.attend(torch.randn(1, 1, 12, 64))
    assert cache.nbytes == before == 2 * 12 * 11606 * 64 * 4


def test_cache_misuse_is_refused():
    cache = DilatedKVCache(2, 4, 8, [4], [1])
    with pytest.raises(ValueError, match="append the token's key and value first"):
        cache.attend(torch.randn(2, 1, 4, 8))
    with pytest.raises(ValueError, match=r"\(B, n, H, D\) = \(2, n, 4, 8\)"):
        cache.append(torch.randn(2, 1, 3, 8), torch.randn(2, 1, 3, 8))
    cache.append(torch.randn(2, 1, 4, 8), torch.randn(2, 1, 4, 8))
    with pytest.raises(ValueError, match=r"q of shape \(B, 1, H, D\)"):
        cache.attend(torch.randn(2, 2, 4, 8))


def test_xpos_at_an_offset_equals_the_same_positions_of_a_full_call():
    xpos = XPos(16, center=64)
    q, k = torch.randn(2, 1, 40, 3, 16, dtype=torch.float64).unbind(0)
    full_q, full_k = xpos(q, k, torch.arange(40))
    part_q, part_k = xpos(q[:, 25:], k[:, 25:], torch.arange(25, 40))
    torch.testing.assert_close(part_q, full_q[:, 25:])
    torch.testing.assert_close(part_k, full_k[:, 25:])


# --- the language model -------------------------------------------------------------------------

MODELS = [
    ("vanilla", {}),
    ("longnet", {"segment_lengths": [4, 8, 16], "dilation_rates": [1, 2, 4]}),
    ("longnet", {"segment_lengths": [6, 12], "dilation_rates": [2, 5]}),
    ("sparse_fixed", {"block": 8, "summary": 2}),
    ("sparse_strided", {"stride": 4}),
    ("longformer", {"window": 3, "dilation": [1, 2], "global_tokens": 2}),
]


def tiny_model(attention, params, positions="xpos"):
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=32, n_layer=2, d_model=16, n_head=2, d_ff=32, attention=attention,
                      attention_params=params, positions=positions, max_seq_len=128)
    return LanguageModel(cfg).double().eval()


@pytest.mark.parametrize("attention, params", MODELS)
def test_greedy_generation_is_the_argmax_of_the_full_forward(attention, params):
    model = tiny_model(attention, params)
    prompt = torch.randint(0, 32, (2, 5), generator=torch.Generator().manual_seed(1))
    out = model.generate(prompt, 40, temperature=0)
    assert out.shape == (2, 45) and torch.equal(out[:, :5], prompt)
    with torch.no_grad():
        logits = model(out)
    # every generated token is the argmax of the full forward at the position before it
    assert torch.equal(logits[:, 4:-1].argmax(-1), out[:, 5:])


@pytest.mark.parametrize("attention, params", MODELS[:2])
@pytest.mark.parametrize("positions", ["xpos", "rotary"])
def test_cached_logits_equal_the_full_forward(attention, params, positions):
    model = tiny_model(attention, params, positions)
    tokens = torch.randint(0, 32, (1, 50), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(tokens)
        caches = model.new_caches(1, max_len=50)  # LongNet's schedule covers the 50 tokens
        steps = [model(tokens[:, :7], caches=caches)]  # prefill, then one token at a time
        steps += [model(tokens[:, t:t + 1], caches=caches) for t in range(7, 50)]
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-9, atol=1e-10)


def test_sampling_is_seeded_and_top_k_1_is_greedy():
    model = tiny_model(*MODELS[1])
    prompt = torch.tensor([[1, 2, 3]])
    greedy = model.generate(prompt, 12, temperature=0)
    assert torch.equal(model.generate(prompt, 12, temperature=1.5, top_k=1), greedy)
    one, two = (model.generate(prompt, 12, temperature=1.0, generator=torch.Generator().manual_seed(7))
                for _ in range(2))
    assert torch.equal(one, two) and ((one >= 0) & (one < 32)).all()
    assert torch.equal(model.generate(prompt, 0), prompt)


@pytest.mark.parametrize("kwargs, message", [
    ({"max_new_tokens": -1}, "max_new_tokens"),
    ({"max_new_tokens": 3, "temperature": -0.5}, "temperature"),
    ({"max_new_tokens": 3, "top_k": 0}, "top_k"),
])
def test_generate_refuses_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_model("vanilla", {}).generate(torch.tensor([[1, 2]]), **kwargs)


def test_attention_that_cannot_decode_says_so():
    model = tiny_model("vanilla", {})
    class NoCache(torch.nn.Module):  # an attention module without new_cache
        def forward(self, q, k, v, causal=True):
            return q

    model.set_attention(NoCache())
    with pytest.raises(ValueError, match="no cached decoding path"):
        model.generate(torch.tensor([[1, 2]]), 3)


# --- the decoding benchmark (benchmarks/bench_decode.py) at toy sizes ----------------------------

def test_decode_benchmark_rows_and_figure():
    import sys
    from pathlib import Path

    import pandas as pd

    from analysis.figures import decode_latency

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.bench_decode import layer_cells, model_throughput, summary

    schedule = {"segment_lengths": [16, 32], "dilation_rates": [1, 2]}
    variants = [{"name": "longnet", "params": schedule},
                {"id": "pinned", "name": "longnet", "params": {**schedule, "extend": False}},
                {"name": "vanilla", "params": {}}]
    cells = layer_cells(variants, {"toy": {"heads": 2, "head_dim": 8}}, [64, 256, 1024], repeats=1,
                        warmup=0, max_cache_bytes=100_000, progress=False)
    longnet, pinned, vanilla = (cells[cells["variant"] == v].set_index("context_len")
                                for v in ("longnet", "pinned", "vanilla"))
    # the paper's rule: the widest segment covers the context, one branch of w / r = 16 rows per
    # head more with each doubling (logarithmic); pinned: constant, and truncated past 32
    assert (longnet["status"] == "ok").all() and list(longnet["schedule"]) == ["paper"] * 3
    assert list(longnet["widest_segment"]) == [64, 256, 1024]
    assert list(longnet["cache_rows_per_head"]) == [48, 80, 112]
    assert longnet.loc[1024, "cache_bytes"] == 2 * 2 * 112 * 8 * 4  # keys and values, 2 heads, fp32
    assert list(pinned["schedule"]) == ["truncated"] * 3 and pinned["cache_bytes"].nunique() == 1
    assert pinned["cache_bytes"].iloc[0] == 2 * 2 * (16 + 16) * 8 * 4  # sum ceil(w/r) rows per head
    assert "+16 per doubling" in summary(cells)
    assert vanilla.loc[64, "status"] == "ok" and vanilla.loc[1024, "status"] == "over_cap"
    assert vanilla.loc[256, "cache_bytes"] > vanilla.loc[64, "cache_bytes"]
    assert (cells.loc[cells["status"] == "ok", "ms_per_token"] > 0).all()
    assert "toy: longnet" in summary(cells)
    throughput = model_throughput(variants[:1], "tiny", 40, 3, {"n_layer": 1, "d_model": 16, "n_head": 2,
                                                                 "d_ff": 32}, progress=False)
    assert (throughput[["prefill_tokens_per_s", "decode_tokens_per_s"]] > 0).all(axis=None)
    for table in (cells, pd.DataFrame()):  # drawn from a table and from nothing
        assert decode_latency(table).axes
