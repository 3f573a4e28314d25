"""Snakemake job: draw every figure under results/figures/ from the tidy tables."""
import sys

from analysis.figures import draw_figures
from analysis.io import save_figure
from analysis.tables import TABLES, read_tables

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)  # noqa: F821 (snakemake global)
tables = read_tables({name: snakemake.input[name] for name in TABLES})  # noqa: F821
for name, fig in draw_figures(tables).items():
    save_figure(fig, snakemake.output[name])  # noqa: F821
    print(name)
