"""Snakemake job: perplexity, context-window and (if configured) passkey CSVs of one model."""
import sys
from pathlib import Path

import torch

from analysis.io import write_csv
from baselines import load_modules
from longnet.evaluate import context_window, passkey, perplexity

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)  # noqa: F821 (snakemake global)
sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821 (workflow/)
from pipeline_config import require_device  # noqa: E402
torch.set_num_threads(snakemake.threads)  # noqa: F821
out, params = snakemake.output, snakemake.params  # noqa: F821
checkpoint = snakemake.input.checkpoint  # noqa: F821
load_modules(params.modules)
evaluation, device = params.evaluation, params.device
require_device(device)  # a cluster or dry run left this check to the job
data_dir = snakemake.input.manifest.rsplit("/", 1)[0]  # noqa: F821

tables = {
    out.perplexity: perplexity(checkpoint, data_dir, evaluation["eval_lens"],
                               max_tokens=evaluation["max_tokens"], device=device),
    out.context_window: context_window(checkpoint, data_dir, device=device,
                                       **evaluation["context_window"]),
}
if "passkey" in evaluation:
    tables[out.passkey] = passkey(checkpoint, seed=params.seed, device=device,
                                  **evaluation["passkey"])
for path, df in tables.items():
    df["variant"] = params.spec["id"]  # the config's name for this variant: the key of every table
    write_csv(df, path)
    print(path, len(df), "rows")
