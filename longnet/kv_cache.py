"""Key/value caches for token-by-token causal decoding, one per kind of attention pattern.

Every cache has the same two-call contract, used by longnet.multihead and the variants' `new_cache`:

    cache.append(k, v)    # (B, n, H, D): the keys and values of positions length .. length + n - 1
    cache.attend(q)       # (B, 1, H, D): the causal output of the query at position length - 1
    cache.length          # positions appended so far;  cache.nbytes: bytes the cache holds now

Prefill is the normal forward over the prompt followed by one `append` of its keys and values;
each generated token is `append` of its key and value, then `attend` of its query. A cache keeps
only the rows a later query can still read, so its memory is what the pattern needs:

- `RowCache`: rows tagged with their positions, for any pattern that is one masked softmax per
  query (vanilla, the sparse baselines). The variant supplies `reads(t, positions)`, the (H, L)
  keys query t reads, and `keeps(t, positions)`, the (L,) rows query t or a later one reads;
  rows nobody reads again are dropped (amortised: when the buffer is full), so the buffer holds
  at most 1.25 times what the pattern needs (plus 16 rows).
- `DilatedKVCache`: LongNet. In branch (w, r) the query at t reads only the rows of its own
  segment [a, t], a = (t // w) * w, on its head's offset lattice a + s, a + s + r, ... (s = h mod r),
  so each branch keeps, per head, only the current segment's rows on that lattice:
  ceil(w / r) slots, sum_i ceil(w_i / r_i) rows per head for the whole schedule, whatever the
  context length. The output is the full causal forward's at that position (branches mixed by
  log-sum-exp exactly as in longnet.dilated_attention).

The attention of one query over the kept rows is plain torch math (`softmax_rows`), accumulated
in float32 (float64 for float64 input).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from .block_sparse import accumulation_dtype
from .schedule import DilatedSchedule

Reads = Callable[[int, torch.Tensor], "torch.Tensor | None"]


def softmax_rows(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scale: float,
                 mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One query per head over L rows: q (B, H, D), keys/values (B, H, L, D), mask (H, L) bool or
    None (all rows). Returns (out (B, H, D), lse (B, H)); a head with no row gets (0, -inf)."""
    acc = accumulation_dtype(q.dtype)
    scores = torch.einsum("bhd,bhld->bhl", q.to(acc), keys.to(acc)) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    if mask is not None:  # a head whose mask selects nothing: lse -inf, output 0
        lse_safe = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
    else:
        lse_safe = lse
    probs = torch.exp(scores - lse_safe[..., None])
    return torch.einsum("bhl,bhld->bhd", probs, values.to(acc)), lse


def _check_step(cache, k: torch.Tensor, v: torch.Tensor) -> None:
    expected = (cache.batch, cache.heads, cache.head_dim)
    if k.dim() != 4 or k.shape != v.shape or (k.shape[0], k.shape[2], k.shape[3]) != expected:
        raise ValueError(f"{type(cache).__name__}.append needs k, v of shape (B, n, H, D) = "
                         f"({expected[0]}, n, {expected[1]}, {expected[2]}); got {tuple(k.shape)}, "
                         f"{tuple(v.shape)}")


def _check_query(cache, q: torch.Tensor) -> None:
    if q.shape != (cache.batch, 1, cache.heads, cache.head_dim):
        raise ValueError(f"{type(cache).__name__}.attend needs q of shape (B, 1, H, D) = "
                         f"({cache.batch}, 1, {cache.heads}, {cache.head_dim}); got {tuple(q.shape)}")
    if cache.length == 0:
        raise ValueError(f"{type(cache).__name__}.attend: append the token's key and value first")


class RowCache:
    """The rows a masked pattern still needs, each tagged with its position (see module doc).

    reads(t, positions) -> Bool (H, L) or None (every cached row); keeps(t, positions) -> Bool (L,),
    the rows query t or a later one reads (t is the newest position, not yet attended), or None
    (keep every row: the pattern may read any earlier key again).
    """

    def __init__(self, batch: int, heads: int, head_dim: int, *, reads: Reads | None = None,
                 keeps: Reads | None = None, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu", scale: float | None = None):
        self.batch, self.heads, self.head_dim = batch, heads, head_dim
        self.reads, self.keeps = reads, keeps
        self.scale = head_dim ** -0.5 if scale is None else scale
        self.keys = torch.empty(batch, heads, 0, head_dim, dtype=dtype, device=device)
        self.values = torch.empty_like(self.keys)
        self.positions = torch.empty(0, dtype=torch.long, device=device)
        self.count = 0  # rows in use at the front of the buffers
        self.length = 0

    @property
    def rows_per_head(self) -> int:
        """Rows in use (the buffers may hold up to 1.25 times as many, plus 16)."""
        return self.count

    @property
    def nbytes(self) -> int:
        return sum(x.numel() * x.element_size() for x in (self.keys, self.values, self.positions))

    def append(self, k: torch.Tensor, v: torch.Tensor) -> None:
        _check_step(self, k, v)
        n = k.shape[1]
        new_positions = torch.arange(self.length, self.length + n, device=self.positions.device)
        k, v = k.transpose(1, 2).to(self.keys.dtype), v.transpose(1, 2).to(self.values.dtype)
        self.length += n
        if self.count + n > self.keys.shape[2]:  # full: drop what nobody reads again, then grow
            parts = [(self.keys[:, :, :self.count], self.values[:, :, :self.count], self.positions[:self.count]),
                     (k, v, new_positions)]
            if self.keeps is not None:
                parts = [(keys[:, :, keep], values[:, :, keep], positions[keep]) for keys, values, positions in parts
                         for keep in [self.keeps(self.length - 1, positions).nonzero().flatten()]]
            self.count = sum(positions.shape[0] for _, _, positions in parts)
            capacity = self.count + max(16, self.count // 4)  # geometric growth: amortised O(1) appends
            keys = self.keys.new_empty(self.batch, self.heads, capacity, self.head_dim)
            values, positions = torch.empty_like(keys), self.positions.new_empty(capacity)
            start = 0
            for part_keys, part_values, part_positions in parts:
                stop = start + part_positions.shape[0]
                keys[:, :, start:stop], values[:, :, start:stop] = part_keys, part_values
                positions[start:stop] = part_positions
                start = stop
            self.keys, self.values, self.positions = keys, values, positions
        else:
            self.keys[:, :, self.count:self.count + n], self.values[:, :, self.count:self.count + n] = k, v
            self.positions[self.count:self.count + n] = new_positions
            self.count += n

    def attend(self, q: torch.Tensor) -> torch.Tensor:
        _check_query(self, q)
        positions = self.positions[:self.count]
        mask = None if self.reads is None else self.reads(self.length - 1, positions)
        out, _ = softmax_rows(q[:, 0], self.keys[:, :, :self.count], self.values[:, :, :self.count],
                              self.scale, mask)
        return out[:, None].to(q.dtype)


class DilatedKVCache:
    """LongNet's bounded cache: per branch (w, r), slot j of head h holds the key at a + s + j*r,
    s = h mod r, a the start of the current segment (see module doc). Memory: B * H * D *
    sum_i ceil(w_i / r_i) keys and as many values, independent of the context length."""

    def __init__(self, batch: int, heads: int, head_dim: int, segment_lengths: Sequence[int],
                 dilation_rates: Sequence[int], *, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu", scale: float | None = None):
        self.branches = DilatedSchedule(segment_lengths, dilation_rates).branches
        self.batch, self.heads, self.head_dim = batch, heads, head_dim
        self.scale = head_dim ** -0.5 if scale is None else scale
        self.keys = [torch.zeros(batch, heads, math.ceil(w / r), head_dim, dtype=dtype, device=device)
                     for w, r in self.branches]
        self.values = [torch.zeros_like(k) for k in self.keys]
        self.length = 0

    @property
    def rows_per_head(self) -> int:
        """sum_i ceil(w_i / r_i): the bound on the rows any head keeps."""
        return sum(k.shape[2] for k in self.keys)

    @property
    def nbytes(self) -> int:
        return sum(x.numel() * x.element_size() for x in (*self.keys, *self.values))

    def prefill(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The causal outputs of a prompt (B, P, H, D) under this cache's schedule, then `append`
        of its keys and values: for a causal query the segments up to it do not depend on the
        sequence's length, so these are the outputs the forward over the cache's whole length
        gives at the prompt's positions (the schedule of a shorter forward may have fewer
        branches: longnet.schedule.paper_schedule)."""
        from .dilated_attention import dilated_attention

        if self.length:
            raise ValueError("prefill needs an empty cache (append and attend continue one)")
        segments = [w for w, _ in self.branches]
        rates = [r for _, r in self.branches]
        out = dilated_attention(q, k, v, segments, rates, causal=True, scale=self.scale)
        self.append(k, v)
        return out

    def append(self, k: torch.Tensor, v: torch.Tensor) -> None:
        """Write positions length .. end - 1; only those in each branch's last segment are kept
        (earlier ones of that segment are already in place when the cache was in it)."""
        _check_step(self, k, v)
        start, end = self.length, self.length + k.shape[1]
        for branch, keys, values in zip(self.branches, self.keys, self.values):
            r = branch.dilation_rate
            a, _ = branch.locate(end - 1)  # start of the segment of the last new position
            first = max(a, start)
            for s in branch.offsets(self.heads):  # offsets no head has are read by nobody
                p = first + (s - (first - a)) % r  # first new position on offset s's lattice
                if p >= end:
                    continue
                slot, count = (p - a) // r, len(range(p, end, r))
                keys[:, s::r, slot:slot + count] = k[:, p - start::r, s::r].transpose(1, 2)
                values[:, s::r, slot:slot + count] = v[:, p - start::r, s::r].transpose(1, 2)
        self.length = end

    def attend(self, q: torch.Tensor) -> torch.Tensor:
        """Query at t = length - 1: in each branch the heads whose offset selects t read their
        lattice's slots 0 .. (t - a) // r; the branches are merged by log-sum-exp."""
        _check_query(self, q)
        t = self.length - 1
        acc = accumulation_dtype(q.dtype)
        # per branch: (out, lse) of the heads that see t; -inf where a branch's offset misses a head
        outs = torch.zeros(len(self.branches), self.batch, self.heads, self.head_dim, dtype=acc, device=q.device)
        lses = torch.full(outs.shape[:-1], float("-inf"), dtype=acc, device=q.device)
        for i, (branch, keys, values) in enumerate(zip(self.branches, self.keys, self.values)):
            r = branch.dilation_rate
            a, s = branch.locate(t)
            slots = (t - a) // r + 1
            if s not in branch.offsets(self.heads):  # no head has this offset: the branch does not see t
                continue
            outs[i, :, s::r], lses[i, :, s::r] = softmax_rows(
                q[:, 0, s::r], keys[:, s::r, :slots], values[:, s::r, :slots], self.scale)
        # mix the branches by their softmax mass (a_i = exp(lse_i) / sum_j exp(lse_j)); a head no
        # branch selects (only without an r = 1 branch) stays 0
        lse = torch.logsumexp(lses, dim=0)
        weights = torch.exp(lses - torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse)))
        return (weights[..., None] * outs).sum(0)[:, None].to(q.dtype)


__all__ = ["DilatedKVCache", "RowCache", "softmax_rows"]
