"""Snakemake job: the profiling sweep of one variant (longnet.profiling.sweep)."""
import sys
from pathlib import Path

import baselines
from analysis.io import write_csv
from longnet.profiling import sweep

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)  # noqa: F821 (snakemake global)
sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821 (workflow/)
from pipeline_config import require_device  # noqa: E402
spec, device = snakemake.params.spec, snakemake.params.device  # noqa: F821
require_device(device)  # a cluster or dry run left this check to the job
profile = {k: v for k, v in snakemake.params.profile.items() if k != "threads"}  # noqa: F821
baselines.load_modules(snakemake.params.modules)  # noqa: F821
name = spec["name"]
variant_class = type(baselines.build(name, num_heads=profile["heads"], **spec["params"]))
if not variant_class.__module__.startswith(("baselines.", "longnet.")):
    # registered by an extra module: the sweep's child processes build it as module:factory
    name = f"{variant_class.__module__}:{variant_class.__qualname__}"
df = sweep([{"name": name, "params": spec["params"]}], device=device,
           threads=snakemake.threads, progress=True, **profile)  # noqa: F821
df["variant"] = spec["id"]  # the config's name for this variant: the key of every table
write_csv(df, snakemake.output[0])  # noqa: F821
