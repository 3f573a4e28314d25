"""Conformance suite for every registered attention variant (a new file in baselines/ is picked
up automatically), plus the registry's contract and the drop-in example of baselines/README.md."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import baselines
from longnet import variants
from baselines.sparse_fixed import match_longnet_flops

HEADS, DIM = 4, 8
ROOT = Path(__file__).resolve().parents[1]
CASES = [pytest.param(name, params, id=f"{name}-{i}")
         for name in baselines.available()
         for i, params in enumerate(({}, *baselines.variant_class(name).small_params))]
# the variants that are one masked softmax (mask() is not None)
MASKED_CASES = [case for case in CASES
                if baselines.build(case.values[0], num_heads=HEADS, **case.values[1]).mask(2) is not None]


def qkv(n, dtype=torch.float64, batch=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, n, HEADS, DIM, generator=generator, dtype=torch.float64)
            .to(dtype).requires_grad_() for _ in range(3)]


def masked_reference(q, k, v, mask):
    """Dense softmax attention with a (H, n, n) mask, in float64."""
    scores = torch.einsum("bihd,bjhd->bhij", q, k) / q.shape[-1] ** 0.5
    probs = scores.masked_fill(~mask, float("-inf")).softmax(-1)
    return torch.einsum("bhij,bjhd->bihd", probs, v)


# --- conformance: every variant, defaults and small_params ------------------------------------

@pytest.mark.parametrize("name, params", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_shape_dtype_finite(name, params, dtype):
    attn = baselines.build(name, num_heads=HEADS, **params)
    for n in (1, 37):  # one token; a length that is a multiple of no block size
        for causal in (True, False):
            q, k, v = qkv(n, dtype)
            out = attn(q, k, v, causal=causal)
            assert out.shape == q.shape and out.dtype == dtype and out.device == q.device
            grads = torch.autograd.grad(out.float().square().sum(), (q, k, v))
            assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name, params", CASES)
def test_causal_outputs_ignore_the_future(name, params):
    attn = baselines.build(name, num_heads=HEADS, **params)
    n, t = 29, 17
    q, k, v = qkv(n)
    out = attn(q, k, v)
    q2, k2, v2 = (x.detach().clone() for x in (q, k, v))
    for x in (q2, k2, v2):
        x[:, t + 1:] = torch.randn_like(x[:, t + 1:])
    out2 = attn(q2, k2, v2)
    torch.testing.assert_close(out2[:, :t + 1], out[:, :t + 1], rtol=0, atol=1e-12)
    assert not torch.allclose(out2[:, t + 1:], out[:, t + 1:])


@pytest.mark.parametrize("name, params", MASKED_CASES)
@pytest.mark.parametrize("causal", [True, False])
def test_equals_masked_dense_attention(name, params, causal):
    attn = baselines.build(name, num_heads=HEADS, **params)
    for n in (1, 23, 64):
        mask = attn.mask(n, causal)
        assert mask.shape == (HEADS, n, n) and mask.dtype == torch.bool
        q, k, v = qkv(n)
        out = attn(q, k, v, causal=causal)
        expected = masked_reference(q, k, v, mask)
        torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-10)
        dout = torch.randn_like(out)
        for got, want in zip(torch.autograd.grad(out, (q, k, v), dout),
                             torch.autograd.grad(expected, (q, k, v), dout)):
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("name, params", CASES)
@pytest.mark.parametrize("causal", [True, False])
def test_pattern_is_what_each_query_reads(name, params, causal):
    """pattern(n)[h, i, j] exactly when value j of head h reaches output i (gradient support),
    which also holds for LongNet, whose pattern is the union of its branches."""
    attn = baselines.build(name, num_heads=HEADS, **params)
    n = 19
    pattern = attn.pattern(n, causal)
    assert pattern.shape == (HEADS, n, n) and pattern.dtype == torch.bool
    # n copies of one input in the batch; copy i back-propagates from query i only
    q, k, v = (x.detach().expand(n, -1, -1, -1).clone().requires_grad_() for x in qkv(n, batch=1))
    out = attn(q, k, v, causal=causal)
    (grad_v,) = torch.autograd.grad(out.diagonal(dim1=0, dim2=1).sum(), v)
    reads = grad_v.abs().sum(-1) > 0  # (query i, key j, head h)
    assert torch.equal(reads.permute(2, 0, 1), pattern)


@pytest.mark.parametrize("name, params", CASES)
def test_flops_count_the_pattern(name, params):
    attn = baselines.build(name, num_heads=HEADS, **params)
    for n in (1, 23, 64):
        for causal in (True, False):
            mask = attn.mask(n, causal)
            if mask is not None:
                assert attn.flops(n, DIM, causal) == 4 * DIM * mask.sum().item()
            else:  # the pairs computed are at least the distinct pairs of the union pattern
                assert attn.flops(n, DIM, causal) >= 4 * DIM * attn.pattern(n, causal).sum().item()


@pytest.mark.parametrize("name, params", CASES)
def test_decoding_token_by_token_equals_the_forward(name, params):
    """new_cache: a prefill (one append of a prompt) and then append + attend per token give the
    causal forward's output at every position (the forward over max_len = n tokens: LongNet's
    schedule covers n); or the variant declares it cannot decode (None)."""
    attn = baselines.build(name, num_heads=HEADS, **params)
    n = 41
    q, k, v = (x.detach() for x in qkv(n))
    full = attn(q, k, v, causal=True)
    for prompt in (0, 6):
        cache = attn.new_cache(2, DIM, dtype=torch.float64, max_len=n)
        if cache is None:
            pytest.skip(f"{name} declares that it cannot decode (new_cache returns None)")
        if prompt:
            cache.append(k[:, :prompt], v[:, :prompt])
        for t in range(prompt, n):
            cache.append(k[:, t:t + 1], v[:, t:t + 1])
            assert cache.length == t + 1
            step = cache.attend(q[:, t:t + 1])
            assert step.shape == (2, 1, HEADS, DIM) and step.dtype == torch.float64
            torch.testing.assert_close(step[:, 0], full[:, t], rtol=1e-10, atol=1e-12)


# --- the registry -------------------------------------------------------------------------------

def test_builtin_variants_are_listed_sorted():
    names = baselines.available()
    assert set(names) >= {"vanilla", "longnet", "sparse_fixed", "sparse_strided", "longformer"}
    assert names == sorted(names)


def test_unknown_names_and_params_list_what_is_allowed():
    with pytest.raises(ValueError, match="available: .*longformer.*vanilla"):
        baselines.build("no_such_attention", num_heads=2)
    with pytest.raises(ValueError, match=r"unknown param\(s\) blok; allowed .*block=2048"):
        baselines.build("sparse_fixed", num_heads=2, blok=64)


@pytest.mark.parametrize("name, params, field", [
    ("vanilla", {"num_heads": 0}, "num_heads"),
    ("sparse_fixed", {"block": 0}, "block"),
    ("sparse_fixed", {"block": 8, "summary": 9}, "summary"),
    ("sparse_strided", {"stride": 2.5}, "stride"),
    ("longformer", {"window": -1}, "window"),
    ("longformer", {"dilation": [1, 2, 3]}, "dilation"),
    ("sparse_strided", {"backend": "cuda_magic"}, "backend"),
    ("longformer", {"global_tokens": True}, "global_tokens"),
    ("longnet", {"segment_lengths": [8, 16], "dilation_rates": [1]}, "dilation_rates"),
    ("longnet", {"exact_grad": "yes"}, "exact_grad"),
])
def test_invalid_params_name_the_field(name, params, field):
    params = {"num_heads": 2, **params}
    with pytest.raises(ValueError, match=field):
        baselines.build(name, **params)


def test_params_come_back_as_plain_values():
    attn = baselines.build("longformer", num_heads=2, window=16, dilation=[1, 2])
    assert attn.params == {"window": 16, "dilation": [1, 2], "global_tokens": 0, "backend": "auto"}
    assert baselines.param_defaults("sparse_strided") == {"stride": 128, "backend": "auto"}


def test_load_modules_registers_a_variant_from_another_package(tmp_path, monkeypatch):
    package = tmp_path / "other_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "my_attention.py").write_text(
        "from baselines import register\nfrom baselines.vanilla import Vanilla\n\n"
        "@register('vanilla_copy')\nclass VanillaCopy(Vanilla):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(variants, "_VARIANTS", dict(variants._VARIANTS))
    baselines.load_modules(["other_pkg.my_attention"])
    assert "vanilla_copy" in baselines.available()
    assert baselines.build("vanilla_copy", num_heads=2).mask(3).shape == (2, 3, 3)


def test_sparse_fixed_summary_matches_longnet_flops():
    match = match_longnet_flops(8192, num_heads=8, head_dim=64)
    assert match.params["block"] == 2048
    assert abs(match.flops / match.longnet_flops - 1) < 0.01
    assert "summary=" in str(match) and "ratio" in str(match)
    attn = baselines.build("sparse_fixed", num_heads=8, **match.params)
    assert attn.flops(8192, 64) == match.flops


# --- "Add your own attention variant": the README's example dropped into a copy ------------------

def readme_example() -> tuple[str, str]:
    """(file name, code) of the worked example in baselines/README.md."""
    text = (ROOT / "baselines" / "README.md").read_text()
    found = re.search(r"```python\n# baselines/(\w+\.py)\n(.*?)```", text, re.S)
    assert found, "baselines/README.md must hold the example as ```python\\n# baselines/<file>.py"
    return found.group(1), found.group(2)


@pytest.mark.slow
def test_readme_example_drops_in_with_no_other_change(tmp_path):
    file_name, code = readme_example()
    copy = tmp_path / "baselines"
    shutil.copytree(ROOT / "baselines", copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / file_name).write_text(code)
    name = re.search(r'@register\("(\w+)"\)', code).group(1)
    # the copy comes first on sys.path; the suite's test ids carry the variant's name, so the
    # selected tests exist only if the copy listed and built it
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(Path(__file__)),
         "-k", f"{name}-"], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    passed = int(re.search(r"(\d+) passed", result.stdout).group(1))
    assert passed >= 6 and "failed" not in result.stdout
