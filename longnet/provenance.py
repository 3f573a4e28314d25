"""Provenance of a result: which code, which torch, which device, when, which configuration.

Every CSV row and figure the suite writes carries these fields, so a number can always be traced
back to the run that made it.
"""
from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import platform
import subprocess
from pathlib import Path

import torch

_REPO = Path(__file__).resolve().parent.parent


@functools.lru_cache(maxsize=4)
def git_commit(repo: Path = _REPO) -> str:
    """The checkout's commit; when files outside results/ differ from it, tracked or untracked
    (not ignored), '-dirty-' and a hash of those differences (the diff against HEAD and every
    untracked file's name and bytes), so two runs from different uncommitted trees never look
    alike ('unknown' outside git). results/ is left out because a run rewrites the committed
    reference run there: its own outputs say nothing about the code that made them."""
    def git(*args) -> bytes:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, check=True).stdout

    where = ("--", ".", ":(exclude)results")
    try:
        commit = git("rev-parse", "HEAD").decode().strip()
        if not git("status", "--porcelain", "--untracked-files=all", *where).strip():
            return commit
        digest = hashlib.sha256(git("diff", "--binary", "HEAD", *where))
        for name in sorted(git("ls-files", "--others", "--exclude-standard", "-z", *where)
                           .decode().split("\0")):
            if name:
                digest.update(name.encode() + b"\0" + (Path(repo) / name).read_bytes())
        return f"{commit}-dirty-{digest.hexdigest()[:12]}"
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def device_name(device: str | torch.device | None = None) -> str:
    """A human-readable name of the device that ran the measurement."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:  # the model name is more useful than 'x86_64' when /proc/cpuinfo exists
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu: {cpu} ({torch.get_num_threads()} threads)"


def config_hash(config) -> str:
    """A short, stable hash of a JSON-serialisable configuration (key order does not matter)."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def provenance(config=None, device: str | torch.device | None = None) -> dict:
    """The provenance columns: git_commit, torch_version, device, date (UTC, ISO 8601), config_hash."""
    return {
        "git_commit": git_commit(),
        "torch_version": torch.__version__,
        "device": device_name(device),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "config_hash": config_hash(config if config is not None else {}),
    }
