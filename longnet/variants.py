"""The attention-variant contract and its registry: LongNet and its baselines swapped by name.

    from longnet.variants import available, build
    available()                                  # every registered variant, sorted
    attn = build("sparse_fixed", num_heads=8, block=256)
    out = attn(q, k, v, causal=True)             # q, k, v, out: (B, N, H, D)
    attn.mask(n)        # Bool (H, n, n), True where query i may attend key j; None if not one softmax
    attn.pattern(n)     # Bool (H, n, n) keys each query sees (also when mask is None), for analysis
    attn.flops(n, head_dim, causal=True)         # forward matmul FLOPs per batch element, all heads

A variant is an `AttentionVariant` subclass decorated with `@register("name")`; its keyword
arguments after `num_heads` are its params, every one with a default. LongNet ("longnet") is
registered here, by the library itself. Every other variant arrives as a plug-in: on the first
registry lookup the library loads the modules of the "longnet.variants" entry-point group
(`_load_plugins`; the project's own comparison variants, the top-level `baselines/` package, are
one such entry in pyproject.toml), and modules named at run time register through `load_modules`
(the pipeline's `extra_modules`). The library itself never names another package. So a new
variant is one file in baselines/ plus one line in the pipeline's configuration (baselines/README.md).
"""
from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import math
import numbers

import torch
from torch import nn

from .backends import BACKENDS
from .dilated_attention import dilated_attention
from .flops import dilated_attention_flops
from .kv_cache import DilatedKVCache
from .schedule import (PAPER_DILATION_RATES, PAPER_SEGMENT_LENGTHS, DilatedSchedule,
                       paper_schedule, schedule_label)

__all__ = ["AttentionVariant", "LongNet", "PLUGIN_GROUP", "available", "build", "check",
           "check_backend", "check_flops_args", "check_positive_int", "load_modules",
           "param_defaults", "register", "schedule_columns", "variant_class"]

PLUGIN_GROUP = "longnet.variants"  # entry points loaded on the first registry lookup


# ---- the contract -------------------------------------------------------------------------------

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
                  device: torch.device | str = "cpu", max_len: int | None = None):
        """A cache for causal token-by-token decoding (the contract of longnet.kv_cache:
        `append(k, v)` then `attend(q)` gives the causal forward's output at the new position,
        holding only the rows later queries still read), or None: this variant cannot decode.
        max_len: the longest sequence it will hold, for a variant whose pattern depends on the
        length (LongNet's schedule covers it); the others ignore it.

        A variant that is one masked softmax per query usually returns
        `longnet.kv_cache.RowCache(batch, self.num_heads, head_dim, reads=..., keeps=...)`."""
        return None


# ---- the registry -------------------------------------------------------------------------------

_VARIANTS: dict[str, type[AttentionVariant]] = {}


def register(name: str):
    """Class decorator: make an AttentionVariant subclass buildable as `name`."""
    def decorator(cls: type[AttentionVariant]) -> type[AttentionVariant]:
        if not (isinstance(cls, type) and issubclass(cls, AttentionVariant)):
            raise TypeError(f"@register({name!r}) needs an AttentionVariant subclass, got {cls!r}")
        known = _VARIANTS.get(name)
        # a module imported twice (e.g. as a script and as a module) re-registers the same class
        if known is not None and known.__qualname__ != cls.__qualname__:
            raise ValueError(f"attention variant {name!r} is already registered by {known!r}")
        cls.name = name
        _VARIANTS[name] = cls
        return cls
    return decorator


def load_modules(modules: list[str] | tuple[str, ...]) -> None:
    """Import modules by dotted name (e.g. ["mypkg.my_attention"]) so their variants register."""
    for module in modules:
        importlib.import_module(module)


_plugins_loaded = False


def _load_plugins() -> None:
    """The registry's one loading mechanism for variants outside the library: on the first
    lookup, load every entry point of PLUGIN_GROUP once (each imports a module whose classes
    register themselves). Nothing here names a package."""
    global _plugins_loaded
    if not _plugins_loaded:
        _plugins_loaded = True
        for entry in importlib.metadata.entry_points(group=PLUGIN_GROUP):
            entry.load()


def available() -> list[str]:
    """Names of every registered variant, sorted."""
    _load_plugins()
    return sorted(_VARIANTS)


def variant_class(name: str) -> type[AttentionVariant]:
    """The registered class of variant `name` (ValueError listing the available ones)."""
    _load_plugins()
    if name not in _VARIANTS:
        raise ValueError(f"unknown attention variant {name!r}; available: {', '.join(available())}"
                         f" (variants outside the library register through the {PLUGIN_GROUP!r} "
                         "entry points of an installed package, e.g. this project's baselines "
                         "after pip install -e ., or a module named in load_modules)")
    return _VARIANTS[name]


def param_defaults(name: str) -> dict:
    """The params a variant accepts, with their defaults (everything after num_heads)."""
    signature = inspect.signature(variant_class(name).__init__)
    return {p.name: p.default for p in list(signature.parameters.values())[2:]}


def build(name: str, num_heads: int, **params) -> AttentionVariant:
    """Construct variant `name` for `num_heads` heads; unknown params raise, listing the allowed."""
    defaults = param_defaults(name)
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        allowed = ", ".join(f"{k}={v!r}" for k, v in defaults.items()) or "(none)"
        raise ValueError(f"attention variant {name!r}: unknown param(s) {', '.join(unknown)}; "
                         f"allowed (with defaults): {allowed}")
    return variant_class(name)(num_heads, **params)


# ---- LongNet, the library's own variant ---------------------------------------------------------

@register("longnet")
class LongNet(AttentionVariant):
    """LongNet dilated attention (Ding et al. 2023) as a variant: a thin adapter over
    `longnet.dilated_attention`. Not one masked softmax (branches are mixed by their lse weights,
    and a key seen by two branches counts twice), so mask() is None and pattern() is the union
    of branches.

    The schedule at length n follows the paper's rule (`longnet.schedule.paper_schedule`): the
    given branches (default: the paper's Table 2 schedule), continued by (2w, 2r) until one
    segment covers n, each segment clipped to n. extend=False pins the given branches at every
    length; a length past their widest segment is then `truncated` (`schedule_label`)."""

    small_params = ({"segment_lengths": [4, 8, 16], "dilation_rates": [1, 2, 4]},
                    {"segment_lengths": [6, 12], "dilation_rates": [2, 3]},
                    {"segment_lengths": [4, 8], "dilation_rates": [1, 2], "extend": False})

    def __init__(self, num_heads: int, segment_lengths: list[int] = list(PAPER_SEGMENT_LENGTHS),
                 dilation_rates: list[int] = list(PAPER_DILATION_RATES), extend: bool = True,
                 exact_grad: bool = True, backend: str = "auto"):
        super().__init__(num_heads)
        check_backend(self.name, backend)
        try:
            self.schedule = DilatedSchedule(segment_lengths, dilation_rates)
        except ValueError as error:
            raise ValueError(f"attention variant {self.name!r}: {error}") from None
        check(self.name, "extend", extend, isinstance(extend, bool), "true or false")
        check(self.name, "exact_grad", exact_grad, isinstance(exact_grad, bool), "true or false")
        self.segment_lengths, self.dilation_rates = list(segment_lengths), list(dilation_rates)
        self.extend, self.exact_grad, self.backend = extend, exact_grad, backend

    def schedule_at(self, n: int) -> DilatedSchedule:
        """The branches this variant runs over n tokens (before clipping w to n)."""
        return paper_schedule(n, self.schedule) if self.extend else self.schedule

    def schedule_label(self, n: int) -> str:
        """How the schedule is used at n: paper / pinned / truncated (longnet.schedule)."""
        return schedule_label(self.schedule, n, self.extend)

    def forward(self, q, k, v, causal=True):
        self.check_inputs(q, k, v)
        schedule = self.schedule_at(q.shape[1])
        return dilated_attention(q, k, v, schedule.segment_lengths, schedule.dilation_rates,
                                 causal=causal, backend=self.backend, exact_grad=self.exact_grad)

    def pattern(self, n, causal=True):
        """Union over branches: same segment of w (clipped to n), both rows selected by head h's
        offset h mod r inside the segment (longnet.schedule.DilatedSchedule.pattern)."""
        return self.schedule_at(n).pattern(n, self.num_heads, causal)

    def new_cache(self, batch, head_dim, *, dtype=torch.float32, device="cpu", max_len=None):
        """Per branch and head only the current segment's rows on the head's lattice:
        sum_i ceil(w_i / r_i) rows per head, whatever the context length. The schedule is the one
        the forward runs over max_len tokens (the given branches when max_len is None), so each
        step equals the causal forward over max_len tokens at that position."""
        schedule = self.schedule if max_len is None else self.schedule_at(max_len)
        return DilatedKVCache(batch, self.num_heads, head_dim, schedule.segment_lengths,
                              schedule.dilation_rates, dtype=dtype, device=device)

    def flops(self, n, head_dim, causal=True):
        check_flops_args(self.name, n, head_dim)
        schedule = self.schedule_at(n)
        return dilated_attention_flops(n, schedule.segment_lengths, schedule.dilation_rates,
                                       self.num_heads, head_dim, causal)


def schedule_columns(attend, n: int) -> dict:
    """The `schedule` and `widest_segment` columns of a result row at length n: for LongNet how
    its schedule was used (paper / pinned / truncated) and the widest segment it ran with; empty
    for variants without a schedule."""
    if not isinstance(attend, LongNet):
        return dict(schedule="", widest_segment=math.nan)
    return dict(schedule=attend.schedule_label(n),
                widest_segment=attend.schedule_at(n).widest_segment)
