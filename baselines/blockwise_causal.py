"""Blockwise causal attention (Sun et al. 2022): each query attends to its own block of `block`
tokens and the whole previous block; causal: only keys at or before the query.

The LongNet paper evaluates vanilla Transformers beyond their training length this way, with
block = the training length (longnet.evaluate's "blockwise_causal" evaluation). Cost O(N * block).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from longnet.flops import attention_flops, causal_pairs
from longnet.kv_cache import RowCache
from longnet.variants import AttentionVariant, check_flops_args, check_positive_int, register


@register("blockwise_causal")
class BlockwiseCausal(AttentionVariant):
    small_params = ({"block": 8}, {"block": 5})

    def __init__(self, num_heads: int, block: int = 2048):
        super().__init__(num_heads)
        check_positive_int(self.name, "block", block)
        self.block = block

    def forward(self, q, k, v, causal=True):
        self.check_inputs(q, k, v)
        n, w = q.shape[1], self.block
        nb = -(-n // w)
        pad = nb * w - n  # padded rows come after every real query; their keys are masked below

        def blocks(x):  # (B, N, H, D) -> (B, H, nb, w, D)
            return F.pad(x.transpose(1, 2), (0, 0, 0, pad)).unflatten(2, (nb, w))

        qb, kb, vb = blocks(q), blocks(k), blocks(v)
        # keys of block i: block i-1 then block i (block -1 is zeros, masked out below)
        kk = torch.cat((F.pad(kb, (0, 0, 0, 0, 1, 0))[:, :, :-1], kb), dim=3)
        vv = torch.cat((F.pad(vb, (0, 0, 0, 0, 1, 0))[:, :, :-1], vb), dim=3)
        i = torch.arange(w, device=q.device)[:, None]
        j = torch.arange(2 * w, device=q.device)[None, :]
        allowed = (j <= i + w) if causal else torch.ones(w, 2 * w, dtype=torch.bool,
                                                           device=q.device)
        mask = allowed.expand(nb, w, 2 * w).clone()
        mask[0, :, :w] = False  # the first block has no previous block
        if pad:
            mask[-1, :, 2 * w - pad:] = False  # padded keys (causal masking already hides them)
        out = F.scaled_dot_product_attention(qb, kk, vv, attn_mask=mask)
        return out.flatten(2, 3)[:, :, :n].transpose(1, 2)

    def mask(self, n, causal=True):
        i = torch.arange(n)[:, None]
        j = torch.arange(n)[None, :]
        near = (j // self.block >= i // self.block - 1) & (j // self.block <= i // self.block)
        return (near & (j <= i) if causal else near).expand(self.num_heads, n, n)

    def flops(self, n, head_dim, causal=True):
        check_flops_args(self.name, n, head_dim)
        w, pairs = self.block, 0
        for start in range(0, n, w):
            length = min(w, n - start)
            previous = w if start else 0  # every query sees the whole previous block
            pairs += previous * length + (causal_pairs(length) if causal else length * length)
        return attention_flops(pairs, self.num_heads, head_dim)

    def new_cache(self, batch, head_dim, *, dtype=torch.float32, device="cpu"):
        """Query t reads the keys of its block and the previous one: the cache keeps those."""
        w = self.block

        def keeps(t, positions):
            return positions // w >= t // w - 1

        def reads(t, positions):
            return (keeps(t, positions) & (positions <= t)).expand(self.num_heads, -1)

        return RowCache(batch, self.num_heads, head_dim, reads=reads, keeps=keeps, dtype=dtype,
                        device=device)
