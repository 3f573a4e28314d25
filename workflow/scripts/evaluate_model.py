"""Snakemake job: perplexity, context-window and passkey CSVs of one trained model."""
import sys

import torch

from analysis.io import write_csv
from baselines import load_modules
from longnet.evaluate import context_window, passkey, perplexity

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)  # noqa: F821 (snakemake global)
torch.set_num_threads(snakemake.threads)  # noqa: F821
out, params = snakemake.output, snakemake.params  # noqa: F821
checkpoint = snakemake.input.checkpoint  # noqa: F821
load_modules(params.modules)
evaluation, device = params.evaluation, params.device
data_dir = snakemake.input.manifest.rsplit("/", 1)[0]  # noqa: F821

tables = {
    out.perplexity: perplexity(checkpoint, data_dir, evaluation["eval_lens"],
                               max_tokens=evaluation["max_tokens"], device=device),
    out.context_window: context_window(checkpoint, data_dir, device=device,
                                       **evaluation["context_window"]),
    out.passkey: passkey(checkpoint, seed=params.seed, device=device, **evaluation["passkey"]),
}
for path, df in tables.items():
    df["variant"] = params.spec["id"]  # the config's name for this variant: the key of every table
    write_csv(df, path)
    print(path, len(df), "rows")
