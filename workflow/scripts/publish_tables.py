"""Snakemake job: copy the checked tables into results/tables/, each file atomically."""
import shutil
import sys

from analysis.io import atomic_path

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)  # noqa: F821 (snakemake global)
for name in snakemake.output.keys():  # noqa: F821
    with atomic_path(snakemake.output[name]) as tmp:  # noqa: F821
        shutil.copyfile(snakemake.input[name], tmp)  # noqa: F821
    print(name)
