"""Multi-head attention layer around any attention function, and LongNet's dilated version.

The layer owns what every variant shares: q/k/v/out projections, relative positions (XPos or
rotary, applied at the original positions before any sparsifying), MAGNETO's sub-LayerNorm before
the output projection, and token-by-token decoding through a key/value cache. The attention
pattern itself is a callable `attention(q, k, v, causal=...)` on (B, N, H, D) tensors, so the LM
can put any registered variant (longnet.variants.build) in the same layer; its `new_cache` (the contract
of longnet.kv_cache) gives the layer's cache.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from .dilated_attention import validate_options
from .positions import build_position_embedding
from .schedule import PAPER_DILATION_RATES, PAPER_SEGMENT_LENGTHS


class MultiheadAttention(nn.Module):
    """x (B, N, E) -> (B, N, E) with `attention` deciding who attends to whom.

    attend: the pattern, called as attend(q, k, v, causal=...) on (B, N, H, D) tensors; swappable
    (evaluation swaps in blockwise causal attention to run a vanilla model past its training length).
    Cached decoding uses attend.new_cache(batch, head_dim, dtype=..., device=..., max_len=...) when attend has
    one (every registered variant; see `new_cache` below).
    """

    def __init__(self, embed_dim: int, num_heads: int, attend: Callable, *, causal: bool = True,
                 positions: str | None = "xpos", sub_ln: bool = True, bias: bool = True, max_len: int = 0):
        super().__init__()
        for name, value in (("embed_dim", embed_dim), ("num_heads", num_heads)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} is invalid; allowed: an int >= 1")
        if not isinstance(causal, bool):
            raise ValueError(f"causal={causal!r} is invalid; allowed: True or False")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads, self.head_dim, self.causal = num_heads, embed_dim // num_heads, causal
        self.attend = attend
        self.qkv_proj = nn.Linear(embed_dim, 3 * embed_dim, bias=bias)  # one matmul for q, k and v
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.positions = build_position_embedding(positions, self.head_dim, max_len)
        # MAGNETO (Wang et al. 2022): a LayerNorm on the attention output, before out_proj
        self.inner_ln = nn.LayerNorm(embed_dim) if sub_ln else nn.Identity()

    def new_cache(self, batch: int, max_len: int | None = None):
        """An empty decoding cache for this layer (longnet.kv_cache contract), in the dtype and on
        the device of its weights; ValueError if the attention cannot decode. max_len: the
        longest sequence it will hold (LongNet's schedule at that length; see the variant)."""
        make = getattr(self.attend, "new_cache", None)
        cache = None if make is None or not self.causal else make(
            batch, self.head_dim, dtype=self.qkv_proj.weight.dtype, device=self.qkv_proj.weight.device,
            max_len=max_len)
        if cache is None:
            raise ValueError(f"attention {self.attend!r} has no cached decoding path (needs causal "
                             "attention whose new_cache returns a cache)")
        return cache

    def forward(self, x: torch.Tensor, positions: torch.Tensor | None = None, cache=None) -> torch.Tensor:
        """x (B, N, E); positions (N,) absolute positions (default: after what the cache holds).

        cache (from new_cache): empty, the normal forward runs over x and its keys and values fill
        the cache (prefill); otherwise each token of x is appended and attended in turn."""
        start = 0 if cache is None else cache.length
        q, k, v = self.qkv_proj(x).unflatten(-1, (3, self.num_heads, self.head_dim)).unbind(2)
        if self.positions is not None:
            if positions is None:
                positions = torch.arange(start, start + x.shape[1], device=x.device)
            q, k = self.positions(q, k, positions)
        if cache is not None and start == 0 and hasattr(cache, "prefill"):
            out = cache.prefill(q, k, v)  # a cache whose pattern is set by its length (LongNet's)
        elif cache is None or start == 0:
            # no cache, or prefill: the full causal forward gives every prompt position at once
            out = self.attend(q, k, v, causal=self.causal)
            if cache is not None:
                cache.append(k, v)
        else:
            steps = []
            for i in range(x.shape[1]):  # one token at a time: each sees exactly its causal prefix
                cache.append(k[:, i:i + 1], v[:, i:i + 1])
                steps.append(cache.attend(q[:, i:i + 1]))
            out = torch.cat(steps, 1)
        return self.out_proj(self.inner_ln(out.flatten(-2)))


class MultiheadDilatedAttention(MultiheadAttention):
    """LongNet's attention layer: projections, XPos, sub-LN and the registered `longnet` variant
    (longnet.variants.LongNet: dilated attention, its schedule by the paper's rule unless
    extend=False, and its decode cache). The same layer the LM builds for attention="longnet"."""

    def __init__(self, embed_dim: int, num_heads: int, segment_lengths: Sequence[int] = PAPER_SEGMENT_LENGTHS,
                 dilation_rates: Sequence[int] = PAPER_DILATION_RATES, *, causal: bool = True,
                 positions: str | None = "xpos", sub_ln: bool = True, bias: bool = True, max_len: int = 0,
                 backend: str = "auto", exact_grad: bool = True, extend: bool = True):
        from .variants import LongNet

        validate_options(causal)  # the variant checks num_heads, the schedule and its options
        attend = LongNet(num_heads, list(segment_lengths), list(dilation_rates), extend=extend,
                         exact_grad=exact_grad, backend=backend)
        schedule = attend.schedule
        super().__init__(embed_dim, num_heads, attend, causal=causal, positions=positions, sub_ln=sub_ln,
                         bias=bias, max_len=max_len)
        self.segment_lengths = list(schedule.segment_lengths)
        self.dilation_rates = list(schedule.dilation_rates)
