"""The one FLOP count of the project.

Conventions (as in the flash-attention benchmarks; docs/definitions.md, section 1):
- only the two attention matmuls count: QK^T and PV, 2 FLOPs per multiply-add each, so a
  query-key pair costs 4 * head_dim FLOPs per head;
- causal attention counts only the pairs it attends (a key at or before the query), so dense
  causal is n(n+1)/2 pairs, about half of non-causal;
- backward is 2.5x forward (flash-attention's convention), so forward+backward is 3.5x forward.
All counts are per batch element unless a batch size is passed.
"""
from __future__ import annotations

from collections.abc import Sequence

from .schedule import DilatedSchedule, causal_pairs

__all__ = ["BACKWARD_FACTOR", "attention_flops", "causal_pairs", "dense_attention_flops",
           "dilated_attention_flops", "training_step_flops"]

BACKWARD_FACTOR = 2.5


def attention_flops(pairs: float, heads: int, head_dim: int, batch: int = 1) -> float:
    """Forward matmul FLOPs of softmax attention over `pairs` query-key pairs per head."""
    return 4.0 * batch * heads * head_dim * pairs


def dense_attention_flops(n: int, heads: int, head_dim: int, causal: bool = True,
                          batch: int = 1) -> float:
    """Forward FLOPs of full attention over n tokens."""
    return attention_flops(causal_pairs(n) if causal else n * n, heads, head_dim, batch)


def dilated_attention_flops(n: int, segment_lengths: Sequence[int],
                            dilation_rates: Sequence[int], heads: int, head_dim: int,
                            causal: bool = True, batch: int = 1) -> float:
    """Exact forward FLOPs of dilated attention: the sum of every branch's blocks, every head
    (pairs counted by longnet.schedule.DilatedSchedule.pairs).

    For large n this is about 4*B*H*D*n*sum(w/r^2) (halved when causal): the paper's linear cost.
    """
    pairs = DilatedSchedule(segment_lengths, dilation_rates).pairs(n, heads, causal)
    return attention_flops(pairs, 1, head_dim, batch)


def training_step_flops(forward_flops: float) -> float:
    """Forward plus backward FLOPs from the forward count."""
    return forward_flops * (1.0 + BACKWARD_FACTOR)
