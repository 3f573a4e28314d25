"""Snakemake job: write results/README.md from the tables, figures and report captions."""
import sys
from pathlib import Path

from analysis.io import write_text
from analysis.readme import results_readme
from analysis.tables import TABLES, read_tables

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)  # noqa: F821 (snakemake global)
tables = read_tables({name: snakemake.input[name] for name in TABLES})  # noqa: F821
figures = [Path(p).stem for p in snakemake.input.figures]  # noqa: F821
captions = Path(snakemake.scriptdir).parent / "report"  # noqa: F821
text = results_readme(tables, figures, captions, snakemake.params.config_hash)  # noqa: F821
write_text(text, snakemake.output[0])  # noqa: F821
