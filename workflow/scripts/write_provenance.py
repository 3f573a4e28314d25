"""Snakemake job: results/provenance.json (commit, torch, device, date, config) of the run."""
import json
import sys

from analysis.io import write_text
from longnet.provenance import provenance

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)  # noqa: F821 (snakemake global)
config = snakemake.params.config  # noqa: F821
record = dict(provenance(config, device=snakemake.params.device), config=config)  # noqa: F821
write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n",
           snakemake.output[0])  # noqa: F821
