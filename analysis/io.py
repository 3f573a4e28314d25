"""Atomic outputs of the analysis: tables and texts through the library's one atomic-write helper
(`longnet.io`), and figures the same way. A killed run never leaves a half-written file behind."""
from __future__ import annotations

from longnet.io import atomic_path, write_csv, write_text

__all__ = ["atomic_path", "save_figure", "write_csv", "write_text"]


def save_figure(fig, path, dpi: int = 120) -> None:
    import matplotlib.pyplot as plt
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
