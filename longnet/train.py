"""Train a decoder LM on a packed corpus with the paper's recipe; resumable, data-parallel.

    train(cfg, data_dir, out_dir)       # cfg: a plain dict, validated by TrainConfig
    python -m longnet.train --config run.yaml --data results/work/corpus --out results/work/run
    torchrun --nproc_per_node 2 -m longnet.train --config run.yaml --data ... --out ...

Recipe (LongNet paper, section 4): Adam (0.9, 0.98) with decoupled weight decay 0.01, linear
warm-up then polynomial decay, gradient clipping at 2.0, dropout 0. The tokens per optimizer step
are fixed; a longer seq_len means fewer sequences per step, and the sequences of a step are split
into micro-batches (gradient accumulation) and over DDP ranks without changing the math.

Determinism: the sequences of step s are drawn from a generator seeded by (seed, s), so a run
that is killed and resumed from its last checkpoint sees exactly the batches an uninterrupted run
sees, and (on CPU, same thread count) ends with bit-identical weights.

Outputs in out_dir (rank 0 writes, every file atomically):
    metrics.csv        step, tokens, loss, lr, tokens_per_s, wall_s, mfu (every log_every steps)
    compute_curve.csv  step, tokens, train_flops, val_loss (every eval_every steps and at the end)
    checkpoint_last.pt model + optimizer + step, for resuming (removed when the run completes)
    checkpoint_prev.pt the one before it: the fallback when checkpoint_last.pt reads back damaged
    checkpoint.pt      the final model, its configs and the corpus manifest
Each checkpoint has a .sha256 sidecar (size and hash, longnet.checkpoint) and is verified when
read: a damaged final checkpoint is retrained, a damaged resume point falls back to the one before.
"""

import argparse
import contextlib
import csv
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from longnet.checkpoint import (CheckpointError, load_checkpoint, remove_checkpoint,
                               save_checkpoint, sidecar_path)
from longnet.data import SPLITS, corpus_identity, load_split, read_manifest
from longnet.evaluate import sequence_loss
from longnet.io import write_rows
from longnet.model import LanguageModel, ModelConfig, mixed_precision
from longnet.timing import matmul_peak_flops

METRICS_COLUMNS = ("step", "tokens", "loss", "lr", "tokens_per_s", "wall_s", "mfu")
CURVE_COLUMNS = ("step", "tokens", "train_flops", "val_loss")


@dataclass
class TrainConfig:
    # model: a named size from longnet.model.SIZES, any ModelConfig field overridden
    model: str = "tiny"
    model_overrides: dict = field(default_factory=dict)
    attention: str = "vanilla"  # a name from longnet.variants.available()
    attention_params: dict = field(default_factory=dict)
    positions: str = "xpos"
    # data and batch
    seq_len: int = 256
    tokens_per_step: int = 8192  # held constant across seq_len, as in the paper
    micro_batch_tokens: int = 8192  # tokens per forward/backward; memory only, not the math
    # positions per chunk of the loss (LanguageModel.forward): memory only; None: all at once
    loss_chunk_tokens: int | None = None
    # optimisation
    steps: int = 150  # x 8192 tokens = 1.2M: tiny learns well (benchmarks/lm_scale.py times it)
    lr: float = 2e-3
    warmup: int = 15
    min_lr: float = 0.0  # polynomial decay ends here at `steps`
    power: float = 1.0  # 1.0 = linear decay (fairseq's polynomial_decay default)
    weight_decay: float = 0.01
    betas: tuple = (0.9, 0.98)
    eps: float = 1e-6
    clip_grad: float = 2.0
    # evaluation along training (loss vs compute, Figure 6)
    eval_every: int = 25  # 0: only at the end
    eval_tokens: int = 32768
    eval_split: str = "test"  # never used for model selection; the figure plots test loss
    # bookkeeping
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 25
    device: str = "cpu"  # "cpu", "cuda" (each torchrun process its LOCAL_RANK's GPU), "cuda:1", or
    # "auto" (cuda when this machine has it): always an explicit choice, never inferred
    peak_flops: float | None = None  # matmul FLOP/s for MFU; None measures it at start
    progress: bool = True

    def __post_init__(self):
        if isinstance(self.betas, list):
            self.betas = tuple(self.betas)
        positive = ("seq_len", "tokens_per_step", "micro_batch_tokens", "steps", "eval_tokens",
                    "log_every", "checkpoint_every", "loss_chunk_tokens")
        for name in positive:
            value = getattr(self, name)
            if name == "loss_chunk_tokens" and value is None:  # None: the whole micro-batch
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"train {name}={value!r} is invalid; allowed: an int >= 1")
        for name in ("warmup", "eval_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"train {name}={getattr(self, name)!r} is invalid; "
                                 "allowed: an int >= 0")
        if self.tokens_per_step % self.seq_len:
            raise ValueError(f"train tokens_per_step={self.tokens_per_step} must be a multiple of "
                             f"seq_len={self.seq_len}")
        for name, ok, allowed in (("lr", self.lr > 0, "> 0"),
                                  ("min_lr", 0 <= self.min_lr <= self.lr, f"0..lr ({self.lr})"),
                                  ("power", self.power > 0, "> 0")):
            if not ok:
                raise ValueError(f"train {name}={getattr(self, name)!r} is invalid; allowed: "
                                 f"{allowed}")
        if not (isinstance(self.clip_grad, (int, float)) and self.clip_grad > 0):
            raise ValueError(f"train clip_grad={self.clip_grad!r} is invalid; allowed: a number > 0 "
                             "(the largest gradient norm; inf: no clipping)")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise ValueError(f"train weight_decay={self.weight_decay!r} is invalid; "
                             "allowed: a number >= 0")
        if not (isinstance(self.eps, (int, float)) and self.eps > 0):
            raise ValueError(f"train eps={self.eps!r} is invalid; allowed: a number > 0")
        if not isinstance(self.betas, tuple) or len(self.betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1
                                           for b in self.betas):
            raise ValueError(f"train betas={self.betas!r} is invalid; allowed: two numbers in "
                             "[0, 1)")
        if self.peak_flops is not None and not (isinstance(self.peak_flops, (int, float))
                                                and self.peak_flops > 0):
            raise ValueError(f"train peak_flops={self.peak_flops!r} is invalid; allowed: a "
                             "number > 0, or null to measure it")
        for name in ("model_overrides", "attention_params"):
            if not isinstance(getattr(self, name), dict):
                raise ValueError(f"train {name}={getattr(self, name)!r} is invalid; allowed: a "
                                 "mapping of field names to values")
        if not isinstance(self.progress, bool):
            raise ValueError(f"train progress={self.progress!r} is invalid; allowed: true, false")
        if self.eval_split not in SPLITS:
            raise ValueError(f"train eval_split={self.eval_split!r} is invalid; allowed: "
                             f"{', '.join(SPLITS)}")

    @classmethod
    def from_dict(cls, cfg: dict) -> "TrainConfig":
        allowed = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - allowed)
        if unknown:
            raise ValueError(f"unknown train config key(s) {', '.join(unknown)}; allowed: "
                             f"{', '.join(sorted(allowed))}")
        return cls(**cfg)

    def model_config(self, vocab_size: int) -> ModelConfig:
        overrides = dict(self.model_overrides)
        overrides.setdefault("max_seq_len", self.seq_len)
        return ModelConfig.from_size(self.model, vocab_size=vocab_size, attention=self.attention,
                                     attention_params=dict(self.attention_params),
                                     positions=self.positions, **overrides)


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to lr over `warmup` steps, then polynomial decay to min_lr at `steps`."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    left = max(0.0, 1.0 - (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * left ** cfg.power


def sample_batch(tokens: np.ndarray, n: int, seq_len: int, seed: int, step: int) -> torch.Tensor:
    """n random windows of seq_len + 1 tokens for optimizer step `step` (the same on every rank
    and every resume: the generator is seeded by (seed, step))."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    starts = torch.randint(0, len(tokens) - seq_len - 1, (n,), generator=g).numpy()
    return torch.from_numpy(tokens[starts[:, None] + np.arange(seq_len + 1)].astype(np.int64))


def _read_csv(path: Path, up_to_step: int) -> list[dict]:
    """Rows of a previous run up to its checkpoint (later rows are redone on resume)."""
    if not path.exists():
        return []
    with open(path) as f:
        return [row for row in csv.DictReader(f) if int(row["step"]) <= up_to_step]


def _resume_state(paths, device, main: bool, same_run=lambda state: True) -> dict | None:
    """The first of `paths` (newest first) that reads back intact and is `same_run`; damaged ones
    are reported and (by rank 0) removed, ones from another run (run_identity or corpus) set
    aside (NAME.other-run), so a rerun falls back to the one before, or starts afresh."""
    for path in paths:
        if not path.exists():
            continue
        try:
            state = load_checkpoint(path, map_location=device)
        except CheckpointError as error:
            print(f"warning: {error}; falling back to an older checkpoint", flush=True)
            if main:
                remove_checkpoint(path)
            continue
        if same_run(state):
            return state
        if main:
            _set_aside(path, "is from another configuration or corpus")
    return None


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """The configured device for this process: "cuda" means this torchrun process's GPU
    (cuda:LOCAL_RANK), "auto" means that when the machine has CUDA and "cpu" otherwise. A process
    whose LOCAL_RANK has no GPU is an error here, not a crash inside CUDA."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} was configured, but this machine has no CUDA; "
                             "allowed here: cpu")
        if device.index is None:
            if local_rank >= torch.cuda.device_count():
                raise ValueError(f"LOCAL_RANK {local_rank} has no GPU: this machine has "
                                 f"{torch.cuda.device_count()} CUDA device(s); start at most that "
                                 "many processes per node")
            device = torch.device("cuda", local_rank)
    return device


@dataclass
class _Run:
    """Everything one call of `train` works with: set up by `_set_up`, advanced by `_step`,
    recorded by `_record` and `_finish`."""

    tc: TrainConfig
    out_dir: Path
    device: torch.device
    world: int
    rank: int
    # batch geometry: sequences per step, split over ranks, then into equal micro-batches
    seqs_per_step: int
    per_rank: int
    micro: int
    n_micro: int
    manifest: dict
    train_tokens: np.ndarray
    eval_tokens: np.ndarray
    model_cfg: ModelConfig
    model: LanguageModel
    ddp: torch.nn.Module  # the model, wrapped in DDP when world > 1
    optimizer: torch.optim.Optimizer
    autocast: contextlib.AbstractContextManager
    flops_per_token: float
    peak: float  # matmul FLOP/s, for MFU
    step: int = 0
    wall_s: float = 0.0
    metrics: list = field(default_factory=list)
    curve: list = field(default_factory=list)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def final_path(self) -> Path:
        return self.out_dir / "checkpoint.pt"

    @property
    def last_path(self) -> Path:
        return self.out_dir / "checkpoint_last.pt"

    @property
    def prev_path(self) -> Path:  # the one before last: the fallback
        return self.out_dir / "checkpoint_prev.pt"

    def train_flops(self) -> float:
        return self.step * self.tc.tokens_per_step * self.flops_per_token

    def checkpoint(self, path: Path, with_optimizer: bool) -> None:
        state = dict(model=self.model.state_dict(), step=self.step, wall_s=self.wall_s,
                     tokens_seen=self.step * self.tc.tokens_per_step, train_flops=self.train_flops(),
                     train_config=asdict(self.tc), model_config=self.model_cfg.to_dict(),
                     manifest=self.manifest)
        if with_optimizer:
            state["optimizer"] = self.optimizer.state_dict()
        if path == self.last_path and self.last_path.exists():  # keep the previous one as the fallback
            remove_checkpoint(self.prev_path)
            os.replace(self.last_path, self.prev_path)
            if sidecar_path(self.last_path).exists():
                os.replace(sidecar_path(self.last_path), sidecar_path(self.prev_path))
        save_checkpoint(state, path)

    def evaluate_curve(self) -> None:
        loss, _ = sequence_loss(self.model, self.eval_tokens, self.tc.seq_len, self.tc.eval_tokens,
                                device=self.device)
        self.curve.append(dict(step=self.step, tokens=self.step * self.tc.tokens_per_step,
                               train_flops=self.train_flops(), val_loss=loss))
        write_rows(self.out_dir / "compute_curve.csv", CURVE_COLUMNS, self.curve)


# TrainConfig fields that change how a run is carried out, not the model it trains: a resume
# point or finished run that differs only in these is the same run (the device: a checkpoint
# moves between CPU and GPU with map_location).
NOT_RUN_IDENTITY = ("progress", "peak_flops", "checkpoint_every", "micro_batch_tokens",
                    "loss_chunk_tokens", "device")


def run_identity(cfg: dict) -> dict:
    """A training configuration without NOT_RUN_IDENTITY: what makes two runs the same run (the
    pipeline's state directory is named by its hash, with the data section)."""
    return {k: v for k, v in cfg.items() if k not in NOT_RUN_IDENTITY}


def _same_run(state: dict, tc: TrainConfig, manifest: dict) -> bool:
    """Whether a checkpoint comes from this run: the same run_identity on the same corpus
    (longnet.data.corpus_identity)."""
    recorded = state.get("manifest")
    return (recorded is not None and corpus_identity(recorded) == corpus_identity(manifest)
            and run_identity(asdict(TrainConfig.from_dict(dict(state.get("train_config", {})))))
            == run_identity(asdict(tc)))


def _set_aside(path: Path, why: str) -> None:
    """Keep a checkpoint from another run (and its sidecar) as NAME.other-run, replacing an older
    one there, so this run starts afresh without deleting it."""
    print(f"warning: {path} {why}; kept as {path.name}.other-run, training afresh", flush=True)
    for source in (path, sidecar_path(path)):
        if source.exists():
            os.replace(source, source.with_name(source.name + ".other-run"))


def _finished(tc: TrainConfig, out_dir: Path, manifest: dict) -> bool:
    """Whether out_dir/checkpoint.pt already holds the finished run, trained with this
    configuration on this corpus; a damaged one is removed (by rank 0) so the run is trained
    again, from the last good checkpoint if any, and one from another run is trained over."""
    final_path = out_dir / "checkpoint.pt"
    if final_path.exists():
        try:
            state = load_checkpoint(final_path)
        except CheckpointError as error:
            print(f"warning: {error}; removing it and training again", flush=True)
            if int(os.environ.get("RANK", "0")) == 0:
                remove_checkpoint(final_path)
            return False
        if not _same_run(state, tc, manifest):
            if int(os.environ.get("RANK", "0")) == 0:
                _set_aside(final_path, "was trained with another configuration or corpus")
            return False
        return state["step"] >= tc.steps
    return False


def _batch_geometry(tc: TrainConfig, world: int) -> tuple[int, int, int, int]:
    """(sequences per step, per rank, per micro-batch, micro-batches per step)."""
    seqs_per_step = tc.tokens_per_step // tc.seq_len
    if seqs_per_step % world:
        raise ValueError(f"train tokens_per_step / seq_len = {seqs_per_step} sequences must split "
                         f"evenly over {world} ranks")
    per_rank = seqs_per_step // world
    cap = max(1, tc.micro_batch_tokens // tc.seq_len)
    micro = max(d for d in range(1, min(cap, per_rank) + 1) if per_rank % d == 0)
    return seqs_per_step, per_rank, micro, per_rank // micro


def _set_up(tc: TrainConfig, data_dir, out_dir: Path) -> _Run:
    """Process group and device, batch geometry, data, model and optimizer, resumed from the
    newest intact checkpoint when there is one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(tc.device, local_rank)
    if device.type == "cuda":  # before the process group: NCCL binds this rank to its device
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        cuda = device.type == "cuda"
        dist.init_process_group("nccl" if cuda else "gloo", device_id=device if cuda else None)
    main = rank == 0
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
    geometry = _batch_geometry(tc, world)

    manifest = read_manifest(data_dir)
    train_tokens = load_split(data_dir, "train", verify=True)
    eval_tokens = load_split(data_dir, tc.eval_split, verify=True)

    torch.manual_seed(tc.seed)
    model_cfg = tc.model_config(manifest["vocab_size"])
    model = LanguageModel(model_cfg).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, betas=tc.betas, eps=tc.eps,
                                  weight_decay=tc.weight_decay)
    step, wall_s = 0, 0.0
    state = _resume_state((out_dir / "checkpoint_last.pt", out_dir / "checkpoint_prev.pt"), device,
                          main, lambda state: _same_run(state, tc, manifest))
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, wall_s = state["step"], state["wall_s"]
    # a run resumed at step 0 (killed before its first checkpoint, or from another configuration
    # or corpus) starts its rows afresh: the untrained model's curve point is measured again
    metrics = _read_csv(out_dir / "metrics.csv", step) if main and step else []
    curve = _read_csv(out_dir / "compute_curve.csv", step) if main and step else []
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model

    autocast = mixed_precision(device)
    flops_per_token = model.training_flops_per_token(tc.seq_len)
    peak = tc.peak_flops or matmul_peak_flops(
        device, torch.bfloat16 if device.type == "cuda" else torch.float32)
    return _Run(tc, out_dir, device, world, rank, *geometry, manifest, train_tokens, eval_tokens,
                model_cfg, model, ddp, optimizer, autocast, flops_per_token, peak, step, wall_s,
                metrics, curve)


def _step(run: _Run) -> tuple[float, float]:
    """One optimizer step at run.step: (loss averaged over the step's sequences, learning rate)."""
    tc, model = run.tc, run.model
    model.train()
    lr = learning_rate(run.step, tc)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    batch = sample_batch(run.train_tokens, run.seqs_per_step, tc.seq_len, tc.seed, run.step)
    batch = batch[run.rank * run.per_rank:(run.rank + 1) * run.per_rank].to(run.device)
    loss_sum = torch.zeros((), device=run.device)
    for i in range(run.n_micro):
        chunk = batch[i * run.micro:(i + 1) * run.micro]
        # DDP all-reduces gradients only on the last micro-batch of the step
        skip_sync = run.world > 1 and i < run.n_micro - 1
        with (run.ddp.no_sync() if skip_sync else contextlib.nullcontext()), run.autocast:
            loss = run.ddp(chunk[:, :-1], targets=chunk[:, 1:],
                           loss_chunk_tokens=tc.loss_chunk_tokens)
            (loss / run.n_micro).backward()
        loss_sum += loss.detach()
    torch.nn.utils.clip_grad_norm_(model.parameters(), tc.clip_grad)
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    if run.world > 1:
        dist.all_reduce(loss_sum)
    return loss_sum.item() / (run.n_micro * run.world), lr  # .item() also waits for the device


def logged_steps(tc: TrainConfig) -> dict[str, dict]:
    """The steps of the rows a finished run has written, per file, as {"every": k, "last": steps,
    "zero": bool} (steps_of lists them): metrics.csv every log_every steps and at the end;
    compute_curve.csv at step 0, every eval_every steps and at the end (only at the end with
    eval_every 0). The pipeline refuses a file with a row missing or repeated."""
    curve = ({"every": tc.eval_every, "last": tc.steps, "zero": True} if tc.eval_every
             else {"every": tc.steps, "last": tc.steps, "zero": False})
    return {"metrics": {"every": tc.log_every, "last": tc.steps, "zero": False},
            "compute_curve": curve}


def steps_of(spec: dict) -> list[int]:
    """The steps a logged_steps spec names, in order."""
    every, last = spec["every"], spec["last"]
    return [0] * spec["zero"] + sorted({*range(every, last + 1, every), last})


def _record(run: _Run, loss: float, lr: float, window: dict, stopping: bool) -> None:
    """After a step (rank 0): the metrics row every log_every steps (throughput over the steps
    since the last row), the test loss every eval_every steps, a resumable checkpoint every
    checkpoint_every steps or when stopping early."""
    tc, done = run.tc, run.step == run.tc.steps
    if run.step % tc.log_every == 0 or done:
        tokens_per_s = window["tokens"] / window["s"]
        run.metrics.append(dict(step=run.step, tokens=run.step * tc.tokens_per_step, loss=loss, lr=lr,
                                tokens_per_s=tokens_per_s, wall_s=run.wall_s,
                                mfu=tokens_per_s * run.flops_per_token / run.peak))
        write_rows(run.out_dir / "metrics.csv", METRICS_COLUMNS, run.metrics)
        window.update(tokens=0, s=0.0)
    if tc.eval_every and (run.step % tc.eval_every == 0 or done):
        run.evaluate_curve()
    if not done and (run.step % tc.checkpoint_every == 0 or stopping):
        run.checkpoint(run.last_path, with_optimizer=True)


def _finish(run: _Run) -> None:
    """The finished run (rank 0): the final test loss if not evaluated along the way, the final
    checkpoint, and the resume points removed."""
    if not run.tc.eval_every:
        run.evaluate_curve()
    run.checkpoint(run.final_path, with_optimizer=False)
    remove_checkpoint(run.last_path)
    remove_checkpoint(run.prev_path)


def train(cfg: dict, data_dir, out_dir, stop_after: int | None = None) -> None:
    """Train per `cfg` (keys of TrainConfig) on the corpus in data_dir; write to out_dir.

    Resumes from out_dir/checkpoint_last.pt when a previous run left one, and returns at once
    when out_dir/checkpoint.pt already holds the finished run.
    stop_after: leave (with a checkpoint) after this many optimizer steps in this call, e.g. to fit
    a time-limited job; the next call resumes.
    """
    tc = TrainConfig.from_dict(dict(cfg))
    out_dir = Path(out_dir)
    if _finished(tc, out_dir, read_manifest(data_dir)):
        return
    run = _set_up(tc, data_dir, out_dir)
    if run.main and run.step == 0 and tc.eval_every:
        run.evaluate_curve()  # the untrained model: the curve's first point
    bar = tqdm(total=tc.steps, initial=run.step, disable=not (run.main and tc.progress),
               desc=f"{tc.attention} L={tc.seq_len}", dynamic_ncols=True)
    call_t0, wall_s0 = time.perf_counter(), run.wall_s
    steps_this_call, window = 0, dict(tokens=0, s=0.0)  # the window: training time only
    while run.step < tc.steps:
        step_t0 = time.perf_counter()
        loss, lr = _step(run)
        run.step += 1
        steps_this_call += 1
        window["tokens"] += tc.tokens_per_step
        window["s"] += time.perf_counter() - step_t0  # not eval or checkpoints
        run.wall_s = wall_s0 + time.perf_counter() - call_t0
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}")
        stopping = stop_after is not None and steps_this_call >= stop_after
        if run.main:
            _record(run, loss, lr, window, stopping)
        if stopping and run.step < tc.steps:
            break
    bar.close()
    if run.main and run.step == tc.steps:
        _finish(run)
    if run.world > 1:
        dist.barrier()


def _main(argv=None) -> None:
    import yaml

    parser = argparse.ArgumentParser(description="Train a decoder LM (see longnet/train.py).")
    parser.add_argument("--config", required=True, help="YAML file of TrainConfig keys")
    parser.add_argument("--data", required=True, help="directory written by prepare_corpus")
    parser.add_argument("--out", required=True, help="output directory (resumed if partial)")
    parser.add_argument("--stop-after", type=int, default=None,
                        help="leave after this many steps (resume later)")
    args = parser.parse_args(argv)
    cfg = yaml.safe_load(Path(args.config).read_text()) or {}
    train(cfg, args.data, args.out, stop_after=args.stop_after)
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    _main()
