# LongNet reproduction pipeline: `snakemake --cores 2` from the repository root regenerates every
# table and figure under results/ (default configuration: a 2-core CPU in about 30 minutes).
#
#   snakemake --cores 2                                          # default configuration
#   snakemake --cores 2 --configfile workflow/configs/smoke.yaml  # toy sizes, same DAG (CI)
#   snakemake --profile workflow/profiles/slurm --configfile workflow/configs/paper.yaml
#   snakemake --report results/report.html                       # HTML report, every figure
#
# Stages, one rule file each: data -> train -> evaluate; profile; distributed; analysis.
# Snakemake applies workflow/profiles/default by itself only to a Snakefile inside workflow/, so a
# run given no --configfile loads the default configuration here, with any --config KEY=VALUE
# applied on top. A --configfile that holds nothing is an error, never a silent default run.
import copy
from pathlib import Path

import yaml
from snakemake.common.configfile import load_configfile
from snakemake.exceptions import WorkflowError
from snakemake.utils import update_config

if workflow.config_settings.configfiles:
    for configfile in workflow.config_settings.configfiles:
        # Snakemake itself refuses a file that is not a mapping, before this file is read
        if not load_configfile(configfile):
            raise WorkflowError(
                f"configuration file {configfile} is empty: give a mapping of the keys in "
                "workflow/schemas/config.schema.yaml (see workflow/configs/*.yaml), or no "
                "--configfile to run the default configuration (workflow/configs/default.yaml)")
else:
    command_line = copy.deepcopy(dict(config))  # --config KEY=VALUE, applied on top
    config.clear()
    default_config = Path(workflow.basedir) / "workflow" / "configs" / "default.yaml"
    config.update(yaml.safe_load(default_config.read_text()))
    update_config(config, command_line)


include: "workflow/rules/common.smk"
include: "workflow/rules/resources.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/profile.smk"
include: "workflow/rules/distributed.smk"
include: "workflow/rules/recall.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/generate.smk"
include: "workflow/rules/peers.smk"

# light aggregation jobs run on the submitting machine, not as cluster jobs
localrules: all, project_latency, aggregate, tables, figures, provenance, results_readme


rule all:
    input:
        rules.tables.output,
        rules.figures.output,
        rules.provenance.output,
        rules.results_readme.output,
        trained_paths(f"{RESULTS}/samples/{{variant}}_L{{train_len}}.txt", seeds=SEEDS[:1]),
        rules.decode_benchmark.output,
    default_target: True
