"""The comparison variants: one module per variant, each registering itself in the library's
registry (`longnet.variants`). The library loads this package as a plug-in (the "longnet.variants"
entry point in pyproject.toml) on its first lookup; importing it imports every public module here
once, so dropping a file in is registering it.

    from baselines import available, build       # the same functions as longnet.variants'
    attn = build("sparse_fixed", num_heads=8, block=256)

A variant is one file in this folder (or any importable module, see `load_modules`) that defines an
`AttentionVariant` subclass decorated with `@register("name")`. Its keyword arguments after
`num_heads` are its params; every one has a default. See baselines/README.md.
"""
from longnet.variants import (AttentionVariant, available, build, check, check_backend,
                              check_flops_args, check_positive_int, load_modules, param_defaults,
                              register, variant_class)

__all__ = ["AttentionVariant", "available", "build", "check", "check_backend", "check_flops_args",
           "check_positive_int", "load_modules", "param_defaults", "register", "variant_class"]


def _register_every_module() -> None:
    import importlib
    import pkgutil
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


_register_every_module()
