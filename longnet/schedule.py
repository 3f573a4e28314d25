"""The dilation schedule of LongNet: branches (w_i, r_i), validated once, and the one place that
writes the dilation rule (docs/definitions.md, section 1).

The rule, for branch (w, r) over n tokens and head h:
- w is clipped to n; segments are [i*w, min((i+1)*w, n)), the last one possibly shorter;
- head h uses offset s = h mod r: in the segment starting at a it selects rows a+s, a+s+r, ...
  (below the segment's end), as queries, keys and values alike;
- so the heads that share an offset s are s, s + r, s + 2r, ... < H, and an offset s >= H is used
  by no head (its rows are in no block of that branch).

    schedule = DilatedSchedule((2048, 4096), (1, 2))    # lists are accepted and stored as tuples
    for branch in schedule.branches: w, r = branch       # Branch is a (segment_length, dilation_rate) tuple
    schedule.pairs(n, heads)                             # query-key pairs, all branches and heads
    schedule.pattern(n, heads)                           # Bool (H, n, n): keys each query sees
    schedule.uncovered_fraction(heads)                   # per branch, rows no head selects

The paper's rule for which schedule a sequence of n tokens gets: `paper_schedule(n, base)`, the
base continued by (2w, 2r) until one segment covers n; every result built from a LongNet schedule
says how it was used (`schedule_label`: paper / pinned / truncated).

Everything that needs the rule (the block plan of longnet.dilated_attention, decoding and its
cache, the FLOP count, the cost model, the variant's pattern) asks this module.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Set as AbstractSet
from dataclasses import dataclass
from typing import NamedTuple

# The paper's schedule (section 4): w = 2K..32K with r = 1, 2, 4, 6, 12.
PAPER_SEGMENT_LENGTHS = (2048, 4096, 8192, 16384, 32768)
PAPER_DILATION_RATES = (1, 2, 4, 6, 12)


def causal_pairs(n: int) -> int:
    """Query-key pairs of one causal block of n rows (a key at or before the query)."""
    return n * (n + 1) // 2


def block_pairs(rows: int, causal: bool = True) -> int:
    """Query-key pairs of one dense block of `rows` rows attending among themselves."""
    return causal_pairs(rows) if causal else rows * rows


def _check_heads(heads) -> None:
    if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1:
        raise ValueError(f"heads={heads!r} is invalid; allowed: an int >= 1")


class Branch(NamedTuple):
    """One branch (w, r) of a schedule; unpacks as `w, r = branch`."""

    segment_length: int
    dilation_rate: int

    def offset(self, head: int) -> int:
        """The offset s = head mod r of the rows `head` selects in every segment."""
        return head % self.dilation_rate

    def offsets(self, heads: int) -> range:
        """The offsets some head of `heads` uses: 0 .. min(r, heads) - 1."""
        return range(min(self.dilation_rate, heads))

    def heads_with(self, offset: int, heads: int) -> range:
        """The heads that use `offset`: offset, offset + r, ... < heads."""
        return range(offset, heads, self.dilation_rate)

    def rows(self, length: int, offset: int) -> range:
        """Rows (relative to the segment start) that `offset` selects in a segment of `length`."""
        return range(offset, length, self.dilation_rate)

    def segments(self, n: int) -> tuple[tuple[int, int, int], ...]:
        """(first start, length, count) of the segments over n tokens: the full ones of the
        clipped w = min(w, n), then the shorter last one if n is not a multiple of w."""
        w = min(self.segment_length, n)
        if w == 0:
            return ()
        full, tail = n // w, n % w
        return ((0, w, full),) + (((full * w, tail, 1),) if tail else ())

    def locate(self, t: int) -> tuple[int, int]:
        """(a, s): the start a = (t // w) * w of the segment holding position t and the offset
        s = (t - a) mod r whose rows hold it (w unclipped: the segments up to t are the same for
        every n > t, which is all a causal query at t sees)."""
        start = t // self.segment_length * self.segment_length
        return start, (t - start) % self.dilation_rate

    def pairs(self, n: int, head: int, causal: bool = True) -> int:
        """Exact query-key pairs this branch computes for one head over n tokens."""
        offset = self.offset(head)
        # every full segment has the same rows, so count one and multiply (O(1) even at 1B tokens)
        return sum(count * block_pairs(len(self.rows(length, offset)), causal)
                   for _, length, count in self.segments(n))

    def uncovered_fraction(self, heads: int, n: int | None = None) -> float:
        """Fraction of positions that are neither a query nor a key of this branch for any of
        `heads` heads: in each segment, the rows whose offset (position - a) mod r is >= heads.

        n=None: over one full segment of w (the fraction of any long sequence that is a
        multiple of w); with n: exactly over n tokens (w clipped, last segment included)."""
        _check_heads(heads)
        segments = ((0, self.segment_length, 1),) if n is None else self.segments(n)
        total = sum(count * length for _, length, count in segments)
        covered = sum(count * len(self.rows(length, offset))
                      for _, length, count in segments for offset in self.offsets(heads))
        return (total - covered) / total if total else 0.0


def _as_tuple(name: str, values) -> tuple:
    """An ordered sequence as a tuple: a set or mapping has no order to pair w_i with r_i by."""
    if isinstance(values, (str, bytes, AbstractSet, Mapping)) or not isinstance(values, Iterable):
        raise ValueError(f"{name} must be a list (or tuple) of positive integers in order, got "
                         f"{values!r}")
    return tuple(values)


@dataclass(frozen=True)
class DilatedSchedule:
    """Branches (segment_lengths[i], dilation_rates[i]), validated when built: the same number of
    each, at least one, every value an int in 1 .. 2**63 - 1 (int64 indices). Frozen and
    hashable (a cache key); lists are accepted and stored as tuples."""

    segment_lengths: tuple[int, ...] = PAPER_SEGMENT_LENGTHS
    dilation_rates: tuple[int, ...] = PAPER_DILATION_RATES

    def __post_init__(self):
        segment_lengths = _as_tuple("segment_lengths", self.segment_lengths)
        dilation_rates = _as_tuple("dilation_rates", self.dilation_rates)
        if len(segment_lengths) != len(dilation_rates):
            raise ValueError(f"segment_lengths and dilation_rates must have the same length, got "
                             f"{len(segment_lengths)} segment lengths {list(segment_lengths)} and "
                             f"{len(dilation_rates)} dilation rates {list(dilation_rates)}")
        if not segment_lengths:
            raise ValueError("dilated attention needs at least one branch (segment_lengths is empty)")
        for name, values in (("segment_lengths", segment_lengths), ("dilation_rates", dilation_rates)):
            for value in values:
                if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2 ** 63:
                    raise ValueError(f"{name} must be positive integers below 2**63 (int64 "
                                     f"indices), got {list(values)}")
        object.__setattr__(self, "segment_lengths", tuple(int(w) for w in segment_lengths))
        object.__setattr__(self, "dilation_rates", tuple(int(r) for r in dilation_rates))

    @property
    def branches(self) -> tuple[Branch, ...]:
        return tuple(Branch(w, r) for w, r in zip(self.segment_lengths, self.dilation_rates))

    def pairs(self, n: int, heads: int, causal: bool = True) -> int:
        """Exact query-key pairs of the whole schedule over n tokens, summed over heads; for
        large n about n * heads * sum_i w_i / r_i^2 (halved when causal): linear in n."""
        return sum(branch.pairs(n, head, causal) for branch in self.branches for head in range(heads))

    def uncovered_fraction(self, heads: int, n: int | None = None) -> tuple[float, ...]:
        """Per branch, the fraction of positions that are neither a query nor a key of the
        branch for any head. Head h uses offset h mod r, so in every segment the rows at offsets
        heads <= s < r are uncovered: a fraction 1 - heads / r when heads < r and r divides w,
        none when heads >= r. n as in `Branch.uncovered_fraction`."""
        return tuple(branch.uncovered_fraction(heads, n) for branch in self.branches)

    @property
    def widest_segment(self) -> int:
        """The largest segment length w (unclipped): tokens further apart never share a segment."""
        return max(self.segment_lengths)

    def extended_to(self, n: int) -> DilatedSchedule:
        """The schedule continued past its widest branch (w, r) by (2w, 2r), (4w, 4r), ... until a
        segment covers n (unchanged when one already does). Every added branch keeps the widest
        branch's w / r rows per segment, so its cost per token, n w / r^2 per head, is half the
        branch before it: the total stays linear in n. See `paper_schedule`."""
        segments, rates = list(self.segment_lengths), list(self.dilation_rates)
        w, r = max(zip(segments, rates))  # continued from the widest branch, whatever the order
        while w < n:
            w, r = 2 * w, 2 * r
            segments.append(w)
            rates.append(r)
        return DilatedSchedule(segments, rates)

    def pattern(self, n: int, heads: int, causal: bool = True):
        """Bool (heads, n, n): True where query i gets information from key j in some branch
        (same segment of the clipped w, both rows selected by head h's offset h mod r)."""
        import torch

        _check_heads(heads)
        i = torch.arange(n)[:, None]
        j = torch.arange(n)[None, :]
        union = torch.zeros(heads, n, n, dtype=torch.bool)
        for branch in self.branches:
            w, r = min(branch.segment_length, n), branch.dilation_rate
            if w == 0:
                continue
            same_segment = i // w == j // w
            for h in range(heads):
                s = branch.offset(h)
                union[h] |= same_segment & ((i % w) % r == s) & ((j % w) % r == s)
        return union & (j <= i) if causal else union


PAPER_SCHEDULE = DilatedSchedule()

# How a LongNet schedule is used at a length n, in every table row built from one (`schedule`):
SCHEDULE_PAPER = "paper"          # extended by the paper's rule until one segment covers n
SCHEDULE_PINNED = "pinned"        # used as given, and its widest segment covers n anyway
SCHEDULE_TRUNCATED = "truncated"  # used as given, and its widest segment stops short of n
SCHEDULE_LABELS = (SCHEDULE_PAPER, SCHEDULE_PINNED, SCHEDULE_TRUNCATED)


def paper_schedule(n: int, base: DilatedSchedule = PAPER_SCHEDULE) -> DilatedSchedule:
    """The paper's schedule for a sequence of n tokens: `base` (by default its Table 2 schedule,
    w = 2K..32K with r = 1, 2, 4, 6, 12), continued by (2w, 2r), (4w, 4r), ... until one segment
    covers n.

    The paper's rule is that the widest segment covers the sequence: its Figure 5 models have
    "up to 3 segment lengths: 2048, the tokens per device, and the full sequence length" (section
    3.2), and Table 2's widest segment equals the longest training length. Which branches are
    added is not fixed by the paper (Figure 5's dilation rates are not stated), so the suite uses
    the (2w, 2r) extension (docs/schedule.md in the repository): every rate is defined, every added branch keeps
    the last branch's w / r rows per segment (so decoding caches grow by one branch of constant
    size per doubling of the context: logarithmically), and its per-token cost halves with each
    doubling (total cost linear in n, about 5% above the base schedule's for the paper's).
    Below the widest segment the base is returned unchanged (w is clipped to n where it runs)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"paper_schedule: n={n!r} is invalid; allowed: an int >= 0")
    return base.extended_to(n)


def schedule_label(schedule: DilatedSchedule, n: int, extend: bool) -> str:
    """`paper` when the schedule is extended by the paper's rule at n (`paper_schedule`), else
    `pinned` when it is used as given and its widest segment covers n, `truncated` when not."""
    if extend:
        return SCHEDULE_PAPER
    return SCHEDULE_PINNED if schedule.widest_segment >= n else SCHEDULE_TRUNCATED

__all__ = ["Branch", "DilatedSchedule", "PAPER_DILATION_RATES", "PAPER_SCHEDULE",
           "PAPER_SEGMENT_LENGTHS", "SCHEDULE_LABELS", "SCHEDULE_PAPER", "SCHEDULE_PINNED",
           "SCHEDULE_TRUNCATED", "block_pairs", "causal_pairs", "paper_schedule", "schedule_label"]
