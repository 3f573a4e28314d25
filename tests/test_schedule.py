"""longnet.schedule: validation once at build time, and the rule's operations against brute force."""
import pytest
import torch

from longnet.schedule import Branch, DilatedSchedule, PAPER_SCHEDULE


@pytest.mark.parametrize("segments, rates, message", [
    ([4, 8], [1], "same length"),
    ([], [], "at least one branch"),
    ([4, 0], [1, 2], "segment_lengths must be positive integers"),
    ([4, 8], [1, -2], "dilation_rates must be positive integers"),
    ([4.5], [1], "positive integers"),
    ([True], [1], "positive integers"),
    (4, [1], "must be a list"),
])
def test_bad_schedules_raise_naming_the_field(segments, rates, message):
    with pytest.raises(ValueError, match=message):
        DilatedSchedule(segments, rates)


def test_frozen_hashable_and_stored_as_tuples():
    schedule = DilatedSchedule([4, 8], [1, 2])
    assert schedule == DilatedSchedule((4, 8), (1, 2)) and hash(schedule) == hash(DilatedSchedule((4, 8), (1, 2)))
    assert schedule.segment_lengths == (4, 8) and schedule.branches == ((4, 1), (8, 2))
    with pytest.raises(AttributeError):
        schedule.segment_lengths = (2,)
    assert PAPER_SCHEDULE.segment_lengths == (2048, 4096, 8192, 16384, 32768)


def selected(n, heads, w, r):
    """Brute force: (head, position) pairs the rule selects."""
    w = min(w, n)
    return {(h, p) for h in range(heads) for p in range(n) if (p % w) % r == h % r}


@pytest.mark.parametrize("n, heads, w, r", [(20, 3, 8, 3), (20, 2, 8, 4), (7, 5, 16, 2), (30, 1, 10, 10)])
def test_uncovered_fraction_matches_brute_force(n, heads, w, r):
    covered = {p for _, p in selected(n, heads, w, r)}
    assert Branch(w, r).uncovered_fraction(heads, n) == pytest.approx(1 - len(covered) / n)
    full = {p for _, p in selected(w, heads, w, r)}
    assert DilatedSchedule([w], [r]).uncovered_fraction(heads) == pytest.approx((1 - len(full) / w,))


def test_uncovered_fraction_of_the_rule():
    # 2 heads, r = 4: offsets 2 and 3 are nobody's, half of every segment; r = 1 or 2 covers all
    assert DilatedSchedule([8, 8, 8], [1, 2, 4]).uncovered_fraction(2) == (0.0, 0.0, 0.5)
    with pytest.raises(ValueError, match="heads"):
        PAPER_SCHEDULE.uncovered_fraction(0)


@pytest.mark.parametrize("causal", [True, False])
def test_pairs_and_pattern_agree_with_brute_force(causal):
    schedule, n, heads = DilatedSchedule([4, 6], [1, 3]), 13, 2
    expected = 0
    for w, r in schedule.branches:
        for h in range(heads):
            rows = sorted(p for hh, p in selected(n, heads, w, r) if hh == h)
            expected += sum(1 for i in rows for j in rows
                            if i // min(w, n) == j // min(w, n) and (j <= i or not causal))
    assert schedule.pairs(n, heads, causal) == expected
    pattern = schedule.pattern(n, heads, causal)
    assert pattern.shape == (heads, n, n) and pattern.dtype == torch.bool
    for h in range(heads):
        union = {(i, j) for w, r in schedule.branches for i in range(n) for j in range(n)
                 if (h, i) in selected(n, heads, w, r) and (h, j) in selected(n, heads, w, r)
                 and i // min(w, n) == j // min(w, n) and (j <= i or not causal)}
        assert {tuple(ij) for ij in pattern[h].nonzero().tolist()} == union


def test_extended_keeps_w_over_r():
    extended = DilatedSchedule([4, 8], [1, 2]).extended_to(40)
    assert extended.segment_lengths == (4, 8, 16, 32, 64) and extended.dilation_rates == (1, 2, 4, 8, 16)
