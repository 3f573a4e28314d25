"""Atomic file writes: a killed run never leaves a half-written file behind.

Each writer writes a hidden temporary file in the destination's folder (created if missing) and
renames it over the destination (os.replace is atomic within one filesystem); on an error the
temporary file is removed and the destination is untouched. The file gets the mode a plain open()
would give it (0644 under the usual umask 022), not mkstemp's private 0600, so other users of a
shared machine can read the results.

    with atomic_path(path) as tmp: torch.save(state, tmp)     # any writer that takes a path
    write_text(text, path); write_bytes(data, path); write_csv(df, path)
    write_rows(path, columns, rows)                            # a list of dicts as CSV
    copy_file(src, dst)

A run killed mid-write (SIGKILL, power loss) leaves its temporary file: `.NAME.XXXXXXXX.SUFFIX`
beside NAME (X: tempfile's eight random characters; SUFFIX: NAME's own suffix, if any).
is_temporary(name) recognises exactly that pattern, and sweep_temporaries(folder) removes such
files under a folder; the pipeline sweeps its results and work folders when a run starts
(workflow/rules/common.smk), when no other run holds a lock there.
"""
from __future__ import annotations

import csv
import io
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "copy_file", "is_temporary", "sweep_temporaries", "write_bytes",
           "write_csv", "write_rows", "write_text"]


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path):
    """A temporary path next to `path`: on success it replaces `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# tempfile.mkstemp's names: prefix, eight of these characters, suffix (tempfile._RandomNameSequence)
_RANDOM = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")
_RANDOM_LEN = 8


def is_temporary(name: str) -> bool:
    """Whether a file name is one atomic_path gives: `.{dest}.{8 random}{Path(dest).suffix}`."""
    if not name.startswith("."):
        return False
    for i in range(2, len(name) - _RANDOM_LEN):  # name[i] is the dot before the random part
        random = name[i + 1:i + 1 + _RANDOM_LEN]
        if name[i] != "." or len(random) < _RANDOM_LEN or not set(random) <= _RANDOM:
            continue
        dest, suffix = name[1:i], name[i + 1 + _RANDOM_LEN:]
        if dest not in ("", ".", "..") and suffix == Path(dest).suffix:
            return True
    return False


def sweep_temporaries(folder) -> list[Path]:
    """Remove atomic_path's leftover temporary files under `folder` (symbolic links not
    followed, nothing else touched); the paths removed. Only call this when no writer can be
    running there: a live write's temporary file matches the same pattern."""
    removed = []
    for parent, _, names in os.walk(folder):
        for name in names:
            path = Path(parent) / name
            if is_temporary(name) and path.is_file() and not path.is_symlink():
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def write_text(text: str, path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_bytes(data: bytes, path) -> None:
    """The bytes, flushed to disk (fsync) before the rename."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def write_csv(df, path) -> None:
    """A pandas DataFrame as CSV, without its index."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def write_rows(path, columns, rows) -> None:
    """Rows (dicts with the keys `columns`) as CSV with a header; small files, rewritten whole."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    write_text(buffer.getvalue(), path)


def copy_file(src, dst) -> None:
    """A copy of src at dst (its own file: a later damage to one never reaches the other)."""
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
