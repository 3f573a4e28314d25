"""Attention variants behind one contract, so LongNet and its baselines are swapped by name.

    from baselines import available, build
    available()                                  # every registered variant, sorted
    attn = build("sparse_fixed", num_heads=8, block=256)
    out = attn(q, k, v, causal=True)             # q, k, v, out: (B, N, H, D)
    attn.mask(n)        # Bool (H, n, n), True where query i may attend key j; None if not one softmax
    attn.pattern(n)     # Bool (H, n, n) keys each query sees (also when mask is None), for analysis
    attn.flops(n, head_dim, causal=True)         # forward matmul FLOPs per batch element, all heads

A variant is one file in this folder (or any importable module, see `load_modules`) that defines an
`AttentionVariant` subclass decorated with `@register("name")`. Its keyword arguments after
`num_heads` are its params; every one has a default. See baselines/README.md.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil

from baselines._base import AttentionVariant, check, check_backend, check_positive_int

__all__ = ["AttentionVariant", "available", "build", "check", "check_backend", "check_positive_int",
           "load_modules", "param_defaults", "register"]

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


_builtins_loaded = False


def _load_builtins() -> None:
    """Import every public module of this package once: dropping a file in is registering it."""
    global _builtins_loaded
    if not _builtins_loaded:
        for info in pkgutil.iter_modules(__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{__name__}.{info.name}")
        _builtins_loaded = True


def available() -> list[str]:
    """Names of every registered variant, sorted."""
    _load_builtins()
    return sorted(_VARIANTS)


def _variant_class(name: str) -> type[AttentionVariant]:
    _load_builtins()
    if name not in _VARIANTS:
        raise ValueError(f"unknown attention variant {name!r}; available: {', '.join(available())}")
    return _VARIANTS[name]


def param_defaults(name: str) -> dict:
    """The params a variant accepts, with their defaults (everything after num_heads)."""
    signature = inspect.signature(_variant_class(name).__init__)
    return {p.name: p.default for p in list(signature.parameters.values())[2:]}


def build(name: str, num_heads: int, **params) -> AttentionVariant:
    """Construct variant `name` for `num_heads` heads; unknown params raise, listing the allowed."""
    defaults = param_defaults(name)
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        allowed = ", ".join(f"{k}={v!r}" for k, v in defaults.items()) or "(none)"
        raise ValueError(f"attention variant {name!r}: unknown param(s) {', '.join(unknown)}; "
                         f"allowed (with defaults): {allowed}")
    return _variant_class(name)(num_heads, **params)
