"""What each job asks a scheduler for, derived from what the job will do.

Every rule's threads, memory (mem_mb), wall time (runtime, minutes) and GPUs (gpu) come from the
configuration: model size, sequence lengths, tokens, steps, world size, device. The estimates are
deliberately generous upper bounds (a job refused for asking too much is visible at submission; a
job killed for asking too little is not, until it dies); they are first-order models, not
measurements:

- host memory of a process: BASE_MB (interpreter, torch, CUDA context) plus, for training, 16 bytes a
  parameter (fp32 weights, gradients, two Adam moments) and the activations of one micro-batch
  (ACT_BYTES bytes per token, per layer, per model dimension); for evaluation and generation, the
  weights plus the activations of the longest evaluated sequence; for the attention benchmarks,
  q/k/v/output and their gradients at the largest length; on cuda those live on the GPU and the
  host holds 2 x BASE_MB plus a copy of the weights. A torchrun job holds `nproc` processes.
- wall time: the job's FLOPs (6 x parameters x tokens to train, 2 x to evaluate) at EFFICIENCY of
  the device's nominal speed (training.peak_flops, else NOMINAL_FLOPS), plus START_MIN, times
  RUNTIME_MARGIN; benchmark sweeps: cells x the per-cell time cap.
- threads: what the job's processes start (nproc x threads for training, P x threads_per_rank for
  sequence_parallel on a cluster); jobs that want a machine to themselves (sequence_parallel in a
  local run, profile and decode benchmarks with `threads: null`) get every core in a local run and
  SWEEP_THREADS on a cluster.
- GPUs: only when the configuration's device is cuda: nproc for training, P for
  sequence_parallel, one for the other GPU jobs, none for CPU-only jobs.
- recall (the recall benchmark's training jobs, rules recall and recall_lr): the recall model's
  weights, optimizer and one batch's activations and logits; 6 x weights x tokens of its steps.
- any other rule (attention_graph, and a rule added later that has no estimate here): SMALL_JOB,
  a one-core CPU job of 2 x BASE_MB for up to START_MIN + 10 minutes (before the margin). A new rule
  that needs more gets a branch in `estimate` (its name, what its job holds and does) and, in its
  rule, `threads: job_threads("name")` and `resources: **job_resources("name")`.

- GPU memory of a training process on cuda (train_gpu_bytes): weights and optimizer, one
  micro-batch's activations and the loss's logits; checked at load against the site's
  `gpu_mem_gb` (check_gpu_memory), so a job that cannot fit is refused before it is submitted.

The one place a site scales or caps all of it: workflow/site_resources.yaml (or the file given by
`--config site_resources=PATH`): multiply memory and time, and cap memory, time, threads and GPUs
per job at what the site's nodes and partitions grant. `resources_for` applies it last.
"""
from __future__ import annotations

import math
from pathlib import Path

import yaml

BASE_MB = 1500           # one Python process with torch imported (CUDA context included)
ACT_BYTES = 64           # bytes of training activations per token, layer and model dimension (fp32, generous)
EFFICIENCY = 0.2         # fraction of the nominal FLOP/s a job reaches
NOMINAL_FLOPS = {"cpu": 5e10, "cuda": 1e14}
START_MIN = 5            # minutes to start a job: scheduling, imports, reading the corpus
RUNTIME_MARGIN = 3       # a job may run this many times its estimate before SLURM stops it
SWEEP_THREADS = 8        # cores for a benchmark job that wants a node to itself, on a cluster
ALL_CORES = 1024         # a local job asking this many threads gets every core (Snakemake caps at --cores)
SMALL_JOB = {"threads": 1, "mem_mb": 2 * BASE_MB, "runtime": START_MIN + 10, "gpu": 0}  # any other rule
LAUNCHED = {  # rules whose jobs start exactly what they ask for (torchrun), and what sets it
    "train": "training.nproc / training.threads",
    "sequence_parallel": "distributed.world_sizes / distributed.threads_per_rank"}
SITE_KEYS = {"mem_scale": 1.0, "runtime_scale": 1.0, "max_mem_mb": None, "max_runtime": None,
             "max_threads": None, "max_gpus": None, "gpu_mem_gb": None}
GPU_BASE_BYTES = 2 ** 30  # CUDA context, cuBLAS workspace, the allocator's slack
LOGIT_BYTES = 16         # per logit of the loss: bf16 logits, their float copy, the saved
                         # log-softmax, its float gradient and the bf16 gradient
DEFAULT_SITE_FILE = Path(__file__).resolve().parent / "site_resources.yaml"


def read_site(path=None) -> dict:
    """The site's scales and caps (SITE_KEYS), from `path` or workflow/site_resources.yaml."""
    path = Path(path) if path else DEFAULT_SITE_FILE
    if not path.exists():
        raise ValueError(f"site_resources: {path} does not exist")
    values = yaml.safe_load(path.read_text()) or {}
    unknown = set(values) - set(SITE_KEYS)
    if unknown:
        raise ValueError(f"site_resources ({path}): unknown keys {sorted(unknown)}; allowed: {sorted(SITE_KEYS)}")
    site = {**SITE_KEYS, **values}
    for key, value in site.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
            raise ValueError(f"site_resources ({path}): {key} must be a positive number or null, got {value!r}")
    return site


def model_shape(config) -> dict:
    """n_layer, d_model, vocab of the configured model (named size plus overrides)."""
    from longnet.data import VOCAB_SIZES
    from longnet.model import SIZES
    training = config["training"]
    shape = {**SIZES[training["model"]], **training.get("model_overrides", {})}
    vocab = VOCAB_SIZES[config["data"].get("tokenizer", "byte")]
    return {"n_layer": shape["n_layer"], "d_model": shape["d_model"], "d_ff": shape["d_ff"], "vocab": vocab}


def parameters(config) -> int:
    m = model_shape(config)
    return m["n_layer"] * (4 * m["d_model"] ** 2 + 2 * m["d_model"] * m["d_ff"]) + m["vocab"] * m["d_model"]


def _minutes(flops: float, config, device: str, processes: int = 1) -> float:
    speed = config["training"].get("peak_flops") if device == "cpu" else None
    speed = (speed or NOMINAL_FLOPS[device]) * EFFICIENCY * processes
    return START_MIN + flops / speed / 60


def _process_mb(config, tokens_in_flight: int, training: bool, device: str) -> float:
    """Host memory of one process. On cuda, weights, activations and logits live on the GPU; the
    host holds a copy of the state at checkpoints."""
    m = model_shape(config)
    weights = parameters(config) * (16 if training else 4)
    if device == "cuda":
        return 2 * BASE_MB + weights / 2 ** 20
    activations = tokens_in_flight * m["n_layer"] * m["d_model"] * ACT_BYTES
    logits = tokens_in_flight * m["vocab"] * 4 * (3 if training else 1)
    return BASE_MB + (weights + activations + logits) / 2 ** 20


def micro_batch_tokens(config, seq: int) -> int:
    """Tokens of one forward/backward of a training job at length `seq` (longnet.train's batch
    geometry: whole sequences, at least one, at most a rank's share of a step)."""
    training = config["training"]
    per_rank = max(1, training["tokens_per_step"] // training["nproc"])
    return min(per_rank, max(seq, training.get("micro_batch_tokens", 8192) // seq * seq))


def train_gpu_bytes(config, seq: int) -> float:
    """GPU memory of one training process at length `seq`: 16 bytes a parameter (fp32 weights,
    gradients, two Adam moments), the activations of a micro-batch (ACT_BYTES per token, layer
    and model dimension) and the loss's logits, LOGIT_BYTES each for the positions computed at
    once (training.loss_chunk_tokens, else the whole micro-batch), plus GPU_BASE_BYTES."""
    m = model_shape(config)
    micro = micro_batch_tokens(config, seq)
    chunk = min(micro, config["training"].get("loss_chunk_tokens") or micro)
    return (GPU_BASE_BYTES + 16 * parameters(config) + micro * m["n_layer"] * m["d_model"] * ACT_BYTES
            + chunk * m["vocab"] * LOGIT_BYTES)


def check_gpu_memory(config, device: str, site: dict) -> None:
    """At load: refuse a training job whose GPU memory estimate (train_gpu_bytes) exceeds the
    site's GPU (site_resources gpu_mem_gb), naming what to change."""
    if device != "cuda" or not site.get("gpu_mem_gb"):
        return
    limit = site["gpu_mem_gb"] * 2 ** 30
    training = config["training"]
    for i, variant in enumerate(config["variants"]):
        own = {**config, "training": {**training, "model_overrides": {  # the entry's own size
            **training.get("model_overrides", {}), **variant.get("model_overrides", {})}}}
        for seq in variant.get("train_lens", []):
            need = train_gpu_bytes(own, seq)
            if need > limit:
                raise ValueError(
                    f"config key 'training.micro_batch_tokens': a training job of "
                    f"variants[{i}] ({variant.get('id', variant['name'])}) at train_len {seq} "
                    f"needs about {need / 2 ** 30:.0f} GiB of GPU memory (micro-batch "
                    f"{micro_batch_tokens(config, seq)} tokens, loss over "
                    f"{config['training'].get('loss_chunk_tokens') or 'all of them'} at once), "
                    f"over the site's gpu_mem_gb={site['gpu_mem_gb']:g} (allowed: a smaller "
                    "training.micro_batch_tokens or training.loss_chunk_tokens, or a site with "
                    "more GPU memory)")


def estimate(rule: str, config, device: str, local: bool, world_size: int | None = None,
             train_len: int | None = None) -> dict:
    """threads, mem_mb, runtime (minutes), gpu for one job of `rule`, before the site's scaling."""
    cuda = device == "cuda"
    training = config["training"]
    nproc, threads = training["nproc"], training["threads"]
    alone = ALL_CORES if local else SWEEP_THREADS
    if rule == "train":
        seq = train_len or max(max(v["train_lens"]) for v in config["variants"])
        micro = micro_batch_tokens(config, seq)
        tokens = training["steps"] * training["tokens_per_step"]
        evals = training["steps"] // training["eval_every"] * training["eval_tokens"]
        flops = 6 * parameters(config) * tokens + 2 * parameters(config) * evals
        return {"threads": nproc * threads, "mem_mb": nproc * _process_mb(config, micro, True, device),
                "runtime": _minutes(flops, config, device, nproc), "gpu": nproc if cuda else 0}
    if rule in ("evaluate", "samples"):
        ev = config["evaluation"]
        pk = ev.get("passkey", {"context_lens": [], "trials": 0, "depths": []})  # optional section
        longest = max(ev["eval_lens"] + pk["context_lens"])
        tokens = ev["max_tokens"] * len(ev["eval_lens"]) + pk["trials"] * sum(pk["context_lens"]) \
            * len(pk["depths"]) + ev["context_window"]["n_windows"] * max(ev["context_window"]["prompt_lens"] + [longest])
        return {"threads": threads, "mem_mb": _process_mb(config, longest, False, device),
                "runtime": _minutes(2 * parameters(config) * tokens, config, device), "gpu": 1 if cuda else 0}
    if rule == "profile":
        p = config["profile"]
        n = max(p["seq_lens"])
        batch = max(1, (p["total_tokens"] or n) // n)
        tensors = (8 if "fwd+bwd" in p["modes"] else 4) * batch * n * p["heads"] * p["head_dim"] * 4  # q, k, v, out (+ gradients)
        cells = len(p["seq_lens"]) * len(p["modes"])  # each cell stops at time_cap_s
        host = 2 * BASE_MB if cuda else BASE_MB + 2 * tensors / 2 ** 20
        return {"threads": p["threads"] or alone, "mem_mb": host,
                "runtime": START_MIN + cells * p["time_cap_s"] / 60, "gpu": 1 if cuda else 0}
    if rule == "sequence_parallel":
        d = config["distributed"]
        p = world_size or max(d["world_sizes"])
        n = max(d.get("seq_lens") or [t * p for t in d["tokens_per_rank"]])
        tensors = 8 * n * d["heads"] * d["head_dim"] * 4
        check = 8 * min(n, d["check_max_len"]) * d["heads"] * d["head_dim"] * 4
        host = 2 * BASE_MB if cuda else BASE_MB + 2 * (tensors / p + check) / 2 ** 20
        return {"threads": alone if local else p * d["threads_per_rank"], "mem_mb": p * host,
                "runtime": START_MIN + 10, "gpu": p if cuda else 0}
    if rule == "decode_benchmark":
        b = config["decode_benchmark"]
        return {"threads": b.get("threads") or alone, "mem_mb": BASE_MB + (b.get("max_cache_bytes") or 2 ** 30) / 2 ** 20,
                "runtime": START_MIN + 30, "gpu": 0}
    if rule == "recall":  # one small model trained on the recall task (rules recall, recall_lr)
        r = config["recall"]
        task = r["task"]
        vocab = 1 + task["keys"] * task["values"] + task["keys"] + task["values"] + task["filler"]
        m = {"d_ff": 4 * r["model"]["d_model"], "n_layer": 2, **r["model"]}
        weights = m["n_layer"] * (4 * m["d_model"] ** 2 + 2 * m["d_model"] * m["d_ff"]) + vocab * m["d_model"]
        tokens = r["batch"] * r["seq_len"]
        steps = max(r["steps"], r.get("lr_sweep_steps") or 0)
        evals = r.get("eval_sequences", 64) * r["seq_len"] * len(r["distances"])
        flops = 6 * weights * tokens * steps + 2 * weights * evals
        acts = tokens * m["n_layer"] * m["d_model"] * ACT_BYTES + tokens * vocab * 4 * 3
        host = 2 * BASE_MB + 4 * weights / 2 ** 20 if cuda else BASE_MB + (16 * weights + acts) / 2 ** 20
        return {"threads": threads, "mem_mb": host, "runtime": _minutes(flops, config, device),
                "gpu": 1 if cuda else 0}
    if rule == "prepare_data":
        raw = config["data"].get("max_bytes") or 2 ** 30
        # token arrays, their concatenation and the bytes written: about 6 bytes per byte of text;
        # tokenizing at 60 MB a minute or more
        return {"threads": 1, "mem_mb": BASE_MB + 6 * raw / 2 ** 20, "runtime": START_MIN + raw / 2 ** 20 / 60, "gpu": 0}
    return dict(SMALL_JOB)  # attention_graph, the aggregations, a rule with no estimate above


def resources_for(rule: str, config, device: str, local: bool, site: dict, **job) -> dict:
    """estimate() with the margin, the site's scales and caps applied, rounded for sbatch."""
    est = estimate(rule, config, device, local, **job)
    mem = est["mem_mb"] * site["mem_scale"]
    runtime = est["runtime"] * RUNTIME_MARGIN * site["runtime_scale"]
    threads, gpu = est["threads"], est["gpu"]
    if site["max_mem_mb"]:
        mem = min(mem, site["max_mem_mb"])
    if site["max_runtime"]:
        runtime = min(runtime, site["max_runtime"])
    every_core = local and threads == ALL_CORES  # Snakemake gives it --cores, whatever the cap
    for key, value, what in (("max_threads", 0 if every_core else threads, "threads"), ("max_gpus", gpu, "GPUs")):
        cap = site[key]
        if cap and value > cap and rule in LAUNCHED:  # torchrun would start more than was granted
            raise ValueError(f"site_resources.{key}={cap:g}, but a {rule} job starts {value} {what}; "
                             f"lower {LAUNCHED[rule]}")
    if site["max_threads"] and not every_core:
        threads = min(threads, int(site["max_threads"]))
    if site["max_gpus"]:
        gpu = min(gpu, int(site["max_gpus"]))
    return {"threads": int(threads), "mem_mb": int(math.ceil(mem / 100) * 100),
            "runtime": int(math.ceil(runtime)), "gpu": int(gpu)}
