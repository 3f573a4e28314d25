"""Longformer-style attention (Beltagy et al. 2020): sliding window, per-head dilation, globals.

Conventions (docs/definitions.md, section 2):
- `window` counts ONE side, as allenai's code does (Hugging Face's attention_window counts both):
  query i sees keys i - m*d for m = 0..window (causal: window + 1 keys), and also i + m*d when
  not causal (2*window + 1 keys);
- `dilation` d: one int for all heads or a list with one int per head (Longformer puts d > 1 on a
  few heads of the upper layers);
- `global_tokens` g: the first g positions attend to every key and every query attends to them
  (causal: only keys at or before the query, as everywhere).
Runs as a chunked band (see baselines._blocks.band_pieces): O(N * window) time and memory; a
plain window (no dilation, no globals) uses flash-attn's window_size when flash-attn is the
backend (CUDA, fp16/bf16).
"""
from __future__ import annotations

import torch

from baselines._blocks import (BlockSparseVariant, band_pairs, band_pieces, flat_rows, group_blocks,
                               query_key_grid)
from longnet.backends import get_backend
from longnet.flops import attention_flops, causal_pairs
from longnet.kv_cache import RowCache
from longnet.variants import (AttentionVariant, check, check_backend, check_flops_args, check_positive_int,
                              register)


@register("longformer")
class Longformer(BlockSparseVariant, AttentionVariant):
    small_params = ({"window": 3}, {"window": 2, "dilation": [1, 2, 3, 1], "global_tokens": 2})

    def __init__(self, num_heads: int, window: int = 512, dilation: int | list[int] = 1,
                 global_tokens: int = 0, backend: str = "auto"):
        super().__init__(num_heads)
        check_backend(self.name, backend)
        check(self.name, "window", window, isinstance(window, int) and not isinstance(window, bool)
              and window >= 0, "an int >= 0 (keys on each side of the query)")
        dilations = [dilation] * num_heads if isinstance(dilation, int) else list(dilation)
        check(self.name, "dilation", dilation, len(dilations) == num_heads, f"an int >= 1 or a "
              f"list of {num_heads} ints >= 1 (one per head)")
        for d in dilations:
            check_positive_int(self.name, "dilation", d)
        check(self.name, "global_tokens", global_tokens, isinstance(global_tokens, int)
              and not isinstance(global_tokens, bool) and global_tokens >= 0, "an int >= 0")
        self.window, self.dilation, self.global_tokens, self.backend = (window, dilation,
                                                                         global_tokens, backend)
        self.dilations = dilations

    def build_pieces(self, n: int, causal: bool):
        heads, g = self.num_heads, min(self.global_tokens, n)
        pieces = []
        # the band among non-global positions: one sequence per head and residue mod d
        sequences: dict[int, list[torch.Tensor]] = {}
        for h, d in enumerate(self.dilations):
            for residue in range(min(d, n - g)):
                rows = flat_rows(torch.arange(g + residue, n, d), h, heads)
                sequences.setdefault(len(rows), []).append(rows)
        for group in sequences.values():
            pieces += band_pieces(torch.stack(group), self.window, causal)
        if g:
            positions = torch.arange(n)
            # every other query sees the globals (all of them precede it)
            pieces += group_blocks([(flat_rows(positions[g:], h, heads),
                                     flat_rows(positions[:g], h, heads)) for h in range(heads)],
                                   causal=False)
            # globals see everything (causal: the globals before them)
            keys = positions[:g] if causal else positions
            pieces += group_blocks([(flat_rows(positions[:g], h, heads), flat_rows(keys, h, heads))
                                    for h in range(heads)], causal=causal)
        return pieces

    def forward(self, q, k, v, causal=True):
        # a plain window (no dilation, no globals) on flash-attn: its own banded kernel
        plain = self.global_tokens == 0 and all(d == 1 for d in self.dilations)
        if plain and get_backend(self.backend, q.device, q.dtype, q.shape[-1]).name == "flash_attn":
            from flash_attn import flash_attn_func

            self.check_inputs(q, k, v)
            return flash_attn_func(q, k, v, causal=causal,
                                   window_size=(self.window, 0 if causal else self.window))
        return super().forward(q, k, v, causal)

    def mask(self, n, causal=True):
        i, j = query_key_grid(n)
        masks = []
        for d in self.dilations:
            offset = i - j
            band = (offset % d == 0) & (offset.abs() <= self.window * d)
            masks.append(band | (i < self.global_tokens) | (j < self.global_tokens))
        mask = torch.stack(masks)
        return mask & (j <= i) if causal else mask

    def new_cache(self, batch, head_dim, *, dtype=torch.float32, device="cpu", max_len=None):
        """Keeps the global tokens and the last window * max(dilation) + 1 positions."""
        g = self.global_tokens
        dilations = torch.tensor(self.dilations, device=device)[:, None]
        reach = self.window * max(self.dilations)

        def reads(t, positions):
            if t < g:  # a global query sees every key before it
                return None
            offset = t - positions
            band = (offset % dilations == 0) & (offset <= self.window * dilations)
            return band | (positions < g)

        def keeps(t, positions):  # query t reads back to t - reach, later ones less far
            return (positions < g) | (positions >= t - reach)
        return RowCache(batch, self.num_heads, head_dim, reads=reads, keeps=keeps, dtype=dtype,
                        device=device)

    def flops(self, n, head_dim, causal=True):
        check_flops_args(self.name, n, head_dim)
        g = min(self.global_tokens, n)
        pairs = 0
        for d in self.dilations:
            short, longer = divmod(n - g, d)  # `longer` residues have one more row
            pairs += (longer * band_pairs(short + 1, self.window, causal)
                      + (min(d, n - g) - longer) * band_pairs(short, self.window, causal))
            pairs += (n - g) * g + (causal_pairs(g) if causal else g * n)
        return attention_flops(pairs, 1, head_dim)
