"""LongNet dilated attention (Ding et al. 2023) as a variant: a thin adapter over
`longnet.dilated_attention`. Defaults are the paper's branch schedule; each segment length is
clipped to N by the core. Not one masked softmax (branches are mixed by their lse weights, and a
key seen by two branches counts twice), so mask() is None and pattern() is the union of branches.
"""
from __future__ import annotations

import torch

from baselines._base import check_flops_args
from baselines import AttentionVariant, check, check_backend, register
from longnet import dilated_attention
from longnet.flops import dilated_attention_flops
from longnet.kv_cache import DilatedKVCache
from longnet.schedule import PAPER_DILATION_RATES as _PAPER_RATES
from longnet.schedule import PAPER_SEGMENT_LENGTHS as _PAPER_SEGMENTS
from longnet.schedule import DilatedSchedule

# as lists: params come from and go to YAML
PAPER_SEGMENT_LENGTHS, PAPER_DILATION_RATES = list(_PAPER_SEGMENTS), list(_PAPER_RATES)


@register("longnet")
class LongNet(AttentionVariant):
    small_params = ({"segment_lengths": [4, 8, 16], "dilation_rates": [1, 2, 4]},
                    {"segment_lengths": [6, 12], "dilation_rates": [2, 3]})

    def __init__(self, num_heads: int, segment_lengths: list[int] = PAPER_SEGMENT_LENGTHS,
                 dilation_rates: list[int] = PAPER_DILATION_RATES, exact_grad: bool = True,
                 backend: str = "auto"):
        super().__init__(num_heads)
        check_backend(self.name, backend)
        try:
            self.schedule = DilatedSchedule(segment_lengths, dilation_rates)
        except ValueError as error:
            raise ValueError(f"attention variant {self.name!r}: {error}") from None
        check(self.name, "exact_grad", exact_grad, isinstance(exact_grad, bool), "true or false")
        self.segment_lengths, self.dilation_rates = list(segment_lengths), list(dilation_rates)
        self.exact_grad, self.backend = exact_grad, backend

    def forward(self, q, k, v, causal=True):
        self.check_inputs(q, k, v)
        return dilated_attention(q, k, v, self.segment_lengths, self.dilation_rates, causal=causal,
                                 backend=self.backend, exact_grad=self.exact_grad)

    def pattern(self, n, causal=True):
        """Union over branches: same segment of w (clipped to n), both rows selected by head h's
        offset h mod r inside the segment (longnet.schedule.DilatedSchedule.pattern)."""
        return self.schedule.pattern(n, self.num_heads, causal)

    def new_cache(self, batch, head_dim, *, dtype=torch.float32, device="cpu"):
        """Per branch and head only the current segment's rows on the head's lattice:
        sum_i ceil(w_i / r_i) rows per head, whatever the context length."""
        return DilatedKVCache(batch, self.num_heads, head_dim, self.segment_lengths,
                              self.dilation_rates, dtype=dtype, device=device)

    def flops(self, n, head_dim, causal=True):
        check_flops_args(self.name, n, head_dim)
        return dilated_attention_flops(n, self.segment_lengths, self.dilation_rates,
                                       self.num_heads, head_dim, causal)
