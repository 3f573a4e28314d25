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


# ---- the paper's rule: the widest segment covers the sequence ----------------------------------

def test_paper_schedule_extends_by_doubling_until_a_segment_covers_n():
    from longnet.schedule import PAPER_SCHEDULE, paper_schedule

    assert paper_schedule(32768) == PAPER_SCHEDULE  # Table 2's schedule already covers 32K
    assert paper_schedule(100) == PAPER_SCHEDULE    # shorter: unchanged, w clipped where it runs
    at_1m = paper_schedule(2 ** 20)
    assert at_1m.segment_lengths == PAPER_SCHEDULE.segment_lengths + tuple(
        32768 * 2 ** i for i in range(1, 6))
    assert at_1m.dilation_rates == PAPER_SCHEDULE.dilation_rates + tuple(12 * 2 ** i for i in range(1, 6))
    assert at_1m.widest_segment == 2 ** 20
    assert paper_schedule(2 ** 20 + 1).widest_segment == 2 ** 21  # covers, never stops short
    # the recall benchmark's base at its length 64: the (8, 16, 32, 64) x (1, 2, 4, 8)
    base = DilatedSchedule((8, 16, 32), (1, 2, 4))
    assert paper_schedule(64, base) == DilatedSchedule((8, 16, 32, 64), (1, 2, 4, 8))
    # every added branch has the last branch's rows per segment: cost per token halves each time
    for (w, r), (w2, r2) in zip(at_1m.branches[4:], at_1m.branches[5:]):
        assert (w2, r2) == (2 * w, 2 * r)
    for bad in (-1, 2.0, True):
        with pytest.raises(ValueError, match="paper_schedule"):
            paper_schedule(bad)


def test_schedule_labels_say_how_a_schedule_was_used():
    from longnet.schedule import schedule_label

    schedule = DilatedSchedule((8, 16), (1, 2))
    assert schedule_label(schedule, 64, extend=True) == "paper"
    assert schedule_label(schedule, 16, extend=False) == "pinned"
    assert schedule_label(schedule, 17, extend=False) == "truncated"


def test_the_longnet_variant_runs_the_paper_rule_unless_pinned():
    import torch

    from longnet.dilated_attention import dilated_attention
    from longnet.variants import build, schedule_columns

    q, k, v = torch.randn(3, 1, 64, 8, 4, dtype=torch.float64).unbind(0)
    faithful = build("longnet", num_heads=8, segment_lengths=[8, 16, 32], dilation_rates=[1, 2, 4])
    pinned = build("longnet", num_heads=8, segment_lengths=[8, 16, 32], dilation_rates=[1, 2, 4],
                   extend=False)
    torch.testing.assert_close(faithful(q, k, v), dilated_attention(q, k, v, [8, 16, 32, 64], [1, 2, 4, 8]))
    torch.testing.assert_close(pinned(q, k, v), dilated_attention(q, k, v, [8, 16, 32], [1, 2, 4]))
    # the faithful pattern connects tokens 56 apart (one segment of 64), the truncated one cannot
    assert faithful.pattern(64)[:, 63, 7].any() and not pinned.pattern(64)[:, 63, 7].any()
    assert faithful.flops(64, 4) == DilatedSchedule((8, 16, 32, 64), (1, 2, 4, 8)).pairs(64, 8) * 4 * 4
    assert schedule_columns(faithful, 64) == dict(schedule="paper", widest_segment=64)
    assert schedule_columns(pinned, 64) == dict(schedule="truncated", widest_segment=32)
    assert schedule_columns(pinned, 32) == dict(schedule="pinned", widest_segment=32)
    vanilla = schedule_columns(build("vanilla", num_heads=8), 64)
    assert vanilla["schedule"] == "" and vanilla["widest_segment"] != vanilla["widest_segment"]
    # decoding with max_len covers max_len: the cache grows by one constant-size branch per doubling
    rows = [faithful.new_cache(1, 4, max_len=n).rows_per_head for n in (32, 64, 128, 256)]
    assert rows == [8 * 3, 8 * 4, 8 * 5, 8 * 6]
