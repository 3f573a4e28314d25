"""Dilated attention against the naive float64 reference, plus the official code's failure cases."""
import itertools
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dilated_reference import reference_dilated_attention
from longnet import MultiheadDilatedAttention, dilated_attention, dilated_attention_decode
from longnet import block_sparse
from longnet.dilated_attention import branch_blocks


def random_qkv(batch, n, heads, dim, dtype=torch.float64, seed=0, requires_grad=True):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, n, heads, dim, dtype=dtype, generator=generator).requires_grad_(requires_grad)
            for _ in range(3)]


def compare_with_reference(n, heads, segments, rates, causal, exact_grad, batch=2, dim=8, seed=0):
    q, k, v = random_qkv(batch, n, heads, dim, seed=seed)
    dout = torch.randn(batch, n, heads, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 1))
    ours = dilated_attention(q, k, v, segments, rates, causal=causal, exact_grad=exact_grad)
    ref = reference_dilated_attention(q, k, v, segments, rates, causal=causal, detach_weights=not exact_grad)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    for ours_grad, ref_grad in zip(torch.autograd.grad(ours, (q, k, v), dout), torch.autograd.grad(ref, (q, k, v), dout)):
        torch.testing.assert_close(ours_grad, ref_grad, rtol=1e-9, atol=1e-10)


branch_lists = st.lists(st.tuples(st.integers(1, 24), st.integers(1, 7)), min_size=1, max_size=4)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 40), heads=st.integers(1, 6), branches=branch_lists, causal=st.booleans(),
       exact_grad=st.booleans(), seed=st.integers(0, 1000))
def test_matches_reference_on_random_configurations(n, heads, branches, causal, exact_grad, seed):
    segments, rates = [w for w, _ in branches], [r for _, r in branches]
    compare_with_reference(n, heads, segments, rates, causal, exact_grad, seed=seed)


@pytest.mark.parametrize("causal", [True, False])
def test_paper_schedule_scaled_down(causal):
    # the paper's (w, r) shape, with its w = 16384, r = 6 (w mod r != 0), scaled by 1/256
    compare_with_reference(300, 12, [8, 16, 32, 64, 128], [1, 2, 4, 6, 12], causal, True, batch=1)


def test_w_not_divisible_by_r_with_many_segments():
    # official code pads each segment to a multiple of r and shifts later segments' outputs
    compare_with_reference(60, 6, [10], [3], causal=True, exact_grad=True)
    compare_with_reference(60, 6, [10, 20], [1, 6], causal=False, exact_grad=True)


def test_padded_keys_never_attended_when_n_not_multiple_of_w():
    # official code zero-pads to whole segments without masking: a padded zero key would get
    # weight exp(0) in non-causal attention. Ours: the short last segment is its own block.
    q, k, v = random_qkv(1, 10, 2, 4, requires_grad=False)
    out = dilated_attention(q, k, v, [8], [1], causal=False)
    last = torch.softmax(q[0, 8:, 0] @ k[0, 8:, 0].T / 2.0, -1) @ v[0, 8:, 0]
    torch.testing.assert_close(out[0, 8:, 0], last)
    compare_with_reference(10, 2, [8], [1], causal=False, exact_grad=True)


def test_heads_not_divisible_by_r_all_heads_nonzero():
    # fkodom's version left heads 10-11 at zero for 12 heads / 5 branches
    q, k, v = random_qkv(1, 64, 12, 8, requires_grad=False)
    out = dilated_attention(q, k, v, [4, 8, 16, 32, 64], [1, 2, 4, 6, 12], causal=True)
    assert (out.abs().sum(dim=(0, 1, 3)) > 0).all()
    compare_with_reference(64, 7, [16, 32], [1, 5], causal=True, exact_grad=True, batch=1)


def test_rows_no_branch_selects_are_zero():
    q, k, v = random_qkv(1, 12, 2, 4, requires_grad=False)
    out = dilated_attention(q, k, v, [6], [2], causal=True)
    # head 0 selects even rows of each segment, head 1 odd rows
    assert out[0, 1::2, 0].abs().max() == 0 and out[0, 0::2, 1].abs().max() == 0
    assert out[0, 0::2, 0].abs().min() > 0


def test_exact_and_detached_gradients_differ_when_branches_overlap():
    q, k, v = random_qkv(1, 16, 2, 4)
    grads = [torch.autograd.grad(dilated_attention(q, k, v, [4, 8], [1, 2], exact_grad=e).sum(), q)[0]
             for e in (True, False)]
    assert not torch.allclose(*grads)


@pytest.mark.parametrize("causal", [True, False])
def test_causality_only_when_causal(causal):
    q, k, v = random_qkv(1, 40, 4, 8, dtype=torch.float32, requires_grad=False)
    t = 17
    out = dilated_attention(q, k, v, [8, 16, 32], [1, 2, 4], causal=causal)
    k2, v2 = k.clone(), v.clone()
    k2[:, t + 1:] += torch.randn_like(k2[:, t + 1:])
    v2[:, t + 1:] += torch.randn_like(v2[:, t + 1:])
    out2 = dilated_attention(q, k2, v2, [8, 16, 32], [1, 2, 4], causal=causal)
    if causal:
        torch.testing.assert_close(out[:, :t + 1], out2[:, :t + 1], rtol=0, atol=0)
    else:
        assert not torch.allclose(out[:, :t + 1], out2[:, :t + 1])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_error_at_most_twice_naive(dtype):
    segments, rates = [16, 32, 64], [1, 2, 4]
    q, k, v = random_qkv(2, 150, 4, 32, dtype=torch.float32, requires_grad=False)
    exact = reference_dilated_attention(q.double(), k.double(), v.double(), segments, rates)
    low = [x.to(dtype) for x in (q, k, v)]
    ours = dilated_attention(*low, segments, rates).double()
    naive = reference_dilated_attention(*low, segments, rates).double()  # same-dtype PyTorch
    assert ours.dtype == torch.float64 and dilated_attention(*low, segments, rates).dtype == dtype
    assert (ours - exact).abs().max() <= 2 * (naive - exact).abs().max()


def test_gradients_in_low_precision_are_finite():
    q, k, v = random_qkv(1, 50, 4, 16, dtype=torch.bfloat16)
    out = dilated_attention(q, k, v, [16, 32], [1, 2])
    grads = torch.autograd.grad(out.float().square().sum(), (q, k, v))
    assert all(g.dtype == torch.bfloat16 and torch.isfinite(g).all() for g in grads)


def test_decode_matches_full_forward_past_every_segment():
    # positions past the smallest (4) and the largest (16) segment; official code breaks there
    segments, rates = [4, 8, 16], [1, 2, 4]
    q, k, v = random_qkv(2, 45, 6, 8, requires_grad=False)
    full = dilated_attention(q, k, v, segments, rates, causal=True)
    for t in range(45):
        step = dilated_attention_decode(q[:, t:t + 1], k[:, :t + 1], v[:, :t + 1], segments, rates)
        torch.testing.assert_close(step[:, 0], full[:, t], rtol=1e-10, atol=1e-12)


def test_multihead_layer_cached_generation_equals_full_forward():
    torch.manual_seed(0)
    layer = MultiheadDilatedAttention(32, 4, [4, 8, 16], [1, 3, 4], max_len=64).double()
    x = torch.randn(2, 37, 32, dtype=torch.float64)
    full = layer(x)
    cache = layer.new_cache(2, max_len=37)  # the schedule the forward over 37 tokens runs
    steps = [layer(x[:, :6], cache=cache)] + [layer(x[:, i:i + 1], cache=cache) for i in range(6, 37)]
    torch.testing.assert_close(torch.cat(steps, 1), full)


def test_multihead_layer_trains():
    torch.manual_seed(0)
    layer = MultiheadDilatedAttention(16, 2, [4, 8], [1, 2], positions="rotary", max_len=32)
    x = torch.randn(2, 20, 16)
    layer(x).square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in layer.parameters())


@pytest.mark.parametrize("segments, rates, message", [
    ([4, 8], [1], "same length"),
    ([], [], "at least one branch"),
    ([4, 0], [1, 2], "positive integers"),
    ([4, 8], [1, -2], "positive integers"),
    ([4.5], [1], "positive integers"),
])
def test_impossible_configurations_raise(segments, rates, message):
    q, k, v = random_qkv(1, 8, 2, 4, requires_grad=False)
    with pytest.raises(ValueError, match=message):
        dilated_attention(q, k, v, segments, rates)


def test_bad_shapes_and_backends_raise():
    q, k, v = random_qkv(1, 8, 2, 4, requires_grad=False)
    with pytest.raises(ValueError, match="shape"):
        dilated_attention(q, k[:, :4], v, [4], [1])
    with pytest.raises(ValueError, match="backend must be one of"):
        dilated_attention(q, k, v, [4], [1], backend="nope")
    with pytest.raises((ImportError, ValueError), match="flash-attn|does not support"):
        dilated_attention(q, k, v, [4], [1], backend="flash_attn")


def test_blocks_cover_each_row_once_per_branch_and_stay_linear():
    n, heads = 1000, 6
    for w, r in [(64, 1), (64, 3), (100, 7), (2048, 4), (10, 20)]:
        rows = torch.cat([g.rows.flatten() for g in branch_blocks(n, heads, w, r)])
        assert len(rows) == len(set(rows.tolist()))          # no row twice
        expected = sum(len(range(h % r, min(w, n - s), r)) for h in range(heads) for s in range(0, n, min(w, n)))
        assert len(rows) == expected
        groups = branch_blocks(n, heads, w, r)
        assert len(groups) <= 4                              # at most 4 block lengths per branch
        assert sum(len(g.lattices) for g in groups) <= 6     # and 6 strided views (kernel calls)


@pytest.mark.parametrize("n, heads, w, r", [(1000, 6, 64, 3), (1000, 8, 256, 4), (37, 5, 10, 20), (96, 4, 32, 1)])
def test_lattices_are_views_of_their_rows(n, heads, w, r):
    """Each lattice's strided view of the row space holds exactly its rows, for every split."""
    row_ids = torch.arange(n * heads).view(1, -1, 1).expand(2, -1, 3).contiguous()  # (B, rows, tail)
    for group in branch_blocks(n, heads, w, r):
        for lattice in group.lattices:
            rows = lattice.rows()
            assert torch.equal(lattice.view(row_ids)[1, ..., 2].reshape(rows.shape), rows)
            for max_blocks in (1, 2, 7, rows.shape[0]):
                parts = list(lattice.split(max_blocks))
                assert all(math.prod(part.sizes[:-1]) <= max(max_blocks, 1) for _, part in parts)
                assert torch.equal(torch.cat([part.rows() for _, part in parts]), rows)
                assert [start for start, _ in parts] == list(itertools.accumulate(
                    [0] + [math.prod(part.sizes[:-1]) for _, part in parts[:-1]]))


def test_piece_rejects_a_lattice_that_is_not_its_rows():
    lattice = block_sparse.Lattice(5, (2, 3), (3, 1))
    assert block_sparse.Piece.from_lattice(lattice, causal=True).q_rows.tolist() == [[5, 6, 7], [8, 9, 10]]
    with pytest.raises(ValueError, match="lattice"):
        block_sparse.Piece(lattice.rows() + 1, lattice=lattice)
    with pytest.raises(ValueError, match="lattice"):
        block_sparse.Piece(lattice.rows(), lattice.rows(), lattice=lattice)


def test_chunks_smaller_than_a_segment_match_reference(monkeypatch):
    """Tiny chunks split lattices down to single blocks; results must not change."""
    monkeypatch.setitem(block_sparse.CHUNK_ROWS, "cpu", 8)
    compare_with_reference(50, 4, [16, 32], [1, 2], causal=True, exact_grad=True)
    compare_with_reference(50, 4, [16, 32], [1, 2], causal=False, exact_grad=False)


def test_math_backend_agrees_with_torch_kernel():
    q, k, v = random_qkv(1, 33, 3, 8)
    a = dilated_attention(q, k, v, [8, 16], [1, 3], backend="math")
    b = dilated_attention(q, k, v, [8, 16], [1, 3], backend="torch_cpu")
    torch.testing.assert_close(a, b)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_gpu_backends_match_cpu(dtype):
    from longnet.backends import available_backends
    q, k, v = random_qkv(2, 300, 8, 64, dtype=torch.float32, requires_grad=False)
    expected = dilated_attention(q, k, v, [64, 128, 256], [1, 2, 4])
    for name in available_backends("cuda", dtype, 64):
        qc, kc, vc = (x.cuda().to(dtype).requires_grad_() for x in (q, k, v))
        out = dilated_attention(qc, kc, vc, [64, 128, 256], [1, 2, 4], backend=name)
        tol = 1e-3 if dtype == torch.float32 else 3e-2
        torch.testing.assert_close(out.float().cpu(), expected, rtol=tol, atol=tol)
        out.float().sum().backward()
        assert torch.isfinite(qc.grad).all()


@pytest.mark.parametrize("exact_grad", [True, False])
def test_backward_twice_with_retained_graph(exact_grad):
    q, k, v = random_qkv(1, 20, 2, 4)
    out = dilated_attention(q, k, v, [4, 8], [1, 2], exact_grad=exact_grad)
    first = torch.autograd.grad(out.sum(), q, retain_graph=True)[0]
    second = torch.autograd.grad(out.sum(), q)[0]
    torch.testing.assert_close(first, second, rtol=0, atol=0)


def test_the_reference_masks_before_a_shifted_exponent_and_stays_on_its_device():
    """The oracle: a NaN or Inf in a future key never reaches an earlier query, scores far above
    exp's float64 range (709) do not overflow, and every tensor it makes is on q's device (meta
    tensors: a CPU tensor inside would raise)."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 24, 4, 8, dtype=torch.float64) for _ in range(3))
    segments, rates = [8, 16], [1, 2]
    clean = reference_dilated_attention(q, k, v, segments, rates)
    k_bad = k.clone()
    k_bad[:, 20] = float("nan")
    k_bad[:, 21] = float("inf")
    leaked = reference_dilated_attention(q, k_bad, v, segments, rates)
    torch.testing.assert_close(leaked[:, :20], clean[:, :20])
    big = reference_dilated_attention(q * 60, k * 60, v, segments, rates)  # scores ~ 1e3
    assert torch.isfinite(big).all()
    torch.testing.assert_close(big, dilated_attention(q * 60, k * 60, v, segments, rates))
    meta = [x.to("meta") for x in (q, k, v)]
    assert reference_dilated_attention(*meta, segments, rates).device.type == "meta"
