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
            raise config_error(f"{key}.id", f"duplicate id '{variant['id']}' (give each a unique id)")
        try:
            baselines.build(variant["name"], num_heads=config["profile"]["heads"], **variant["params"])
        except (TypeError, ValueError) as error:
            raise config_error(f"{key}.params", str(error))
        for train_len in variant["train_lens"]:
            if config["training"]["tokens_per_step"] % train_len:
                raise config_error(f"{key}.train_lens",
                                   f"{train_len} does not divide training.tokens_per_step "
                                   f"({config['training']['tokens_per_step']}): tokens per step "
                                   "are held constant across lengths")
        variants[variant["id"]] = variant
    return variants


def check_distributed():
    dist = config["distributed"]
    if len(dist["segment_lengths"]) != len(dist["dilation_rates"]):
        raise config_error("distributed.dilation_rates",
                           f"{len(dist['dilation_rates'])} rates for "
                           f"{len(dist['segment_lengths'])} segment lengths: one rate per segment")
    for n in dist.get("seq_lens", []):
        for p in dist["world_sizes"]:
            if n % p:
                raise config_error("distributed.seq_lens",
                                   f"{n} is not divisible by world size {p}",
                                   "multiples of every distributed.world_sizes entry")
    link = config["cost_model"]["link"]
    if link not in config["cost_model"]["links"]:
        raise config_error("cost_model.link", f"unknown link '{link}'",
                           sorted(config["cost_model"]["links"]))
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
    variant = VARIANTS[wildcards.variant]
    return {"variant": variant["name"], "params": variant["params"],
            "train_len": int(wildcards.train_len), "id": variant["id"]}


def gpus(count):
    """GPUs a job asks the scheduler for: `count` on a GPU run, none on CPU."""
    return count if DEVICE == "cuda" else 0


def as_arg(value):
    """A JSON value quoted for the shell (for rules launched through torchrun)."""
    return shlex.quote(json.dumps(value, sort_keys=True))
