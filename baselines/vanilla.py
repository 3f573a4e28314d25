"""Full softmax attention: every query sees every key (causal: every key at or before it).

Runs torch's scaled_dot_product_attention, which picks flash / memory-efficient / cuDNN kernels
on CUDA and the fused flash kernel on CPU, with autograd.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from longnet.flops import dense_attention_flops
from longnet.kv_cache import RowCache
from longnet.variants import AttentionVariant, check_flops_args, register


@register("vanilla")
class Vanilla(AttentionVariant):
    def __init__(self, num_heads: int):
        super().__init__(num_heads)

    def forward(self, q, k, v, causal=True):
        self.check_inputs(q, k, v)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                             v.transpose(1, 2), is_causal=causal)
        return out.transpose(1, 2)

    def mask(self, n, causal=True):
        full = torch.ones(n, n, dtype=torch.bool)
        return (full.tril() if causal else full).expand(self.num_heads, n, n)

    def flops(self, n, head_dim, causal=True):
        check_flops_args(self.name, n, head_dim)
        return dense_attention_flops(n, self.num_heads, head_dim, causal)

    def new_cache(self, batch, head_dim, *, dtype=torch.float32, device="cpu", max_len=None):
        """Every key is read again by every later query: the full cache, growing with N."""
        return RowCache(batch, self.num_heads, head_dim, dtype=dtype, device=device)
