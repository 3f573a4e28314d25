# Configuration loading, validation and the names every stage uses.
#
# Everything that can be refused is refused here, at load time, before any job runs: the schema
# (types, allowed values) and then the checks a schema cannot express (variant params that the
# registry rejects, unequal segment/dilation lists, lengths not divisible by the world size).
import json
import re
import shlex
import sys

import torch

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from longnet.provenance import config_hash

validate(config, "../schemas/config.schema.yaml")

RESULTS = config["results_dir"]
WORK = config["work_dir"]
LOGS = f"{RESULTS}/logs"
TABLE_DIR = f"{RESULTS}/tables"
FIGURE_DIR = f"{RESULTS}/figures"
# "auto" resolves where the workflow is parsed: name cuda explicitly when submitting to a cluster
DEVICE = "cuda" if config["device"] == "cuda" or (
    config["device"] == "auto" and torch.cuda.is_available()) else "cpu"
PYTHON = sys.executable  # the interpreter running snakemake has the project installed
ENV = "../../environment.yml"  # the project's conda environment, used with --use-conda
# a job that asks for this many threads gets every core of the run (Snakemake caps threads at
# --cores), so it runs alone and its timings are not shared with another job
ALL_CORES = 1024


def config_error(key, problem, allowed=None):
    message = f"config key '{key}': {problem}"
    if allowed is not None:
        message += f" (allowed: {allowed})"
    return WorkflowError(message)


def load_variant_registry():
    import baselines
    try:
        baselines.load_modules(config["extra_modules"])
    except ImportError as error:
        raise config_error("extra_modules", f"cannot import a module: {error}")
    return baselines


def check_builds(baselines, variant, key, params):
    """The registry accepts these params for this variant (its own error otherwise)."""
    try:
        baselines.build(variant["name"], num_heads=config["profile"]["heads"], **params)
    except (TypeError, ValueError) as error:
        raise config_error(key, str(error))


def check_variants():
    """Every variant: a registered name, params the registry accepts, a unique id."""
    baselines = load_variant_registry()
    available = baselines.available()
    variants = {}
    for i, variant in enumerate(config["variants"]):
        variant.setdefault("id", variant["name"])
        key = f"variants[{i}]"
        if variant["name"] not in available:
            raise config_error(f"{key}.name", f"unknown variant '{variant['name']}'", available)
        if variant["id"] in variants:
            raise config_error(f"{key}.id",
                               f"duplicate id '{variant['id']}' (give each entry a unique id)")
        check_builds(baselines, variant, f"{key}.params", variant["params"])
        per_length = variant.setdefault("train_params", [{}] * len(variant["train_lens"]))
        if len(per_length) != len(variant["train_lens"]):
            raise config_error(f"{key}.train_params",
                               f"{len(per_length)} entries for {len(variant['train_lens'])} "
                               "train_lens: one params override per training length")
        for train_len, override in zip(variant["train_lens"], per_length):
            check_builds(baselines, variant, f"{key}.train_params",
                         {**variant["params"], **override})
            if config["training"]["tokens_per_step"] % train_len:
                raise config_error(f"{key}.train_lens",
                                   f"{train_len} does not divide training.tokens_per_step "
                                   f"({config['training']['tokens_per_step']}): tokens per step "
                                   "are held constant across lengths")
        variants[variant["id"]] = variant
    return variants


def check_branches(section):
    """A dilated-attention schedule in config[section]: one dilation rate per segment length."""
    segments, rates = config[section]["segment_lengths"], config[section]["dilation_rates"]
    if len(segments) != len(rates):
        raise config_error(f"{section}.dilation_rates", f"{len(rates)} rates for "
                           f"{len(segments)} segment lengths: one rate per segment")


def check_distributed():
    dist = config["distributed"]
    check_branches("distributed")
    if 1 not in dist["world_sizes"]:
        raise config_error("distributed.world_sizes", "must include 1: the cost model is "
                           "calibrated on the single-rank runs")
    for n in dist.get("seq_lens", []):
        for p in dist["world_sizes"]:
            if n % p:
                raise config_error("distributed.seq_lens",
                                   f"{n} is not divisible by world size {p}",
                                   "multiples of every distributed.world_sizes entry")
    check_branches("cost_model")
    if config["data"]["source"] in ("dir", "hf") and not config["data"]["path"]:
        raise config_error("data.path", "required when data.source is dir or hf")


VARIANTS = check_variants()
check_distributed()
TRAINED = [(vid, L) for vid, v in VARIANTS.items() for L in v["train_lens"]]
PROFILED = [vid for vid, v in VARIANTS.items() if v["profile"]]

wildcard_constraints:
    variant="|".join(re.escape(v) for v in VARIANTS),
    train_len=r"\d+",
    world_size=r"\d+",


def model_dir(wildcards):
    return f"{WORK}/train/{wildcards.variant}/L{wildcards.train_len}"


def job_spec(wildcards):
    """What one trained model is: its variant, params, training length (a job's identity)."""
    variant, train_len = VARIANTS[wildcards.variant], int(wildcards.train_len)
    override = variant["train_params"][variant["train_lens"].index(train_len)]
    return {"variant": variant["name"], "params": {**variant["params"], **override},
            "train_len": train_len, "id": variant["id"]}


def gpus(count):
    """GPUs a job asks the scheduler for: `count` on a GPU run, none on CPU."""
    return count if DEVICE == "cuda" else 0


def as_arg(value):
    """A JSON value quoted for the shell (for rules launched through torchrun)."""
    return shlex.quote(json.dumps(value, sort_keys=True))


def train_cfg(wildcards):
    """longnet.train's TrainConfig for one model: the config's training section plus the job."""
    spec = job_spec(wildcards)
    cfg = {key: value for key, value in config["training"].items()
           if key not in ("nproc", "threads")}  # how to launch, not what to train
    cfg.update(attention=spec["variant"], attention_params=spec["params"],
               seq_len=spec["train_len"], seed=config["seed"], device=DEVICE, progress=False)
    return cfg


# plain python for one process; torchrun (DDP) for several, one per GPU or CPU slot
NPROC = config["training"]["nproc"]
TRAIN_LAUNCHER = PYTHON if NPROC == 1 else (
    f"{PYTHON} -m torch.distributed.run --standalone --nproc-per-node {NPROC}")
# --seq-lens N... (N fixed for every P) or --tokens-per-rank T... (N = T x P), as the config gives
SEQUENCE_PARALLEL_LENGTHS = (
    "--seq-lens " + " ".join(map(str, config["distributed"]["seq_lens"]))
    if "seq_lens" in config["distributed"] else
    "--tokens-per-rank " + " ".join(map(str, config["distributed"]["tokens_per_rank"])))


def trained_paths(path):
    """`path` for every trained model (variant, training length)."""
    return [path.format(WORK=WORK, variant=v, train_len=L) for v, L in TRAINED]
