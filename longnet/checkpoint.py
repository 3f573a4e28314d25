"""Checkpoints written atomically with a size and SHA-256 sidecar, and verified when read.

    save_checkpoint(state, path)        # path and path.sha256 ({"bytes": ..., "sha256": ...})
    state = load_checkpoint(path)       # CheckpointError naming the file if it is damaged
    verify_checkpoint(path)             # the same check without unpickling

A write goes to a temporary file next to path (longnet.io.atomic_path: removed if anything fails),
is renamed over path and hashed, and then its sidecar is written: a crash between the two leaves a sidecar that does not match, which reads as
damaged, never as good. A checkpoint without a sidecar (written before sidecars existed) is only
checked by unpickling it.

A checkpoint holds plain data only (dicts, lists, tuples, str, int, float, bool, None, tensors:
save_checkpoint refuses anything else, naming its key) and is read with torch.load(weights_only=
True), which unpickles nothing else: a file that asks to build any other object (a pickle can run
code as it loads) is refused with a CheckpointError naming it. The sidecar only tells a damaged
file from a good one; it is no signature, since whoever can write the checkpoint can write it too.
"""
from __future__ import annotations

import hashlib
import json
import pickle
import re
import shutil
from pathlib import Path

import torch

from longnet.io import atomic_path, write_text


class CheckpointError(OSError):
    """A checkpoint that is missing, truncated or does not match its sidecar."""


def sidecar_path(path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def _digest(path: Path) -> dict:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return {"bytes": path.stat().st_size, "sha256": h.hexdigest()}


PLAIN = (str, int, float, bool, type(None), torch.Tensor)


def check_plain(value, key: str = "state") -> None:
    """TypeError naming the first value under `value` that torch.load(weights_only=True) would
    refuse: only dicts (str or int keys), lists, tuples and PLAIN values are allowed."""
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"checkpoint key {key}: key {k!r} is a {type(k).__name__} "
                                "(allowed: str, int)")
            check_plain(v, f"{key}[{k!r}]")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_plain(v, f"{key}[{i}]")
    elif not isinstance(value, PLAIN):
        raise TypeError(f"checkpoint key {key} is a {type(value).__module__}."
                        f"{type(value).__qualname__} (allowed: dict, list, tuple, str, int, float, "
                        "bool, None, torch.Tensor: plain data that loads with weights_only=True)")


def save_checkpoint(state: dict, path) -> None:
    """torch.save `state` (plain data, see check_plain) to `path` atomically, then its sidecar."""
    check_plain(state)
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
    except (OSError, RuntimeError) as error:  # torch reports a full disk as "basic_ios::clear"
        free = shutil.disk_usage(path.parent).free if path.parent.exists() else None
        raise OSError(f"could not write checkpoint {path} ({error}); "
                      f"{'free space there: ' + format(free, ',') + ' bytes; ' if free is not None else ''}"
                      "is the disk full? The previous checkpoint is kept") from error
    write_text(json.dumps(_digest(path)) + "\n", sidecar_path(path))


def damaged(path, problem: str) -> CheckpointError:
    path = Path(path)
    return CheckpointError(f"checkpoint {path} is damaged: {problem}; delete {path} and "
                           f"{sidecar_path(path).name} and rerun (the job that wrote it writes it "
                           "again)")


def verify_checkpoint(path) -> None:
    """Raise CheckpointError unless `path` exists and matches its sidecar (when it has one)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    sidecar = sidecar_path(path)
    if not sidecar.exists():
        return
    try:
        expected = json.loads(sidecar.read_text())
    except ValueError:
        raise damaged(path, f"its sidecar {sidecar.name} is unreadable") from None
    actual = _digest(path)
    if actual != expected:
        raise damaged(path, f"{actual['bytes']} bytes (sha256 {actual['sha256'][:12]}...) where "
                      f"{sidecar.name} records {expected.get('bytes')} bytes "
                      f"(sha256 {str(expected.get('sha256'))[:12]}...)")


def load_checkpoint(path, map_location="cpu") -> dict:
    """The verified checkpoint at `path` (CheckpointError naming the file otherwise)."""
    verify_checkpoint(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if "weights only load failed" not in str(error).lower():
            raise damaged(path, f"torch.load failed (UnpicklingError: {error})") from None
        refused = re.search(r"Unsupported global: GLOBAL (\S+)|Unsupported operand \S+",
                            str(error))
        what = (f"it asks for {refused[1] or refused[0]}" if refused else
                "it holds an object other than plain data")
        raise CheckpointError(
            f"checkpoint {path} was not loaded: {what}, and unpickling anything but plain data "
            "(tensors, dicts, lists, numbers, strings) can run code. Checkpoints written by "
            "longnet.train hold plain data only: delete this file (and its sidecar) and rerun "
            "the job that writes it; open it by hand only if you trust whoever wrote it") from None
    except Exception as error:  # a damaged file fails in zipfile, pickle or torch
        raise damaged(path, f"torch.load failed ({type(error).__name__}: {error})") from None


def remove_checkpoint(path) -> None:
    """Delete a checkpoint and its sidecar (either may be missing)."""
    Path(path).unlink(missing_ok=True)
    sidecar_path(path).unlink(missing_ok=True)
