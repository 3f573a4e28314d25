# Configuration loading, validation and the names every stage uses.
#
# Everything that can be refused is refused here, at load time, before any job runs:
# workflow/pipeline_config.py checks the schema, builds every job's TrainConfig, model and
# variant, and (where the jobs run on this machine) the environment they need.
import atexit
import json
import os
import re
import sys
import time
from pathlib import Path

from snakemake.exceptions import WorkflowError

from longnet.provenance import config_hash

sys.path.insert(0, str(Path(workflow.basedir) / "workflow"))
import pipeline_config  # noqa: E402 (workflow/pipeline_config.py)

# a cluster executor gets --jobs as its node count; a local run turns --jobs into --cores
LOCAL_RUN = workflow.resource_settings.nodes is None
try:
    _resolved = pipeline_config.resolve_extends(config)  # an overlay: its base with it on top
    if _resolved is not config:
        config.clear()
        config.update(_resolved)
    VARIANTS = pipeline_config.check_config(config, local=LOCAL_RUN,
                                            dry_run=workflow.output_settings.dryrun)
except pipeline_config.ConfigError as error:
    raise WorkflowError(str(error)) from None

RESULTS = config["results_dir"]
WORK = config["work_dir"]
LOGS = f"{RESULTS}/logs"
TABLE_DIR = f"{RESULTS}/tables"
FIGURE_DIR = f"{RESULTS}/figures"
DEVICE = pipeline_config.resolve_device(config)
PYTHON = sys.executable  # the interpreter running snakemake has the project installed
ENV = "../../environment.yml"  # the project's conda environment, used with --use-conda


# one model per (variant, training length, training seed)
SEEDS = config["seeds"]
TRAINED = [(vid, L, s) for vid, v in VARIANTS.items() for L in v["train_lens"] for s in SEEDS]
PROFILED = [vid for vid, v in VARIANTS.items() if v["profile"]]

wildcard_constraints:
    variant="|".join(re.escape(v) for v in VARIANTS),
    train_len=r"\d+",
    seed=r"\d+",
    world_size=r"\d+",


def model_dir(wildcards, seed=None):
    """One model's training directory: variant and length from wildcards, seed from wildcards
    unless given."""
    seed = wildcards.seed if seed is None else seed
    return os.path.dirname(work_path("checkpoint", variant=wildcards.variant,
                                     train_len=wildcards.train_len, seed=seed))


def job_spec(wildcards):
    """What one trained model is: its variant, params, training length (a job's identity)."""
    return pipeline_config.job_spec(VARIANTS[wildcards.variant], int(wildcards.train_len))


def as_json(value):
    """A value as one JSON argument (quoted in the rule's shell command with {params.x:q})."""
    return json.dumps(value, sort_keys=True)


def train_cfg(wildcards):
    """longnet.train's TrainConfig for one model: the config's training section plus the job."""
    return pipeline_config.train_config(config, VARIANTS[wildcards.variant],
                                        int(wildcards.train_len), DEVICE, int(wildcards.seed))


def state_hash(wildcards):
    """The name of one model's state directory: the hash of its run identity
    (longnet.train.run_identity: not the memory-only and bookkeeping keys, so a new micro-batch
    size or checkpoint interval resumes) and the data section; the trainer also checks the
    corpus itself against every checkpoint it finds."""
    from longnet.train import run_identity
    return config_hash({**run_identity(train_cfg(wildcards)), "data": config["data"]})


# Every value a `shell:` command gets is quoted there ({params.x:q}; a list quotes each element),
# so the argument lists below are lists of words, never one string for the shell to split.
# plain python for one process; torchrun (DDP) for several, one per GPU or CPU slot
NPROC = config["training"]["nproc"]
TRAIN_LAUNCHER = [PYTHON] if NPROC == 1 else [
    PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(NPROC)]
# --seq-lens N... (N fixed for every P) or --tokens-per-rank T... (N = T x P), as the config gives
SEQUENCE_PARALLEL_LENGTHS = (
    ["--seq-lens", *map(str, config["distributed"]["seq_lens"])]
    if "seq_lens" in config["distributed"] else
    ["--tokens-per-rank", *map(str, config["distributed"]["tokens_per_rank"])])


def work_pattern(kind):
    """A rule's output pattern for per-job files of `kind`: pipeline_config.WORK_PATHS under the
    work directory, its braces left for Snakemake's wildcards (the one home of every such path)."""
    return f"{WORK}/{pipeline_config.WORK_PATHS[kind]}"


def work_path(kind, **wildcards):
    return pipeline_config.work_path(config, kind, **wildcards)


def trained_paths(kind_or_pattern, seeds=None):
    """Per-job files of `kind` (WORK_PATHS), or a pattern with {variant}, {train_len}, {seed},
    for every trained model (variant, training length, seed); seeds: only these."""
    pattern = (work_pattern(kind_or_pattern) if kind_or_pattern in pipeline_config.WORK_PATHS
               else kind_or_pattern)
    return [pattern.format(variant=v, train_len=L, seed=s) for v, L, s in TRAINED
            if seeds is None or s in seeds]


# passkey retrieval runs only where the configuration has an evaluation.passkey section
PASSKEY = "passkey" in config["evaluation"]

# the recall benchmark's variants by id, FLOP-matched knobs filled in (none without a recall section)
RECALL_VARIANTS = pipeline_config.recall_variants(config) if config.get("recall") else {}

wildcard_constraints:
    recall_variant="|".join(re.escape(v) for v in RECALL_VARIANTS) or "^$",

# the recall benchmark's learning rates: one number, or the sweep every variant runs (recall_lr)
RECALL_LRS = pipeline_config.recall_lrs(config) if config.get("recall") else []

# what every recall-benchmark job (rules recall, recall_lr, recall_reach) is given
RECALL_PARAMS = dict(recall=config.get("recall"),
                     spec=lambda w: RECALL_VARIANTS[w.recall_variant],
                     eval_seed=config["seed"], modules=config["extra_modules"], lrs=RECALL_LRS,
                     device=DEVICE)


def recall_paths():
    """Every recall job's CSV: one per (recall variant, seed)."""
    return [work_path("recall", recall_variant=v, seed=s) for v in RECALL_VARIANTS for s in SEEDS]


def recall_sweep_paths(variant=None):
    """The learning-rate sweep's CSVs (one per rate) of one recall variant, or of every one;
    none when recall.lr is one number."""
    if len(RECALL_LRS) < 2:
        return []
    return [work_path("recall_lr", recall_variant=v, lr_index=i)
            for v in ([variant] if variant else RECALL_VARIANTS)
            for i in range(len(RECALL_LRS))]


def recall_reach_paths():
    """Every recall variant's reachability CSV (recall_reach: placements its pattern connects)."""
    return [work_path("recall_reach", recall_variant=v) for v in RECALL_VARIANTS]


# ---- missing intermediates ------------------------------------------------------------------
# Snakemake reruns a job whose output is missing only when a job downstream must run, so a per-job
# CSV deleted, or moved aside by the aggregation's refusal (NAME.refused, see make_tables.py),
# would never be made again while the published tables exist. The aggregation's inputs include a
# stamp file, created empty with an mtime of 0 (on its own it never triggers anything) and
# rewritten here when any of those inputs is missing: the aggregation then reruns (an updated
# input: Snakemake compares a small input by its checksum, so new content, not only a new mtime),
# and with it the jobs that make what is missing. A dry run plans the same and puts the
# stamp's mtime back when it ends, so planning never changes what the next run does.

def _restore(path: Path, data: bytes, mtime_ns: int) -> None:
    path.write_bytes(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def stamp_missing_intermediates(stamp, inputs: dict, published) -> None:
    stamp = Path(stamp)
    if not stamp.exists():
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text("")
        os.utime(stamp, (0, 0))
    missing = [p for paths in inputs.values() for p in paths if not os.path.exists(p)]
    if missing and Path(published).exists():
        # new content, not only a new mtime: Snakemake compares small inputs by checksum
        before = (stamp.read_bytes(), stamp.stat().st_mtime_ns)
        stamp.write_text(f"{time.time_ns()} {len(missing)} missing, first {missing[0]}\n")
        if workflow.output_settings.dryrun:  # plan it, and leave no trace: put it back
            atexit.register(_restore, stamp, *before)
        print(f"{len(missing)} intermediate file(s) the tables are made from are missing (first: "
              f"{missing[0]}): their jobs and the tables run again", file=sys.stderr)


# ---- stale temporary files ------------------------------------------------------------------
# A run killed mid-write leaves longnet.io's temporary files (.NAME.XXXXXXXX.SUFFIX) behind. When
# a run starts (onstart: not for a dry run, nor inside a job), remove those under RESULTS and WORK,
# and nothing else, but only while this run holds the only Snakemake locks here: a live run's
# writes in progress look the same. (Snakemake refuses a second run whose files overlap ours, but
# not one with other targets in the same folders, such as `snakemake peers` beside the main run.)

def other_runs_may_be_writing() -> str | None:
    """Why the sweep must wait (another run's lock, or no lock of our own), or None."""
    own = {os.path.realpath(p) for p in getattr(workflow.persistence, "_lockfile", {}).values()}
    if not own:
        return "this run holds no lock (--nolock?)"
    lock_dir = Path(".snakemake") / "locks"
    others = [p for p in lock_dir.glob("*.lock") if os.path.realpath(p) not in own]
    return f"another run holds {others[0]}" if others else None


def sweep_stale_temporaries() -> None:
    from longnet.io import sweep_temporaries
    waiting = other_runs_may_be_writing()
    if waiting:
        print(f"Not removing stale temporary files: {waiting}", file=sys.stderr)
        return
    removed = set()
    for folder in dict.fromkeys((RESULTS, WORK)):  # WORK may lie inside RESULTS
        if Path(folder).is_dir():
            removed.update(sweep_temporaries(folder))
    for path in sorted(removed):
        print(f"Removed a stale temporary file (a killed write): {path}", file=sys.stderr)


onstart:
    sweep_stale_temporaries()
