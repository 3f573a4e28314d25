"""Sparse Transformer, strided pattern (Child et al. 2019), stride l.

Query i sees the previous l positions including itself (keys i-l+1 .. i: the released OpenAI
code's local window of l; the paper writes l+1) and every l-th earlier position (i - m*l, m >= 1).
Not causal, the same mirrored: |i - j| < l or l divides i - j. Per query ~ l + N/l keys, so
O(N * sqrt(N)) when l grows as sqrt(N) (Table 1 of the LongNet paper).
"""
from __future__ import annotations

import torch

from baselines._blocks import (BlockSparseVariant, band_pairs, band_pieces, flat_rows, group_blocks,
                               query_key_grid)
from longnet.flops import attention_flops
from longnet.kv_cache import RowCache
from longnet.variants import AttentionVariant, check_backend, check_flops_args, check_positive_int, register


@register("sparse_strided")
class SparseStrided(BlockSparseVariant, AttentionVariant):
    small_params = ({"stride": 4},)

    def __init__(self, num_heads: int, stride: int = 128, backend: str = "auto"):
        super().__init__(num_heads)
        check_backend(self.name, backend)
        check_positive_int(self.name, "stride", stride)
        self.stride, self.backend = stride, backend

    def build_pieces(self, n: int, causal: bool):
        heads, stride = self.num_heads, self.stride
        positions = torch.arange(n)
        local = torch.stack([flat_rows(positions, h, heads) for h in range(heads)])
        pieces = band_pieces(local, stride - 1, causal)
        # the strided keys: within each residue class mod l, every earlier row (strictly
        # causal = causal after shifting the keys by one), and, not causal, every later one
        earlier, later = [], []
        for h in range(heads):
            for residue in range(min(stride, n)):
                rows = flat_rows(torch.arange(residue, n, stride), h, heads)
                earlier.append((rows[1:], rows[:-1]))
                later.append((rows[:-1].flip(0), rows[1:].flip(0)))
        pieces += group_blocks(earlier, causal=True)
        if not causal:
            pieces += group_blocks(later, causal=True)
        return pieces

    def mask(self, n, causal=True):
        i, j = query_key_grid(n)
        offset = i - j
        mask = (offset.abs() < self.stride) | (offset % self.stride == 0)
        if causal:
            mask = mask & (j <= i)
        return mask.expand(self.num_heads, n, n)

    def new_cache(self, batch, head_dim, *, dtype=torch.float32, device="cpu", max_len=None):
        """Reads stride + t / stride keys, but every earlier key is read again (by t + m*stride),
        so the cache keeps them all."""
        def reads(t, positions):
            offset = t - positions
            return ((offset < self.stride) | (offset % self.stride == 0)).expand(self.num_heads, -1)
        return RowCache(batch, self.num_heads, head_dim, reads=reads, dtype=dtype, device=device)

    def flops(self, n, head_dim, causal=True):
        check_flops_args(self.name, n, head_dim)
        short, longer = divmod(n, self.stride)  # `longer` residue classes have one more row
        strided = (longer * (short + 1) * short + (min(self.stride, n) - longer) * short * (short - 1)) // 2
        pairs = band_pairs(n, self.stride - 1, causal) + (strided if causal else 2 * strided)
        return attention_flops(pairs * self.num_heads, 1, head_dim)
