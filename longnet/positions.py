"""Relative position embeddings applied to q and k at their original sequence positions.

LongNet (like torchscale) uses XPos: rotary embedding with an exponential decay, so the logit of
query m and key n is scaled by zeta^((m - n) / scale_base). Rotary is the same without the decay.
Both are applied before sparsifying, at the original positions, so every dilated branch sees the
same relative geometry.

Layout: q and k are (B, N, H, D); positions is a 1-D integer tensor of N absolute positions (so
token-by-token decoding passes the position of the new token).
"""
from __future__ import annotations


import math

import torch
from torch import nn


def _rotate_every_two(x: torch.Tensor) -> torch.Tensor:
    # (x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...): the interleaved pairing torchscale uses
    pairs = x.unflatten(-1, (-1, 2))
    return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (interleaved pairs), computed in float32 whatever the input dtype."""

    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"head_dim must be even for rotary/XPos embeddings, got {head_dim}")
        self.head_dim = head_dim
        inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def _angles(self, positions: torch.Tensor):
        angles = positions.to(torch.float32)[:, None] * self.inv_freq.to(positions.device)
        # (N, D/2) -> (N, 1, D) with each frequency repeated for its pair, broadcast over heads
        cos = angles.cos().repeat_interleave(2, dim=-1)[:, None, :]
        sin = angles.sin().repeat_interleave(2, dim=-1)[:, None, :]
        return cos, sin

    @staticmethod
    def _rotate(x, cos, sin, scale=None):
        if scale is not None:
            cos, sin = cos * scale, sin * scale
        x32 = x.to(torch.float32)
        return (x32 * cos + _rotate_every_two(x32) * sin).to(x.dtype)

    def forward(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor):
        cos, sin = self._angles(positions)
        return self._rotate(q, cos, sin), self._rotate(k, cos, sin)


class XPos(RotaryEmbedding):
    """XPos (Sun et al. 2022): rotary with per-frequency decay zeta_i^(position / scale_base).

    The query is scaled up by zeta^(m/scale_base) and the key down by zeta^(-n/scale_base), so only
    m - n matters. The decay is measured from a fixed `center` (not re-centred per call, as
    torchscale does) so a key cached during decoding stays valid; float32 then limits positions to
    about center +- 32K tokens for head_dim 64 (the factor leaves float32's range beyond that),
    which we check rather than silently return inf. Models set center to half their longest
    length; use rotary for longer inputs.
    """

    def __init__(self, head_dim: int, scale_base: float = 512.0, gamma: float = 0.4, center: int = 0):
        super().__init__(head_dim)
        self.scale_base = scale_base
        self.center = center
        zeta = (torch.arange(0, head_dim, 2, dtype=torch.float32) + gamma * head_dim) / ((1 + gamma) * head_dim)
        self.register_buffer("log_zeta", zeta.log(), persistent=False)
        # float32 exp overflows past ~88; keep a margin for the product with q and k themselves
        # (the smallest zeta, at index 0, is gamma / (1 + gamma): computed here, not read off the buffer)
        self.max_distance = int(80.0 / -math.log(gamma / (1 + gamma)) * scale_base)

    def forward(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor):
        centred = positions - self.center
        message = (f"XPos supports positions within {self.max_distance} of its center {self.center} in "
                   "float32; use positions='rotary' for longer inputs")
        if centred.numel() and positions.device.type == "cpu":
            if int(centred.abs().max()) > self.max_distance:
                raise ValueError(f"{message} (got position {int(positions.abs().max())})")
        elif centred.numel():  # on an accelerator, checked on the device: no host sync per layer
            torch._assert_async(centred.abs().max() <= self.max_distance, message)
        cos, sin = self._angles(positions)
        exponent = centred.to(torch.float32)[:, None] / self.scale_base * self.log_zeta.to(positions.device)
        scale = exponent.exp().repeat_interleave(2, dim=-1)[:, None, :]
        return self._rotate(q, cos, sin, scale), self._rotate(k, cos, sin, 1.0 / scale)


def build_position_embedding(kind: str | None, head_dim: int, max_len: int = 0) -> nn.Module | None:
    """'xpos' (the paper's, centred on max_len // 2), 'rotary', or 'none'/None for none."""
    if kind in (None, "none"):
        return None
    if kind == "xpos":
        return XPos(head_dim, center=max_len // 2)
    if kind == "rotary":
        return RotaryEmbedding(head_dim)
    raise ValueError(f"positions must be one of ['none', 'rotary', 'xpos'], got {kind!r}")


__all__ = ["RotaryEmbedding", "XPos", "build_position_embedding"]
