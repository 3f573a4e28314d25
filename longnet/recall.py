"""Multi-query associative recall with the key-query distance controlled (a Zoology-style MQAR task).

Each sequence holds `pairs` key-value pairs placed among filler tokens; every key comes back once,
exactly `distance` positions after it first appeared, and the model must then predict its value:

    position  p      p+1            p+distance   (next token)
    token     key    value   ...    key          -> value (the target)

Keys are distinct within a sequence and values are drawn afresh per sequence, so the answer can
only come from the context, `distance` positions back. Loss and accuracy count the answer
positions only. Vocabulary: 0 unused, then keys, values and filler tokens in three disjoint ranges.

Sweeping `distance` across a LongNet schedule (inside the smallest segment, across one segment
boundary, across the widest segment, up to the training length) asks what the attention-graph
analysis predicts: how far a pattern carries information in a given number of layers.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class RecallTask:
    seq_len: int = 256
    pairs: int = 8
    keys: int = 64
    values: int = 64
    filler: int = 64

    def __post_init__(self):
        for name in ("seq_len", "pairs", "keys", "values", "filler"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"recall {name}={value!r} is invalid; allowed: an int >= 1")
        if self.pairs > self.keys:
            raise ValueError(f"recall pairs={self.pairs} needs at least as many keys, got keys={self.keys}")
        if 4 * self.pairs > self.seq_len:
            raise ValueError(f"recall seq_len={self.seq_len} cannot hold pairs={self.pairs} "
                             f"(4 positions each); allowed: seq_len >= {4 * self.pairs}")

    @property
    def vocab_size(self) -> int:
        return 1 + self.keys + self.values + self.filler

    def max_distance(self) -> int:
        return self.seq_len - 2

    def batch(self, n: int, distance: int, generator: torch.Generator):
        """(tokens (n, seq_len) int64, targets (n, seq_len) int64 with -100 off the answers).
        targets[:, t] is the token the model must predict after reading tokens[:, : t + 1]."""
        if not 2 <= distance <= self.max_distance():
            raise ValueError(f"recall distance={distance} is invalid; allowed: 2 .. {self.max_distance()} "
                             f"for seq_len={self.seq_len}")
        first_filler = 1 + self.keys + self.values
        tokens = torch.randint(first_filler, self.vocab_size, (n, self.seq_len), generator=generator)
        targets = torch.full((n, self.seq_len), -100, dtype=torch.int64)
        for row in range(n):
            used = torch.zeros(self.seq_len + 1, dtype=torch.bool)
            keys = torch.randperm(self.keys, generator=generator)[: self.pairs] + 1
            values = torch.randint(0, self.values, (self.pairs,), generator=generator) + 1 + self.keys
            placed = 0
            for start in torch.randperm(self.seq_len - distance - 1, generator=generator).tolist():
                slots = [start, start + 1, start + distance, start + distance + 1]
                if any(used[s] for s in slots):
                    continue
                used[slots] = True
                tokens[row, start], tokens[row, start + 1] = keys[placed], values[placed]
                tokens[row, start + distance] = keys[placed]
                targets[row, start + distance] = values[placed]
                placed += 1
                if placed == self.pairs:
                    break
            if placed == 0:
                raise ValueError(f"recall: no pair fits at distance {distance} in seq_len {self.seq_len}")
        return tokens, targets


def recall_loss(model, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = model(tokens)
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)


@torch.no_grad()
def recall_accuracy(model, task: RecallTask, distance: int, n: int = 64, seed: int = 10_000,
                    batch: int = 32, device="cpu") -> float:
    """Share of answers predicted exactly (argmax) at this distance, on held-out sequences."""
    generator = torch.Generator().manual_seed(seed + distance)
    right = total = 0
    for start in range(0, n, batch):
        tokens, targets = task.batch(min(batch, n - start), distance, generator)
        tokens, targets = tokens.to(device), targets.to(device)
        predicted = model(tokens).argmax(-1)
        answers = targets != -100
        right += int((predicted[answers] == targets[answers]).sum())
        total += int(answers.sum())
    return right / total
