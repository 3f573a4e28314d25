"""The base class every attention variant subclasses, and the one parameter check."""
from __future__ import annotations

import inspect
import numbers

import torch
from torch import nn

from longnet.backends import BACKENDS


def check(variant: str, param: str, value, ok: bool, allowed: str) -> None:
    """Raise ValueError naming the variant, the param, its value and what is allowed."""
    if not ok:
        raise ValueError(f"attention variant {variant!r}: {param}={value!r} is invalid; "
                         f"allowed: {allowed}")


def check_positive_int(variant: str, param: str, value) -> None:
    check(variant, param, value, isinstance(value, int) and not isinstance(value, bool)
          and value >= 1, "an int >= 1")


def check_flops_args(variant: str, n, head_dim) -> None:
    """flops(n, head_dim): a length n >= 0 and a head_dim >= 1, both integers."""
    for param, value, low in (("n", n, 0), ("head_dim", head_dim, 1)):
        check(variant, param, value, isinstance(value, numbers.Integral)
              and not isinstance(value, bool) and value >= low, f"an int >= {low}")


def check_backend(variant: str, backend) -> None:
    """A kernel name of longnet.backends (whether it runs on this machine is checked at call)."""
    allowed = ["auto", *BACKENDS]
    check(variant, "backend", backend, backend in allowed, ", ".join(allowed))


class AttentionVariant(nn.Module):
    """Parameter-free attention: (B, N, H, D) q, k, v in, (B, N, H, D) out.

    Subclasses take `num_heads` and then keyword params, each with a default, and store every
    param as an attribute of the same name (that is what `params` and the repr report).
    """

    name = "?"  # set by @register
    # params (with num_heads=4) that show the pattern at N < 100: the conformance suite in
    # tests/test_baselines.py runs these besides the defaults
    small_params: tuple[dict, ...] = ()

    def __init__(self, num_heads: int):
        super().__init__()
        check_positive_int(self.name, "num_heads", num_heads)
        self.num_heads = num_heads

    @property
    def params(self) -> dict:
        """The variant's params (everything after num_heads) as plain values."""
        names = list(inspect.signature(type(self).__init__).parameters)[2:]
        return {name: getattr(self, name) for name in names}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in {"num_heads": self.num_heads,
                                                   **self.params}.items())

    def check_inputs(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        if q.dim() != 4 or q.shape != k.shape or q.shape != v.shape:
            raise ValueError(f"{self.name}: q, k, v must share one (B, N, H, D) shape, got "
                             f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
        if q.shape[2] != self.num_heads:
            raise ValueError(f"{self.name}: inputs have {q.shape[2]} heads (dim 2 of "
                             f"(B, N, H, D)) but num_heads={self.num_heads}")

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                causal: bool = True) -> torch.Tensor:
        raise NotImplementedError

    def mask(self, n: int, causal: bool = True) -> torch.Tensor | None:
        """Bool (H, n, n), True where query i may attend key j, if the variant is one masked
        softmax per query; None otherwise (e.g. LongNet's weighted mixture of branches)."""
        return None

    def pattern(self, n: int, causal: bool = True) -> torch.Tensor:
        """Bool (H, n, n): the keys each query gets information from (the union of all its
        parts). Equals mask(n) where there is one; the attention-graph analysis uses it."""
        mask = self.mask(n, causal)
        if mask is None:
            raise NotImplementedError(f"{self.name}: mask() is None, so pattern() must be defined")
        return mask

    def flops(self, n: int, head_dim: int, causal: bool = True) -> float:
        """Forward matmul FLOPs per batch element, all heads (longnet.flops conventions)."""
        raise NotImplementedError

    def new_cache(self, batch: int, head_dim: int, *, dtype: torch.dtype = torch.float32,
                  device: torch.device | str = "cpu"):
        """A cache for causal token-by-token decoding (the contract of longnet.kv_cache:
        `append(k, v)` then `attend(q)` gives the causal forward's output at the new position,
        holding only the rows later queries still read), or None: this variant cannot decode.

        A variant that is one masked softmax per query usually returns
        `longnet.kv_cache.RowCache(batch, self.num_heads, head_dim, reads=..., keeps=...)`."""
        return None
