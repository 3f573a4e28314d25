"""Checkpoints written atomically with a size and SHA-256 sidecar, and verified when read.

    save_checkpoint(state, path)        # path and path.sha256 ({"bytes": ..., "sha256": ...})
    state = load_checkpoint(path)       # CheckpointError naming the file if it is damaged
    verify_checkpoint(path)             # the same check without unpickling

A write goes to path.tmp (removed if anything fails), is hashed, renamed over path, and then its
sidecar is written: a crash between the two leaves a sidecar that does not match, which reads as
damaged, never as good. A checkpoint without a sidecar (written before sidecars existed) is only
checked by unpickling it.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch


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


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_checkpoint(state: dict, path) -> None:
    """torch.save `state` to `path` atomically, then its sidecar."""
    path = Path(path)
    _write_atomic(path, lambda tmp: torch.save(state, tmp))
    record = json.dumps(_digest(path)) + "\n"
    _write_atomic(sidecar_path(path), lambda tmp: tmp.write_text(record))


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
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:  # a damaged file fails in zipfile, pickle or torch
        raise damaged(path, f"torch.load failed ({type(error).__name__}: {error})") from None


def remove_checkpoint(path) -> None:
    """Delete a checkpoint and its sidecar (either may be missing)."""
    Path(path).unlink(missing_ok=True)
    sidecar_path(path).unlink(missing_ok=True)
