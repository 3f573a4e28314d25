"""Sparse Transformer, fixed pattern (Child et al. 2019) as the LongNet paper configured it.

Block length l, c summary cells per block. Query i sees every key of its own block (causal: up to
itself) and the summary cells of every other block (causal: of earlier blocks). Heads attend
distinct summary sub-blocks, as Child et al. recommend: head h uses the cells at offsets
[l - (p+1)c, l - p*c) of each block, p = h mod (l // c) (p = 0 is the block's last c cells, which
have seen the whole block). Per query ~ l + N*c/l keys.

`match_longnet_flops` picks c so the FLOPs equal LongNet's at a given length, as the paper did.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from baselines._blocks import BlockSparseVariant, flat_rows, group_blocks, query_key_grid
from longnet.flops import attention_flops, causal_pairs, dilated_attention_flops
from longnet.kv_cache import RowCache
from longnet.schedule import PAPER_DILATION_RATES, PAPER_SEGMENT_LENGTHS
from longnet.variants import (AttentionVariant, check, check_backend, check_flops_args, check_positive_int,
                              register)

log = logging.getLogger(__name__)


@register("sparse_fixed")
class SparseFixed(BlockSparseVariant, AttentionVariant):
    small_params = ({"block": 8, "summary": 2}, {"block": 5, "summary": 3})

    def __init__(self, num_heads: int, block: int = 2048, summary: int = 128,
                 backend: str = "auto"):
        super().__init__(num_heads)
        check_backend(self.name, backend)
        check_positive_int(self.name, "block", block)
        check_positive_int(self.name, "summary", summary)
        check(self.name, "summary", summary, summary <= block, f"an int in 1..block ({block})")
        self.block, self.summary, self.backend = block, summary, backend

    def summary_offsets(self, head: int) -> range:
        """Offsets inside a block of the summary cells head `head` attends."""
        p = head % (self.block // self.summary)
        return range(self.block - (p + 1) * self.summary, self.block - p * self.summary)

    def build_pieces(self, n: int, causal: bool):
        heads, l = self.num_heads, self.block
        starts = range(0, n, l)
        own, summary = [], []
        for h in range(heads):
            offsets = torch.tensor(self.summary_offsets(h))
            cells = (torch.arange(0, n, l)[:, None] + offsets).flatten()  # block-major
            cells = flat_rows(cells[cells < n], h, heads)
            for b, start in enumerate(starts):
                rows = flat_rows(torch.arange(start, min(start + l, n)), h, heads)
                own.append((rows, rows))
                # causal: summaries of earlier blocks; else of every other block
                earlier = cells[:b * self.summary]
                keys = earlier if causal else torch.cat([earlier, cells[(b + 1) * self.summary:]])
                summary.append((rows, keys))
        return group_blocks(own, causal) + group_blocks(summary, causal=False)

    def mask(self, n, causal=True):
        i, j = query_key_grid(n)
        same_block = i // self.block == j // self.block
        masks = []
        for h in range(self.num_heads):
            offsets = self.summary_offsets(h)
            masks.append(same_block | ((j % self.block >= offsets.start)
                                       & (j % self.block < offsets.stop)))
        mask = torch.stack(masks)
        return mask & (j <= i) if causal else mask

    def new_cache(self, batch, head_dim, *, dtype=torch.float32, device="cpu", max_len=None):
        """Keeps the current block and the summary cells of earlier blocks (those of any head):
        block + N * (summary cells per block) / block rows."""
        ranges = [self.summary_offsets(h) for h in range(self.num_heads)]
        starts = torch.tensor([r.start for r in ranges], device=device)[:, None]
        stops = torch.tensor([r.stop for r in ranges], device=device)[:, None]

        def summary(positions):  # (H, L): the cell is a summary cell of head h
            cell = positions % self.block
            return (cell >= starts) & (cell < stops)

        def reads(t, positions):
            return (positions // self.block == t // self.block) | summary(positions)

        def keeps(t, positions):
            return (positions // self.block == t // self.block) | summary(positions).any(0)
        return RowCache(batch, self.num_heads, head_dim, reads=reads, keeps=keeps, dtype=dtype,
                        device=device)

    def flops(self, n, head_dim, causal=True):
        check_flops_args(self.name, n, head_dim)
        l, c = self.block, self.summary
        full, tail = divmod(n, l)
        lengths = [l] * full + ([tail] if tail else [])
        pairs = 0
        for h in range(self.num_heads):
            offsets = self.summary_offsets(h)
            tail_cells = max(0, min(tail, offsets.stop) - offsets.start)
            cells = full * c + tail_cells
            for b, length in enumerate(lengths):
                if causal:
                    pairs += causal_pairs(length) + length * b * c
                else:
                    own_cells = c if length == l else tail_cells
                    pairs += length * length + length * (cells - own_cells)
        return attention_flops(pairs, 1, head_dim)


@dataclass
class FlopMatch:
    params: dict            # pass to build("sparse_fixed", num_heads=..., **params)
    flops: float            # sparse_fixed forward FLOPs at seq_len
    longnet_flops: float    # LongNet's at seq_len
    seq_len: int

    def __str__(self):
        return (f"sparse_fixed block={self.params['block']} summary={self.params['summary']}: "
                f"{self.flops:.4g} FLOPs at N={self.seq_len}, LongNet {self.longnet_flops:.4g} "
                f"(ratio {self.flops / self.longnet_flops:.3f})")


def match_longnet_flops(seq_len: int, num_heads: int, head_dim: int = 64, block: int = 2048,
                        segment_lengths: list[int] = PAPER_SEGMENT_LENGTHS,
                        dilation_rates: list[int] = PAPER_DILATION_RATES,
                        causal: bool = True) -> FlopMatch:
    """The summary size c in 1..block whose FLOPs are closest to LongNet's at seq_len (the
    paper's "sparsity chosen so FLOPs match"); logs and returns what it chose."""
    target = dilated_attention_flops(seq_len, segment_lengths, dilation_rates, num_heads, head_dim,
                                     causal)
    def flops(c):
        return SparseFixed(num_heads, block, c).flops(seq_len, head_dim, causal)
    # FLOPs grow with c: bisect for the first c at or above the target, then take the nearer
    low, high = 1, block
    while low < high:
        middle = (low + high) // 2
        low, high = (middle + 1, high) if flops(middle) < target else (low, middle)
    best = min({max(1, low - 1), low}, key=lambda c: abs(flops(c) - target))
    match = FlopMatch({"block": block, "summary": best}, flops(best), target, seq_len)
    log.info("%s", match)
    return match
