"""Snakemake job: tokenize the configured corpus next to the declared manifest."""
import sys
from pathlib import Path

from longnet.data import prepare_corpus

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)  # noqa: F821 (snakemake global)
data = snakemake.params.data  # noqa: F821
out_dir = Path(snakemake.output.manifest).parent  # noqa: F821
manifest = prepare_corpus(out_dir, source=data["source"], path=data["path"],
                          tokenizer=data["tokenizer"], max_bytes=data["max_bytes"])
print({split: stats["tokens"] for split, stats in manifest["splits"].items()})
