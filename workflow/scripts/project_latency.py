"""Snakemake job: project per-device latency toward 1B tokens (longnet.cost_model.project)."""
import sys

import pandas as pd

from analysis.io import write_csv
from longnet.cost_model import project

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)  # noqa: F821 (snakemake global)
cost = snakemake.params.cost_model  # noqa: F821
measured = pd.concat([pd.read_csv(p) for p in snakemake.input.measured], ignore_index=True)  # noqa: F821
profile = pd.concat([pd.read_csv(p) for p in snakemake.input.profile], ignore_index=True)  # noqa: F821
df = project(profile=profile, distributed=measured, seq_lens=cost["seq_lens"],
             tokens_per_device=cost["tokens_per_device"], link=cost["links"][cost["link"]])
df["link"] = cost["link"]
write_csv(df, snakemake.output[0])  # noqa: F821
