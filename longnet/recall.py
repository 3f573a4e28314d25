"""Multi-query associative recall with the key-query distance controlled (after Zoology's MQAR).

Each sequence holds `pairs` key-value bindings among filler tokens. A binding is ONE token, the pair
(key, value); every key comes back once as a query token exactly `distance` positions later, and
the model must then predict the value:

    position  p             ...    p + distance    (prediction at p + distance)
    token     pair(k, v)    ...    query(k)        -> value(v)

Keys are distinct within a sequence and values are drawn afresh per sequence, so the answer is
only in the context, `distance` positions back. Loss and accuracy count the answer positions only.
Vocabulary: 0 unused, then keys x values pair tokens, keys query tokens, values answer tokens and
filler tokens, in disjoint ranges.

Why one token per binding (rather than MQAR's key token followed by a value token): answering then
needs exactly one thing, a path in the stacked attention graph from the pair's position to the
query's, which is what the suite's attention-graph analysis counts (layers needed to reach
distance d). The two-token form also needs an induction step (a previous-token head binding the
value to its key) that small models learn late: measured at this suite's CPU scale (2 layers,
d_model 128, 8 heads, length 128, batch 32), vanilla attention reached 35-66% after 150 steps on
the two-token form and 99% on this one.

Sweeping `distance` across a LongNet schedule (inside the smallest segment, across one segment
boundary, across the widest segment, up to the training length) asks what the attention-graph
analysis predicts: how far a pattern carries information in a given number of layers.
"""
from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from longnet.model import mixed_precision


@dataclass(frozen=True)
class RecallTask:
    seq_len: int = 128
    pairs: int = 8
    keys: int = 16
    values: int = 16
    filler: int = 16

    def __post_init__(self):
        for name in ("seq_len", "pairs", "keys", "values", "filler"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"recall {name}={value!r} is invalid; allowed: an int >= 1")
        if self.pairs > self.keys:
            raise ValueError(f"recall pairs={self.pairs} needs at least as many keys, got keys={self.keys}")
        if 2 * self.pairs + 2 > self.seq_len:
            raise ValueError(f"recall seq_len={self.seq_len} cannot hold pairs={self.pairs} "
                             f"(2 positions each); allowed: seq_len >= {2 * self.pairs + 2}")

    # token ranges
    @property
    def first_query(self) -> int:
        return 1 + self.keys * self.values

    @property
    def first_value(self) -> int:
        return self.first_query + self.keys

    @property
    def first_filler(self) -> int:
        return self.first_value + self.values

    @property
    def vocab_size(self) -> int:
        return self.first_filler + self.filler

    def pair_token(self, key, value):
        """The token binding key (0..keys-1) to value (0..values-1)."""
        return 1 + key * self.values + value

    def max_distance(self) -> int:
        return self.seq_len - 1

    def batch(self, n: int, distance: int, generator: torch.Generator):
        """(tokens (n, seq_len) int64, targets (n, seq_len) int64 with -100 off the answers).
        targets[:, t] is the token the model must predict after reading tokens[:, : t + 1]."""
        if not 1 <= distance <= self.max_distance():
            raise ValueError(f"recall distance={distance} is invalid; allowed: 1 .. {self.max_distance()} "
                             f"for seq_len={self.seq_len}")
        tokens = torch.randint(self.first_filler, self.vocab_size, (n, self.seq_len), generator=generator)
        targets = torch.full((n, self.seq_len), -100, dtype=torch.int64)
        for row in range(n):
            used = torch.zeros(self.seq_len, dtype=torch.bool)
            keys = torch.randperm(self.keys, generator=generator)[: self.pairs]
            values = torch.randint(0, self.values, (self.pairs,), generator=generator)
            placed = 0
            for start in torch.randperm(self.seq_len - distance, generator=generator).tolist():
                query = start + distance
                if used[start] or used[query]:
                    continue
                used[start] = used[query] = True
                k, v = int(keys[placed]), int(values[placed])
                tokens[row, start] = self.pair_token(k, v)
                tokens[row, query] = self.first_query + k
                targets[row, query] = self.first_value + v
                placed += 1
                if placed == self.pairs:
                    break
        return tokens, targets


def recall_loss(model, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    with mixed_precision(tokens.device):
        logits = model(tokens)
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)


# Held-out sequences come in two splits that never meet each other or the training stream: the
# validation split chooses the learning rate (`choose_lr`), the test split is what is reported.
SPLITS = ("validation", "test")


def split_generator(split: str, seed: int, distance: int) -> torch.Generator:
    """The generator of one split's sequences at one distance: seeded from a hash of (split,
    seed, distance), so the two splits and the training stream (seeded with the small training
    seed itself) are different streams for every seed and distance."""
    if split not in SPLITS:
        raise ValueError(f"recall split={split!r} is invalid; allowed: {', '.join(SPLITS)}")
    digest = hashlib.sha256(f"longnet.recall:{split}:{seed}:{distance}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def heldout(task: RecallTask, distance: int, n: int = 64, seed: int = 0, batch: int = 32,
            split: str = "test"):
    """One split's held-out sequences at one distance, as (tokens, targets) batches of at most
    `batch`: the same for every model given (n, seed, split), so accuracies are paired across
    variants."""
    generator = split_generator(split, seed, distance)
    for start in range(0, n, batch):
        yield task.batch(min(batch, n - start), distance, generator)


def answer_positions(task: RecallTask, distance: int, n: int = 64, seed: int = 0,
                     batch: int = 32, split: str = "test") -> torch.Tensor:
    """The query positions of every held-out answer (its pair token is `distance` before)."""
    return torch.cat([torch.nonzero(targets != -100)[:, 1]
                      for _, targets in heldout(task, distance, n, seed, batch, split)])


@torch.no_grad()
def recall_accuracy(model, task: RecallTask, distance: int, n: int = 64, seed: int = 0,
                    batch: int = 32, device="cpu", split: str = "test") -> float:
    """Share of answers predicted exactly (argmax) at this distance, on held-out sequences."""
    right = total = 0
    for tokens, targets in heldout(task, distance, n, seed, batch, split):
        tokens, targets = tokens.to(device), targets.to(device)
        with mixed_precision(device):
            predicted = model(tokens).argmax(-1)
        answers = targets != -100
        right += int((predicted[answers] == targets[answers]).sum())
        total += int(answers.sum())
    return right / total


def choose_lr(sweep) -> float:
    """The learning rate of a sweep with the highest mean validation accuracy over the distances;
    ties go to the lower final training loss, then to the smaller rate. `sweep`: rows (dicts or
    a DataFrame's records) with lr, distance, accuracy (validation) and final_loss."""
    runs: dict[float, list] = {}
    for row in sweep:
        runs.setdefault(float(row["lr"]), []).append(row)
    if not runs:
        raise ValueError("choose_lr: the sweep has no rows")

    def score(lr):
        rows = runs[lr]
        return (-sum(r["accuracy"] for r in rows) / len(rows), rows[0]["final_loss"], lr)

    return min(runs, key=score)


def train_recall(model, task: RecallTask, steps: int, batch: int, lr: float, warmup: int,
                 seed: int, max_distance: int | None = None, parts: int = 4,
                 weight_decay: float = 0.1, log_every: int = 0, device="cpu") -> list[dict]:
    """Train `model` on the task; returns the loss curve [{step, loss, wall_s}].

    Each step's batch is `parts` groups of batch // parts sequences, each group at one distance
    drawn uniformly from 1 .. max_distance (default the task's largest), so every distance is
    trained on and each evaluated distance is one the model has seen. AdamW (betas 0.9, 0.98),
    linear warm-up over `warmup` steps, then cosine decay to 0; gradients clipped to norm 1.
    `seed` sets the initialisation (the caller seeds torch before building the model) and here
    the data order. device: where the batches go (the model's; bf16 autocast on CUDA); the
    sequences are drawn on the CPU, so they are the same on every device."""
    if batch % parts:
        raise ValueError(f"recall batch={batch} is invalid; allowed: a multiple of parts={parts}")
    max_distance = max_distance or task.max_distance()
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98),
                                  weight_decay=weight_decay)
    curve, start = [], time.perf_counter()
    model.train()
    for step in range(1, steps + 1):
        scale = min(1.0, step / max(1, warmup)) * 0.5 * (1 + math.cos(math.pi * step / steps))
        for group in optimizer.param_groups:
            group["lr"] = lr * scale
        distances = torch.randint(1, max_distance + 1, (parts,), generator=generator).tolist()
        groups = [task.batch(batch // parts, d, generator) for d in distances]
        tokens = torch.cat([t for t, _ in groups]).to(device)
        targets = torch.cat([t for _, t in groups]).to(device)
        loss = recall_loss(model, tokens, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        curve.append(dict(step=step, loss=loss.item(), wall_s=time.perf_counter() - start))
        if log_every and step % log_every == 0:
            print(f"step {step} loss {loss.item():.3f} {curve[-1]['wall_s']:.0f} s", flush=True)
    model.eval()
    return curve
