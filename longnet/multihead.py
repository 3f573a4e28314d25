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

from .dilated_attention import dilated_attention, dilated_attention_decode, validate_branches
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

    decode: optional callable (q (B,1,H,D), k_cache, v_cache) -> (B,1,H,D) for cached generation.
    """

    def __init__(self, embed_dim: int, num_heads: int, attention: Callable, *, causal: bool = True,
                 positions: str | None = "xpos", sub_ln: bool = True, bias: bool = True, max_len: int = 0,
                 decode: Callable | None = None):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads, self.head_dim, self.causal = num_heads, embed_dim // num_heads, causal
        self.attention, self.decode = attention, decode
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(embed_dim, embed_dim, bias=bias)
                                                                for _ in range(4))
        self.positions = build_position_embedding(positions, self.head_dim, max_len)
        # MAGNETO (Wang et al. 2022): a LayerNorm on the attention output, before out_proj
        self.inner_norm = nn.LayerNorm(embed_dim) if sub_ln else nn.Identity()

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, self.head_dim))

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        start = 0 if cache is None else cache.length
        q, k, v = self._heads(self.q_proj(x)), self._heads(self.k_proj(x)), self._heads(self.v_proj(x))
        if self.positions is not None:
            q, k = self.positions(q, k, torch.arange(start, start + x.shape[1], device=x.device))
        if cache is None or start == 0:
            # no cache, or prefill: the full causal forward gives every prompt position at once
            out = self.attention(q, k, v, causal=self.causal)
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
        return self.out_proj(self.inner_norm(out.flatten(-2)))


class MultiheadDilatedAttention(MultiheadAttention):
    """LongNet's attention layer: projections, XPos, sub-LN and dilated attention with a decode cache."""

    def __init__(self, embed_dim: int, num_heads: int, segment_lengths: Sequence[int] = (2048, 4096, 8192, 16384, 32768),
                 dilation_rates: Sequence[int] = (1, 2, 4, 6, 12), *, causal: bool = True,
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
