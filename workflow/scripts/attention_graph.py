"""Snakemake job: dependency path lengths in one variant's stacked attention graph."""
import sys

from analysis.attention_graph import path_lengths
from analysis.io import write_csv
from baselines import load_modules

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)  # noqa: F821 (snakemake global)
spec, graph = snakemake.params.spec, snakemake.params.graph  # noqa: F821
load_modules(snakemake.params.modules)  # noqa: F821
df = path_lengths(spec["name"], spec["params"], seq_len=graph["seq_len"], heads=graph["heads"])
df["variant"] = spec["id"]  # the config's name for this variant: the key of every table
write_csv(df, snakemake.output[0])  # noqa: F821
