"""Multi-head attention layer around any attention function, and LongNet's dilated version.

The layer owns what every variant shares: q/k/v/out projections, relative positions (XPos or
rotary, applied at the original positions before any sparsifying), MAGNETO's sub-LayerNorm before
the output projection, and a key/value cache for token-by-token decoding. The attention pattern
itself is a callable `attention(q, k, v, causal=...)` on (B, N, H, D) tensors, so the LM can put
any registered variant (baselines.build) in the same layer.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .dilated_attention import (PAPER_DILATION_RATES, PAPER_SEGMENT_LENGTHS, dilated_attention,
                                dilated_attention_decode, validate_branches)
from .positions import build_position_embedding


@dataclass
class KVCache:
    """Keys and values seen so far, (B, T, H, D), grown by one step at a time."""

    keys: torch.Tensor | None = None
    values: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return 0 if self.keys is None else self.keys.shape[1]

    def append(self, k: torch.Tensor, v: torch.Tensor):
        if self.keys is None:
            self.keys, self.values = k, v
        else:
            self.keys, self.values = torch.cat([self.keys, k], 1), torch.cat([self.values, v], 1)
        return self.keys, self.values


class MultiheadAttention(nn.Module):
    """x (B, N, E) -> (B, N, E) with `attention` deciding who attends to whom.

    attend: the pattern, called as attend(q, k, v, causal=...) on (B, N, H, D) tensors; swappable
    (evaluation swaps in blockwise causal attention to run a vanilla model past its training length).
    decode: optional callable (q (B,1,H,D), k_cache, v_cache) -> (B,1,H,D) for cached generation.
    """

    def __init__(self, embed_dim: int, num_heads: int, attend: Callable, *, causal: bool = True,
                 positions: str | None = "xpos", sub_ln: bool = True, bias: bool = True, max_len: int = 0,
                 decode: Callable | None = None):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads, self.head_dim, self.causal = num_heads, embed_dim // num_heads, causal
        self.attend, self.decode = attend, decode
        self.qkv_proj = nn.Linear(embed_dim, 3 * embed_dim, bias=bias)  # one matmul for q, k and v
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.positions = build_position_embedding(positions, self.head_dim, max_len)
        # MAGNETO (Wang et al. 2022): a LayerNorm on the attention output, before out_proj
        self.inner_ln = nn.LayerNorm(embed_dim) if sub_ln else nn.Identity()

    def forward(self, x: torch.Tensor, positions: torch.Tensor | None = None,
                cache: KVCache | None = None) -> torch.Tensor:
        """x (B, N, E); positions (N,) absolute positions (default: after what the cache holds)."""
        start = 0 if cache is None else cache.length
        q, k, v = self.qkv_proj(x).unflatten(-1, (3, self.num_heads, self.head_dim)).unbind(2)
        if self.positions is not None:
            if positions is None:
                positions = torch.arange(start, start + x.shape[1], device=x.device)
            q, k = self.positions(q, k, positions)
        if cache is None or start == 0:
            # no cache, or prefill: the full causal forward gives every prompt position at once
            out = self.attend(q, k, v, causal=self.causal)
            if cache is not None:
                cache.append(k, v)
        else:
            if self.decode is None or not self.causal:
                raise ValueError("this attention has no cached decoding path (needs causal and a decode function)")
            steps = []
            for i in range(x.shape[1]):  # one token at a time: each sees exactly its causal prefix
                keys, values = cache.append(k[:, i:i + 1], v[:, i:i + 1])
                steps.append(self.decode(q[:, i:i + 1], keys, values))
            out = torch.cat(steps, 1)
        return self.out_proj(self.inner_ln(out.flatten(-2)))


class MultiheadDilatedAttention(MultiheadAttention):
    """LongNet's attention layer: projections, XPos, sub-LN and dilated attention with a decode cache."""

    def __init__(self, embed_dim: int, num_heads: int, segment_lengths: Sequence[int] = PAPER_SEGMENT_LENGTHS,
                 dilation_rates: Sequence[int] = PAPER_DILATION_RATES, *, causal: bool = True,
                 positions: str | None = "xpos", sub_ln: bool = True, bias: bool = True, max_len: int = 0,
                 backend: str = "auto", exact_grad: bool = True):
        branches = validate_branches(segment_lengths, dilation_rates)
        self.segment_lengths, self.dilation_rates = [w for w, _ in branches], [r for _, r in branches]

        def attend(q, k, v, causal=True):
            return dilated_attention(q, k, v, self.segment_lengths, self.dilation_rates, causal=causal,
                                     backend=backend, exact_grad=exact_grad)

        def decode(q, keys, values):
            return dilated_attention_decode(q, keys, values, self.segment_lengths, self.dilation_rates,
                                            backend=backend)

        super().__init__(embed_dim, num_heads, attend, causal=causal, positions=positions, sub_ln=sub_ln,
                         bias=bias, max_len=max_len, decode=decode)
