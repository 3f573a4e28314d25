"""The pipeline's configuration, checked whole before any job runs (workflow/rules/common.smk).

    variants = check_config(config, local=True, dry_run=False)

Refuses, with a ConfigError naming the key path (`training.stpes`, `variants[2].params`), the bad
value and what is allowed:
- the schema (workflow/schemas/config.schema.yaml: types, ranges, unknown keys), whose defaults
  are filled in;
- every job's library configuration, built as the job will build it: longnet.train.TrainConfig,
  the model's ModelConfig and one of its layers, and each variant's params at every head count it
  runs with (the model's n_head for training and evaluation, profile.heads,
  attention_graph.heads);
- what ties sections together: lengths that must divide or fit one another, ranks that must split
  a batch, a corpus large enough for the evaluation lengths;
- where the jobs run on this machine (`local`): the environment the configuration needs (a data
  directory, tiktoken, datasets) and, unless it is a dry run, CUDA for `device: cuda`. A dry run
  or a cluster executor (whose nodes may have GPUs this machine lacks) leaves the CUDA check to
  the jobs, which refuse to start without it (see `require_device`).
"""
from __future__ import annotations

import copy
from collections import defaultdict
import importlib.util
import inspect
import math
import re
from dataclasses import fields
from pathlib import Path

import jsonschema
import yaml

from longnet.evaluate import context_prompts

SCHEMA = Path(__file__).parent / "schemas" / "config.schema.yaml"
CONFIG_DIR = Path(__file__).parent / "configs"
# TrainConfig fields each job sets from elsewhere in the configuration, and training keys that say
# how to launch a job rather than what to train
PER_JOB = ("attention", "attention_params", "seq_len", "seed", "device", "progress")
LAUNCH = ("nproc", "threads")


class ConfigError(ValueError):
    """A configuration refused: the key path, what is wrong, and what is allowed."""

    def __init__(self, key: str, problem: str, allowed=None):
        message = f"config key '{key}': {problem}"
        if allowed is not None:
            if isinstance(allowed, (list, tuple, set, frozenset)):
                allowed = ", ".join(map(str, allowed))
            message += f" (allowed: {allowed})"
        super().__init__(message)
        self.key = key


def key_path(parts) -> str:
    """("variants", 2, "params") -> "variants[2].params"."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


# ---- every per-job file, once ---------------------------------------------------------------
# Each per-job file's path under the work directory, with its wildcards in braces. The rules'
# outputs (work_pattern in common.smk), the aggregation's inputs and the load-time expectations
# (expected_inputs) are all made from this table.
WORK_PATHS = {
    "manifest": "data/manifest.json",
    "checkpoint": "train/{variant}/L{train_len}/s{seed}/checkpoint.pt",
    "metrics": "train/{variant}/L{train_len}/s{seed}/metrics.csv",
    "compute_curve": "train/{variant}/L{train_len}/s{seed}/compute_curve.csv",
    "perplexity": "eval/{variant}/L{train_len}/s{seed}/perplexity.csv",
    "context_window": "eval/{variant}/L{train_len}/s{seed}/context_window.csv",
    "passkey": "eval/{variant}/L{train_len}/s{seed}/passkey.csv",
    "profile": "profile/{variant}.csv",
    "attention_graph": "attention_graph/{variant}.csv",
    "distributed": "distributed/P{world_size}.csv",
    "projected": "distributed/projected.csv",
    "recall": "recall/{recall_variant}/s{seed}.csv",
    "recall_lr": "recall/{recall_variant}/lr{lr_index}.csv",
    "recall_reach": "recall/{recall_variant}/reach.csv",
}


def work_path(config: dict, kind: str, **wildcards) -> str:
    """One per-job file of `kind` (WORK_PATHS) under config's work directory."""
    return f"{config['work_dir']}/" + WORK_PATHS[kind].format(**wildcards)


# ---- overlays ---------------------------------------------------------------------------------

def merged(base: dict, over: dict) -> dict:
    """`over` on top of `base`: mappings merged key by key, anything else (lists included, so a
    `variants:` list is given whole) replaced."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(
            out.get(key), dict) else copy.deepcopy(value)
    return out


def resolve_extends(config: dict) -> dict:
    """A configuration with `extends: NAME.yaml` (a file in workflow/configs/, which extends
    nothing itself) is that file with this one's keys on top (`merged`): an overlay holds only
    what differs. Without the key, the configuration as it is."""
    name = config.get("extends")
    if name is None:
        return config
    allowed = sorted(p.name for p in CONFIG_DIR.glob("*.yaml"))
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-]+\.yaml", name) or \
            not (CONFIG_DIR / name).is_file():
        raise ConfigError("extends", f"{name!r} is not a configuration in workflow/configs/", allowed)
    base = yaml.safe_load((CONFIG_DIR / name).read_text()) or {}
    if "extends" in base:
        raise ConfigError("extends", f"{name} extends {base['extends']!r} itself: one level only",
                          [n for n in allowed if "extends" not in (yaml.safe_load(
                              (CONFIG_DIR / n).read_text()) or {})])
    return merged(base, {k: v for k, v in config.items() if k != "extends"})


def read_config(name_or_path) -> dict:
    """A shipped configuration by name (`cpu_full`) or a YAML file by path, overlays resolved."""
    path = Path(name_or_path)
    if path.suffix != ".yaml":
        path = CONFIG_DIR / f"{name_or_path}.yaml"
    return resolve_extends(yaml.safe_load(path.read_text()) or {})


# ---- the schema -------------------------------------------------------------------------------

def _validator_with_defaults():
    """A Draft 2020-12 validator that fills in each property's `default` as it validates."""
    base = jsonschema.Draft202012Validator
    check_properties = base.VALIDATORS["properties"]

    def properties(validator, props, instance, schema):
        if isinstance(instance, dict):
            for name, sub in props.items():
                if isinstance(sub, dict) and "default" in sub:
                    instance.setdefault(name, copy.deepcopy(sub["default"]))
        yield from check_properties(validator, props, instance, schema)

    return jsonschema.validators.extend(base, {"properties": properties})


def _schema_error(error) -> ConfigError:
    """One jsonschema error as a ConfigError at its key path."""
    path, schema = list(error.absolute_path), error.schema
    if error.validator == "additionalProperties":
        known = sorted(schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(known))
        return ConfigError(key_path(path + extra[:1]), "unknown key", known or None)
    if error.validator == "required":
        missing = re.match(r"'([^']+)'", error.message)
        name = missing[1] if missing else "?"
        return ConfigError(key_path(path + [name]), "required key is missing")
    if error.validator == "not":
        return ConfigError(key_path(path), "must not be given here: "
                           + schema.get("description", "set elsewhere"))
    if error.validator == "oneOf":
        return ConfigError(key_path(path), schema.get("description", error.message))
    if error.validator == "enum":
        return ConfigError(key_path(path), error.message, error.validator_value)
    return ConfigError(key_path(path) or "(top level)", error.message)


def check_finite(value, path=()) -> None:
    """Every float in the configuration is a finite number: NaN passes any minimum or maximum,
    and no key of the schema means anything by an infinity (YAML's .nan, .inf)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(key_path(path) or "(top level)", f"{value} is not a finite number",
                          "a finite number")
    if isinstance(value, dict):
        for key, item in value.items():
            check_finite(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_finite(item, (*path, i))


def check_schema(config: dict) -> None:
    """Finite numbers, then the schema, with defaults filled in; the first error (by
    jsonschema's relevance)."""
    check_finite(config)
    schema = yaml.safe_load(SCHEMA.read_text())
    validator = _validator_with_defaults()(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is not None:
        raise _schema_error(error)


# ---- variants ---------------------------------------------------------------------------------

def load_variant_registry(config):
    import baselines
    try:
        baselines.load_modules(config["extra_modules"])
    except ImportError as error:
        raise ConfigError("extra_modules", f"cannot import a module: {error}") from None
    return baselines


def check_builds(baselines, name, key, params, heads, where) -> None:
    """The registry builds variant `name` with these params at `heads` heads."""
    try:
        baselines.build(name, num_heads=heads, **params)
    except (TypeError, ValueError) as error:
        raise ConfigError(key, f"{error} (with {heads} heads, {where})") from None


def check_variants(config) -> dict:
    """Every variant: a registered name, params the registry accepts, a unique id."""
    baselines = load_variant_registry(config)
    available = baselines.available()
    variants = {}
    for i, variant in enumerate(config["variants"]):
        variant.setdefault("id", variant["name"])
        key = f"variants[{i}]"
        if variant["name"] not in available:
            raise ConfigError(f"{key}.name", f"unknown variant '{variant['name']}'", available)
        if variant["id"] in variants:
            raise ConfigError(f"{key}.id",
                              f"duplicate id '{variant['id']}' (give each entry a unique id)")
        if variant["profile"]:
            check_builds(baselines, variant["name"], f"{key}.params", variant["params"],
                         config["profile"]["heads"], "profile.heads")
        check_builds(baselines, variant["name"], f"{key}.params", variant["params"],
                     config["attention_graph"]["heads"], "attention_graph.heads")
        per_length = variant.setdefault("train_params", [{}] * len(variant["train_lens"]))
        if len(per_length) != len(variant["train_lens"]):
            raise ConfigError(f"{key}.train_params",
                              f"{len(per_length)} entries for {len(variant['train_lens'])} "
                              "train_lens: one params override per training length")
        for train_len in variant["train_lens"]:
            if config["training"]["tokens_per_step"] % train_len:
                raise ConfigError(f"{key}.train_lens",
                                  f"{train_len} does not divide training.tokens_per_step "
                                  f"({config['training']['tokens_per_step']}): tokens per step "
                                  "are held constant across lengths")
        variants[variant["id"]] = variant
    return variants


# ---- training: every job's TrainConfig and model ----------------------------------------------

def job_spec(variant: dict, train_len: int) -> dict:
    """What one trained model is: its variant, params, training length (a job's identity)."""
    override = variant["train_params"][variant["train_lens"].index(train_len)]
    return {"variant": variant["name"], "params": {**variant["params"], **override},
            "train_len": train_len, "id": variant["id"]}


def train_config(config: dict, variant: dict, train_len: int, device: str, seed: int) -> dict:
    """longnet.train's TrainConfig for one model: the config's training section plus the job
    (seed: one of the config's training seeds, which sets initialisation and data order)."""
    spec = job_spec(variant, train_len)
    cfg = {key: value for key, value in config["training"].items() if key not in LAUNCH}
    cfg.update(attention=spec["variant"], attention_params=spec["params"],
               seq_len=spec["train_len"], seed=seed, device=device, progress=False)
    if variant.get("model_overrides"):  # this entry's own model size (the model-size study)
        cfg["model_overrides"] = {**cfg.get("model_overrides", {}), **variant["model_overrides"]}
    return cfg


def model_params(config: dict, variants: dict) -> dict:
    """Parameters of each variant entry's trained model (built on the meta device: no memory)."""
    import torch

    from longnet.model import LanguageModel
    from longnet.train import TrainConfig
    counts = {}
    for vid, variant in variants.items():
        if not variant["train_lens"]:
            continue
        cfg = train_config(config, variant, variant["train_lens"][0], "cpu", config["seeds"][0])
        model_cfg = TrainConfig.from_dict(cfg).model_config(vocab_size(config["data"]["tokenizer"]))
        with torch.device("meta"):
            counts[vid] = LanguageModel(model_cfg).num_params()
    return counts


def _training_key(config, message: str, variant_key: str, params_key: str) -> str:
    """The key path of the field a TrainConfig or ModelConfig error names."""
    training = config["training"]
    field = re.match(r"(?:train|model) (\w+)=", message)
    field = field[1] if field else None
    if message.startswith("unknown model field"):
        return "training.model_overrides"
    if field in training.get("model_overrides", {}):
        return f"training.model_overrides.{field}"
    if field in training:
        return f"training.{field}"
    if field in ("attention", "attention_params"):
        return params_key
    if field == "seq_len":
        return f"{variant_key}.train_lens"
    if field == "size" or field is not None:
        return "training.model"
    return "training"


def vocab_size(tokenizer: str) -> int:
    """The vocabulary of a tokenizer without loading it (longnet.data.VOCAB_SIZES)."""
    from longnet.data import VOCAB_SIZES
    return VOCAB_SIZES[tokenizer]


def check_offsets_covered(name: str, params: dict, heads: int, seq_len: int, key: str,
                          allow_key: str, job: str) -> None:
    """A dilated schedule trained with fewer heads than a branch's rate leaves that branch's rows
    at offsets heads..r-1 of every segment out of every head (head h uses offset h mod r): they
    are never a query or a key of that branch. Refused unless the variant entry says
    allow_uncovered_offsets: true."""
    if name != "longnet":
        return
    from longnet.variants import build
    schedule = build("longnet", num_heads=heads, **params).schedule_at(seq_len)  # as trained
    uncovered = schedule.uncovered_fraction(heads, seq_len)
    if any(uncovered):
        per_branch = ", ".join(f"(w={w}, r={r}): {u:.0%}" for w, r, u in zip(
            schedule.segment_lengths, schedule.dilation_rates, uncovered) if u)
        raise ConfigError(key, f"the model's {heads} heads leave offsets of the LongNet schedule "
                          f"uncovered at train_len {seq_len} (job {job}); rows never attended "
                          f"by any head, per branch: {per_branch}. Use heads >= the largest "
                          f"rate ({max(schedule.dilation_rates)}), rates <= heads, or set "
                          f"{allow_key}: true to train it anyway")


def check_training(config, variants: dict, device: str) -> None:
    """Every training job's TrainConfig, model and attention, as the job builds them."""
    import baselines
    from longnet.model import Block
    from longnet.train import TrainConfig

    training = config["training"]
    allowed = sorted({f.name for f in fields(TrainConfig)} - set(PER_JOB) | set(LAUNCH))
    for key in training:
        if key not in allowed:
            raise ConfigError(f"training.{key}", "unknown key (a TrainConfig field)", allowed)
    nproc = training["nproc"]
    for i, variant in enumerate(config["variants"]):
        variant_key = f"variants[{i}]"
        for j, train_len in enumerate(variant["train_lens"]):
            job = f"{variant['id']} at train_len {train_len}"
            cfg = train_config(config, variant, train_len, device, config["seeds"][0])
            params_key = (f"{variant_key}.train_params[{j}]" if variant["train_params"][j]
                          else f"{variant_key}.params")
            try:
                tc = TrainConfig.from_dict(cfg)
                model_cfg = tc.model_config(vocab_size(config["data"]["tokenizer"]))
            except (TypeError, ValueError) as error:
                raise ConfigError(_training_key(config, str(error), variant_key, params_key),
                                  f"{error} (job {job})") from None
            if tc.warmup > tc.steps:
                raise ConfigError("training.warmup", f"{tc.warmup} is longer than training.steps "
                                  f"({tc.steps}): the run would never reach its peak learning "
                                  "rate", f"at most steps ({tc.steps})")
            check_builds(baselines, model_cfg.attention, params_key, model_cfg.attention_params,
                         model_cfg.n_head, f"the model's n_head, job {job}")
            if not variant["allow_uncovered_offsets"]:
                check_offsets_covered(model_cfg.attention, model_cfg.attention_params,
                                      model_cfg.n_head, train_len, params_key,
                                      f"{variant_key}.allow_uncovered_offsets", job)
            try:
                Block(model_cfg)  # one layer of the model: projections, positions, attention
            except (TypeError, ValueError) as error:
                raise ConfigError("training.model_overrides", f"{error} (job {job})") from None
            sequences = tc.tokens_per_step // train_len
            if sequences % nproc:
                raise ConfigError("training.nproc", f"{nproc} processes cannot split the "
                                  f"{sequences} sequences of a step of job {job} "
                                  f"(training.tokens_per_step / train_len)",
                                  f"a divisor of {sequences}")


# ---- the recall benchmark ---------------------------------------------------------------------

def recall_lrs(config: dict) -> list[float]:
    """recall.lr as a list: one fixed rate, or the rates every variant's sweep tries."""
    lr = config["recall"]["lr"]
    return [float(x) for x in lr] if isinstance(lr, list) else [float(lr)]


def recall_sweep_steps(config: dict) -> int | None:
    """Steps of each learning-rate sweep run (recall.lr_sweep_steps; default recall.steps)."""
    recall = config.get("recall")
    return recall.get("lr_sweep_steps", recall["steps"]) if recall else None


def flop_matched(baselines, name: str, params: dict, knob: str, target: float, seq_len: int,
                 heads: int, head_dim: int, key: str, tolerance: float = 0.1) -> int:
    """The value 1..seq_len of `knob` whose variant's causal attention FLOPs at seq_len are
    nearest `target` (ties: the smaller value); refused when even that one is more than
    `tolerance` (relative) away."""
    best = None
    for value in range(1, seq_len + 1):
        try:
            attend = baselines.build(name, num_heads=heads, **{**params, knob: value})
        except (TypeError, ValueError):
            continue
        flops = attend.flops(seq_len, head_dim, causal=True)
        if best is None or abs(flops - target) < best[0]:
            best = (abs(flops - target), value, flops)
    if best is None:
        raise ConfigError(key, f"no value 1..{seq_len} of {knob!r} builds variant {name!r}")
    if best[0] > tolerance * target:
        raise ConfigError(key, f"no value of {knob!r} brings {name!r} within "
                          f"{tolerance:.0%} of LongNet's attention FLOPs at seq_len "
                          f"{seq_len} (nearest: {knob}={best[1]} at {best[2] / target:.2f}x); "
                          "change the variant's other params, or set flop_tolerance (and say "
                          "why: recall.csv's flops_ratio shows it)")
    return best[1]


def recall_variants(config: dict) -> dict:
    """The recall benchmark's variants by id, params complete: each `flop_match` knob set so the
    variant's attention FLOPs at recall.seq_len equal (as nearly as an integer allows) those of the
    recall's longnet entry. Refused (ConfigError) as check_config refuses anything else."""
    recall = config["recall"]
    baselines = load_variant_registry(config)
    model = recall["model"]
    heads = model.get("n_head", 12)
    head_dim = model["d_model"] // heads
    seq_len = recall["seq_len"]
    entries = {}
    for i, entry in enumerate(recall["variants"]):
        key = f"recall.variants[{i}]"
        vid = entry.get("id", entry["name"])
        if entry["name"] not in baselines.available():
            raise ConfigError(f"{key}.name", f"unknown variant '{entry['name']}'",
                              baselines.available())
        if vid in entries:
            raise ConfigError(f"{key}.id", f"duplicate id '{vid}' (give each entry a unique id)")
        entries[vid] = dict(id=vid, name=entry["name"], params=dict(entry.get("params", {})),
                            flop_match=entry.get("flop_match"), key=key,
                            tolerance=entry.get("flop_tolerance", 0.1))
    longnets = [e for e in entries.values() if e["name"] == "longnet"]
    if any(e["flop_match"] for e in entries.values()) and len(longnets) != 1:
        raise ConfigError("recall.variants", "flop_match needs exactly one longnet entry to "
                          f"match, found {len(longnets)}")
    if longnets:
        check_builds(baselines, "longnet", f"{longnets[0]['key']}.params",
                     longnets[0]["params"], heads, "recall.model.n_head")
        target = baselines.build("longnet", num_heads=heads, **longnets[0]["params"]).flops(
            seq_len, head_dim, causal=True)
        if not recall.get("allow_uncovered_offsets"):
            check_offsets_covered("longnet", longnets[0]["params"], heads, seq_len,
                                  f"{longnets[0]['key']}.params",
                                  "recall.allow_uncovered_offsets", "recall")
    for entry in entries.values():
        if entry["flop_match"]:
            entry["params"][entry["flop_match"]] = flop_matched(
                baselines, entry["name"], entry["params"], entry["flop_match"], target, seq_len,
                heads, head_dim, f"{entry['key']}.flop_match", entry["tolerance"])
        check_builds(baselines, entry["name"], f"{entry['key']}.params", entry["params"], heads,
                     "recall.model.n_head")
        flops = baselines.build(entry["name"], num_heads=heads, **entry["params"]).flops(
            seq_len, head_dim, causal=True)
        entry["flops_ratio"] = flops / target if longnets else math.nan  # against LongNet's
    return {vid: {k: v for k, v in e.items()
                  if k in ("id", "name", "params", "flop_match", "flops_ratio")}
            for vid, e in entries.items()}


def check_recall(config) -> None:
    """The recall section: a task that fits, distances it can place, a model and variants that
    build (recall_variants)."""
    recall = config.get("recall")
    if not recall:
        return
    from longnet.model import ModelConfig
    from longnet.recall import RecallTask
    try:
        task = RecallTask(seq_len=recall["seq_len"], **recall["task"])
    except (TypeError, ValueError) as error:
        raise ConfigError("recall.task", str(error)) from None
    for d in recall["distances"]:
        if not 2 <= d <= task.max_distance():
            raise ConfigError("recall.distances", f"{d} cannot be placed in seq_len "
                              f"{task.seq_len}", f"2 .. {task.max_distance()}")
    for steps_key in ("steps", "lr_sweep_steps"):
        steps = recall.get(steps_key)
        if steps is not None and recall["warmup"] > steps:
            raise ConfigError("recall.warmup", f"{recall['warmup']} is longer than recall."
                              f"{steps_key} ({steps}): the run would never reach its peak "
                              "learning rate", f"at most {steps}")
    if recall["batch"] % 4:
        raise ConfigError("recall.batch", f"{recall['batch']} is not a multiple of 4 (a step "
                          "holds 4 groups of one distance each)", "a multiple of 4")
    try:
        ModelConfig(vocab_size=task.vocab_size, max_seq_len=task.seq_len, **recall["model"])
    except (TypeError, ValueError) as error:
        raise ConfigError("recall.model", str(error)) from None
    recall_variants(config)


# ---- evaluation, data, distributed ------------------------------------------------------------

def check_evaluation(config) -> None:
    evaluation = config["evaluation"]
    window = evaluation["context_window"]
    for variant in config["variants"]:
        for n in variant["train_lens"]:
            if not context_prompts(window["prompt_lens"], window["n_final"], n):
                raise ConfigError("evaluation.context_window.prompt_lens", f"no prompt length "
                                  f"fits {variant['id']}'s training length {n} with n_final "
                                  f"{window['n_final']} scored tokens (prompt + n_final <= "
                                  "train_len)", f"include a length <= {n - window['n_final']}")
    for n in evaluation["eval_lens"]:
        if n > evaluation["max_tokens"]:
            raise ConfigError("evaluation.eval_lens", f"{n} is longer than evaluation.max_tokens "
                              f"({evaluation['max_tokens']}): not one window would be scored",
                              f"lengths <= {evaluation['max_tokens']}")
    if config["data"]["tokenizer"] == "byte" and "passkey" in evaluation:  # cl100k_base: the job
        from longnet.data import ByteTokenizer
        from longnet.evaluate import passkey_prompt
        for n in evaluation["passkey"]["context_lens"]:
            try:
                passkey_prompt(ByteTokenizer(), n, 0.5, "12345")  # keys have 5 digits
            except ValueError as error:
                raise ConfigError("evaluation.passkey.context_lens", str(error)) from None


def tokens_needed(config) -> dict[str, int]:
    """The fewest tokens each split must hold for every job to fit a window in it."""
    evaluation, window = config["evaluation"], config["evaluation"]["context_window"]
    train_lens = [n for v in config["variants"] for n in v["train_lens"]] or [0]
    test = max(max(evaluation["eval_lens"]), max(window["prompt_lens"]) + window["n_final"])
    need = {"train": max(train_lens) + 2, "test": test + 1}
    eval_split = config["training"].get("eval_split", "test")
    need[eval_split] = max(need.get(eval_split, 0), max(train_lens) + 1)
    return need


def check_data(config) -> None:
    """data.max_bytes large enough: a split gets its share of the bytes, and a token is at least a
    byte, so a split holds at most about share x max_bytes tokens."""
    from longnet.data import SPLITS, prepare_corpus

    data = config["data"]
    if data["source"] in ("dir", "hf") and not data["path"]:
        raise ConfigError("data.path", "required when data.source is dir or hf")
    if data["max_bytes"] is None:
        return
    shares = dict(zip(SPLITS, inspect.signature(prepare_corpus).parameters["fractions"].default))
    for split, tokens in tokens_needed(config).items():
        if tokens > shares[split] * data["max_bytes"]:
            smallest = int(-(-tokens // shares[split]))
            raise ConfigError("data.max_bytes", f"{data['max_bytes']} bytes give the {split} split "
                              f"about {shares[split]:.0%} of them, fewer than the {tokens} tokens "
                              "its longest window needs (evaluation lengths, training lengths)",
                              f"at least {smallest}, or null for the whole corpus")


def check_branches(config, section) -> None:
    """A dilated-attention schedule in config[section]: one dilation rate per segment length,
    segments increasing and rates not decreasing (the paper's geometric schedule, which
    `extend_schedule` continues from its widest branch)."""
    segments, rates = config[section]["segment_lengths"], config[section]["dilation_rates"]
    if len(segments) != len(rates):
        raise ConfigError(f"{section}.dilation_rates", f"{len(rates)} rates for "
                          f"{len(segments)} segment lengths: one rate per segment")
    if any(a >= b for a, b in zip(segments, segments[1:])):
        raise ConfigError(f"{section}.segment_lengths", f"{segments} is not increasing",
                          "segment lengths in increasing order, each once")
    if any(a > b for a, b in zip(rates, rates[1:])):
        raise ConfigError(f"{section}.dilation_rates", f"{rates} decreases",
                          "rates in non-decreasing order, one per segment length")


def check_distributed(config) -> None:
    dist = config["distributed"]
    check_branches(config, "distributed")
    if 1 not in dist["world_sizes"]:
        raise ConfigError("distributed.world_sizes", "must include 1: the cost model is "
                          "calibrated on the single-rank runs")
    for n in dist.get("seq_lens", []):
        for p in dist["world_sizes"]:
            if n % p:
                raise ConfigError("distributed.seq_lens", f"{n} is not divisible by world size {p}",
                                  "multiples of every distributed.world_sizes entry")
    check_branches(config, "cost_model")


# ---- the machine ------------------------------------------------------------------------------

def cuda_problem(device: str) -> str | None:
    """Why `device` cannot run here (None when it can)."""
    import torch
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        return (f"device {device!r} needs CUDA, and this machine has none "
                f"(torch {torch.__version__}, torch.cuda.is_available() is False)")
    return None


def require_device(device: str) -> None:
    """At a job's start: refuse a device this machine lacks, with the reason (jobs call this)."""
    problem = cuda_problem(device)
    if problem:
        raise SystemExit(f"{problem}: run this job on a machine with a GPU, or set "
                         "`device: cpu` in the configuration")


def check_environment(config, dry_run: bool) -> None:
    """What the jobs need from this machine, when they run on it."""
    data = config["data"]
    if data["tokenizer"] == "cl100k_base" and importlib.util.find_spec("tiktoken") is None:
        raise ConfigError("data.tokenizer", "cl100k_base needs tiktoken, which is not installed "
                          "(pip install '.[data]')", ["byte", "cl100k_base with tiktoken"])
    if data["source"] == "dir" and not Path(data["path"]).is_dir():
        raise ConfigError("data.path", f"{data['path']!r} is not a directory "
                          f"(relative paths start at {Path.cwd()})")
    if data["source"] == "hf" and importlib.util.find_spec("datasets") is None:
        raise ConfigError("data.source", "hf needs the datasets package, which is not installed "
                          "(pip install '.[data]')", ["stdlib", "dir", "hf with datasets"])
    if not dry_run and config["device"] == "cuda":
        problem = cuda_problem("cuda")
        if problem:
            raise ConfigError("device", f"'cuda': {problem}",
                              ["cpu", "auto", "cuda on a machine or cluster with GPUs"])


def resolve_device(config) -> str:
    """"auto" resolves where the workflow is parsed: name cuda explicitly for a cluster."""
    import torch
    return "cuda" if config["device"] == "cuda" or (
        config["device"] == "auto" and torch.cuda.is_available()) else "cpu"


def check_config(config: dict, *, local: bool = True, dry_run: bool = False) -> dict:
    """Validate (and fill defaults into) `config`; the variants by id. ConfigError otherwise.

    local: the jobs run on this machine (not a cluster executor), so its environment is checked;
    dry_run: nothing runs now, so the CUDA check is left to the jobs."""
    check_schema(config)
    from config_paths import check_paths; check_paths(config)  # workflow/config_paths.py
    variants = check_variants(config)
    check_training(config, variants, resolve_device(config))
    check_evaluation(config)
    check_data(config)
    check_distributed(config)
    check_recall(config)
    if local:
        check_environment(config, dry_run)
    return variants


def expected_inputs(config: dict, variants: dict, recall_ids=()) -> dict:
    """What each per-job CSV the tables read must hold (input kind -> path -> column -> the
    values that must all occur, or the one value every row has; analysis.tables.read_checked).
    recall_ids: the recall benchmark's variant ids (recall_variants, computed once at load)."""
    evaluation = config["evaluation"]

    def path(kind, **wildcards):
        return work_path(config, kind, **wildcards)
    profile, dist = config["profile"], config["distributed"]
    from longnet.train import TrainConfig, logged_steps
    expect = defaultdict(dict)  # kinds with no input are filled in by analysis.tables
    for vid, variant in variants.items():
        expect["attention_graph"][path("attention_graph", variant=vid)] = {"variant": vid}
        if variant["profile"]:
            expect["profile"][path("profile", variant=vid)] = {
                "variant": vid, "seq_len": profile["seq_lens"], "mode": profile["modes"]}
        for n, seed in ((n, s) for n in variant["train_lens"] for s in config["seeds"]):
            model = {"variant": vid, "train_len": n, "seed": seed}
            expect["perplexity"][path("perplexity", **model)] = {
                **model, "eval_len": evaluation["eval_lens"]}
            window = evaluation["context_window"]
            expect["context_window"][path("context_window", **model)] = {
                **model, "prompt_len": context_prompts(window["prompt_lens"], window["n_final"], n)}
            if "passkey" in evaluation:
                expect["passkey"][path("passkey", **model)] = {
                    **model, "context_len": evaluation["passkey"]["context_lens"],
                    "depth": evaluation["passkey"]["depths"]}
            steps = logged_steps(TrainConfig.from_dict(
                train_config(config, variant, n, "cpu", seed)))
            for kind in ("compute_curve", "metrics"):  # every row once: none dropped or repeated
                expect[kind][path(kind, **model)] = {
                    "step": {"steps": steps[kind]}}
    for p in dist["world_sizes"]:
        lengths = dist.get("seq_lens") or [t * p for t in dist["tokens_per_rank"]]
        expect["distributed"][path("distributed", world_size=p)] = {"world_size": p,
                                                                  "seq_len": lengths}
    expect["projected"][path("projected")] = {}
    if config.get("recall"):
        for vid in recall_ids:
            expect["recall_reach"][path("recall_reach", recall_variant=vid)] = {
                "variant": vid, "distance": config["recall"]["distances"]}
            for seed in config["seeds"]:
                expect["recall"][path("recall", recall_variant=vid, seed=seed)] = {
                    "variant": vid, "seed": seed, "distance": config["recall"]["distances"]}
            lrs = recall_lrs(config)
            for i, lr in enumerate(lrs if len(lrs) > 1 else []):
                expect["recall_lr"][path("recall_lr", recall_variant=vid, lr_index=i)] = {
                    "variant": vid, "lr": lr, "distance": config["recall"]["distances"]}
    return dict(expect)
