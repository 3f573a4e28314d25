"""Blockwise causal attention (Sun et al. 2022): each query attends to its own block of `block`
tokens and the whole previous block; causal: only keys at or before the query.

Inside that window the attention is `inner`'s, a registered variant with `inner_params`: dense
("vanilla", the default: one masked kernel call), or a model's own pattern (LongNet, a sparse
baseline), run on each window of two blocks [(i-1) * block, (i+1) * block) with block i's
outputs kept (block 0 alone). The LongNet paper evaluates models beyond their training length
this way (section 4.2), with block = the training length (longnet.evaluate's "blockwise_causal"
evaluation). The dense inner runs on the block-sparse engine (each block against itself and
against the previous block, merged by log-sum-exp), so on fused kernels: cost O(N * block). A
windowed inner costs twice the inner's at 2 * block per block (every window's first block is
computed and dropped).
"""
from __future__ import annotations

import torch

from baselines._blocks import BlockSparseVariant, flat_rows, group_blocks
from longnet.flops import attention_flops, causal_pairs
from longnet.kv_cache import RowCache
from longnet.variants import (AttentionVariant, build, check, check_flops_args, check_positive_int,
                              register)


@register("blockwise_causal")
class BlockwiseCausal(BlockSparseVariant, AttentionVariant):
    small_params = ({"block": 8}, {"block": 5},
                    {"block": 8, "inner": "longnet",
                     "inner_params": {"segment_lengths": [4, 8], "dilation_rates": [1, 2]}},
                    {"block": 6, "inner": "sparse_fixed", "inner_params": {"block": 3, "summary": 1}})

    def __init__(self, num_heads: int, block: int = 2048, inner: str = "vanilla",
                 inner_params: dict | None = None):
        super().__init__(num_heads)
        check_positive_int(self.name, "block", block)
        check(self.name, "inner", inner, isinstance(inner, str) and inner != self.name,
              "a registered variant other than blockwise_causal")
        check(self.name, "inner_params", inner_params, inner_params is None
              or isinstance(inner_params, dict), "a dict of the inner variant's params")
        self.block, self.inner, self.inner_params = block, inner, dict(inner_params or {})
        # the window's own attention; the dense path below needs no module
        self.inner_variant = None if self._dense else build(inner, num_heads, **self.inner_params)

    @property
    def _dense(self) -> bool:
        return self.inner == "vanilla" and not self.inner_params

    def _windows(self, n: int):
        """(start, end, keep): each block's window [start, end) and the first row it keeps."""
        w = self.block
        return [(max(0, lo - w), min(lo + w, n), lo - max(0, lo - w)) for lo in range(0, n, w)]

    def build_pieces(self, n: int, causal: bool):
        """Dense inner, on the block-sparse engine (fused kernels): per head, each block against
        itself (causal or full) and each block after the first against the whole previous block
        (every key before every query: a full block), merged by log-sum-exp."""
        w, heads = self.block, self.num_heads
        starts = range(0, n, w)
        own, previous = [], []
        for h in range(heads):
            for lo in starts:
                rows = flat_rows(torch.arange(lo, min(lo + w, n)), h, heads)
                own.append((rows, rows))
                if lo:
                    previous.append((rows, flat_rows(torch.arange(lo - w, lo), h, heads)))
        return group_blocks(own, causal) + group_blocks(previous, False)

    def forward(self, q, k, v, causal=True):
        if self._dense:
            return BlockSparseVariant.forward(self, q, k, v, causal)
        self.check_inputs(q, k, v)
        outs = [self.inner_variant(q[:, a:b], k[:, a:b], v[:, a:b], causal=causal)[:, keep:]
                for a, b, keep in self._windows(q.shape[1])]
        return torch.cat(outs, dim=1)

    def mask(self, n, causal=True):
        """Dense inner: the mask; a windowed inner: None (each window's dropped first block is
        computed too, so it is not one softmax over its pairs; pattern() gives what it sees)."""
        if not self._dense:
            return None
        i = torch.arange(n)[:, None]
        j = torch.arange(n)[None, :]
        near = (j // self.block >= i // self.block - 1) & (j // self.block <= i // self.block)
        return (near & (j <= i) if causal else near).expand(self.num_heads, n, n)

    def pattern(self, n, causal=True):
        """Dense inner: the mask; otherwise the inner's pattern of each window at the rows it keeps."""
        if self._dense:
            return self.mask(n, causal)
        out = torch.zeros(self.num_heads, n, n, dtype=torch.bool)
        for a, b, keep in self._windows(n):
            out[:, a + keep:b, a:b] = self.inner_variant.pattern(b - a, causal)[:, keep:]
        return out

    def flops(self, n, head_dim, causal=True):
        check_flops_args(self.name, n, head_dim)
        if not self._dense:  # the whole window is computed, its first block dropped
            return sum(self.inner_variant.flops(b - a, head_dim, causal)
                       for a, b, _ in self._windows(n))
        w, pairs = self.block, 0
        for start in range(0, n, w):
            length = min(w, n - start)
            previous = w if start else 0  # every query sees the whole previous block
            pairs += previous * length + (causal_pairs(length) if causal else length * length)
        return attention_flops(pairs, self.num_heads, head_dim)

    def new_cache(self, batch, head_dim, *, dtype=torch.float32, device="cpu", max_len=None):
        """Query t reads the keys of its block and the previous one: the cache keeps those (the
        dense inner only; a windowed inner pattern cannot decode: None)."""
        if not self._dense:
            return None
        w = self.block

        def keeps(t, positions):
            return positions // w >= t // w - 1

        def reads(t, positions):
            return (keeps(t, positions) & (positions <= t)).expand(self.num_heads, -1)

        return RowCache(batch, self.num_heads, head_dim, reads=reads, keeps=keeps, dtype=dtype,
                        device=device)
