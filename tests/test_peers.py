"""benchmarks/peers.py: the harness that measures other projects' dilated attention.

The harness must pass this suite's own implementation and catch what is wrong in a broken one; the
CPU stand-ins must compute exactly what the kernels they replace compute. The public packages are
measured only where installed (pip install --no-deps dilated-attention-pytorch longnet einops)."""
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import peers  # noqa: E402

from longnet.dilated_attention import dilated_attention  # noqa: E402


def dense(q, k, v, causal):  # (B, N, H, D), written out
    scores = torch.einsum("bihd,bjhd->bhij", q, k) / q.shape[-1] ** 0.5
    if causal:
        scores = scores.masked_fill(torch.ones(q.shape[1], k.shape[1], dtype=torch.bool).triu(1), float("-inf"))
    return torch.einsum("bhij,bjhd->bihd", scores.softmax(-1), v)


@pytest.mark.parametrize("causal", [False, True])
def test_stand_ins_are_exact_attention_with_the_replaced_conventions(causal):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 12, 3, 8, generator=g) for _ in range(3))
    bias = peers.LowerTriangularMask() if causal else None
    torch.testing.assert_close(peers.memory_efficient_attention(q, k, v, attn_bias=bias), dense(q, k, v, causal))
    heads_first = [x.transpose(1, 2) for x in (q, k, v)]  # zeta's FlashAttention: (batch, heads, n, d)
    torch.testing.assert_close(peers.FlashAttention(causal=causal)(*heads_first).transpose(1, 2), dense(q, k, v, causal))


def test_harness_passes_the_library_and_catches_broken_ones():
    ours = peers._ours
    assert peers.forward_case(ours, peers.MULTI, (1, 64, 4, 8), True) < 1e-5
    assert peers.forward_case(ours, peers.MULTI, (1, 64, 4, 8), True, grad=True) < 1e-5
    assert peers.causality_leak(ours, peers.MULTI, (1, 64, 4, 8), 40) == 0
    assert peers.dead_rows(ours, peers.SINGLE, (1, 32, 4, 8)) == (0.5, 0.5)

    def ignores_causal(q, k, v, w, r, causal):
        return dilated_attention(q, k, v, w, r, causal=False)

    def all_offsets_zero(q, k, v, w, r, causal):  # every head on offset 0: the other rows are never keys
        out = torch.cat([dilated_attention(q[:, :, h:h + 1], k[:, :, h:h + 1], v[:, :, h:h + 1], w, r, causal=causal)
                         for h in range(q.shape[2])], dim=2)
        return out

    assert peers.causality_leak(ignores_causal, peers.MULTI, (1, 64, 4, 8), 40) > 1e-3
    assert peers.forward_case(all_offsets_zero, peers.SINGLE, (1, 32, 4, 8), False) > 1e-2
    share, reference = peers.dead_rows(all_offsets_zero, ([16, 16], [1, 2]), (1, 32, 4, 8))
    assert share == reference == 0  # an r = 1 branch attends every row, whatever the offsets
    row = peers.measure(peers.Peer("broken", None, "x", ignores_causal, version="0"), "probe",
                        lambda a: (None, peers.causality_leak(a, peers.MULTI, (1, 64, 4, 8), 40), None))
    assert row["status"] == "leaks future tokens" and row["leak"] > 0


def test_unavailable_implementations_are_skipped_with_the_install_command():
    found = {peer.name: peer for peer in peers.peers()}
    torchscale = found["torchscale (official)"]
    if importlib.util.find_spec("torchscale") is None or torchscale.skip:
        assert peers.TORCHSCALE_INSTALL in torchscale.skip
        row = peers.measure(torchscale, "all cases", None)
        assert row["status"] == torchscale.skip
    assert found["longnet-repro (this suite)"].skip is None


@pytest.mark.skipif(importlib.util.find_spec("dilated_attention_pytorch") is None
                    or importlib.util.find_spec("einops") is None, reason="dilated-attention-pytorch not installed")
def test_fkodom_measured():
    peers.install_stand_ins()
    fkodom = peers._fkodom
    # its outputs are divided by their sum over the whole sequence: wrong, and not causal
    assert peers.forward_case(fkodom, peers.MULTI, (1, 64, 4, 8), True) > 1e-2
    assert peers.causality_leak(fkodom, peers.MULTI, (1, 64, 4, 8), 40) > 1e-3


@pytest.mark.skipif(importlib.util.find_spec("long_net") is None
                    or importlib.util.find_spec("einops") is None, reason="longnet (kyegomez) not installed")
def test_kyegomez_adapter_is_exact_where_its_semantics_are_the_papers():
    peers.install_stand_ins()
    # one head, one segment: its single (w, r) module is the definition, so the adapter must be exact
    assert peers.forward_case(peers._kyegomez, peers.SINGLE, (1, 16, 1, 8), True) < 1e-5
    assert peers.forward_case(peers._kyegomez, peers.SINGLE, (1, 32, 4, 8), False) > 1e-2  # heads merged
    with pytest.raises(peers.Unsupported, match="one"):
        peers._kyegomez(*[torch.zeros(1, 64, 4, 8)] * 3, *peers.MULTI, False)
