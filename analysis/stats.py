"""Statistics over training seeds: intervals for one model and paired comparisons of two.

Every trained cell runs once per seed; a seed sets the initialisation and the order of the
training data, and every model is evaluated on the same test tokens. So

- one model's value is reported as the mean over seeds with a 95% Student-t interval,
  mean +- t(0.975, n-1) * sd / sqrt(n) (sd with n - 1 in the denominator);
- two models are compared seed by seed (seed s of A against seed s of B: the same data order
  where their lengths agree, always the same test tokens) with a paired t-test on the
  differences: the mean difference, its 95% t interval and the two-sided p-value.

A claim "A is better than B" then *holds* when the interval of (B - A) lies above zero
(p < 0.05 in the claimed direction), *does not hold* when it lies below zero, and *cannot tell*
otherwise (or with fewer than 2 seeds). Perplexities are compared as test losses (nats per
token, log perplexity) and intervals of perplexity are the loss intervals exponentiated, so the
reported mean perplexity is the geometric mean over seeds.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats

LEVEL = 0.95
HOLDS, DOES_NOT_HOLD, CANNOT_TELL = "holds", "does not hold", "cannot tell"


def t_interval(values, level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, low, high): the Student-t interval of the mean of `values` (nan bounds for n < 2)."""
    x = np.asarray(values, dtype=float)
    mean = float(x.mean()) if len(x) else math.nan
    if len(x) < 2:
        return mean, math.nan, math.nan
    half = stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return mean, mean - half, mean + half


def paired_test(better, worse, level: float = LEVEL) -> dict:
    """Paired t-test of the claim "`better` has the lower value", seed by seed.

    Returns n, mean_diff (worse - better: positive when the claim is right), ci_low, ci_high,
    p_value (two-sided; nan when every difference is equal or n < 2) and the verdict."""
    a, b = np.asarray(better, dtype=float), np.asarray(worse, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired_test: {len(a)} and {len(b)} values; pairs need equal counts")
    diff = b - a
    mean, low, high = t_interval(diff, level)
    p = math.nan
    if len(diff) >= 2 and np.ptp(diff) > 0:
        p = float(stats.ttest_rel(b, a).pvalue)
    elif len(diff) >= 2 and mean != 0:  # identical non-zero differences: no doubt at all
        p, low, high = 0.0, mean, mean
    if not (low == low and high == high):  # nan bounds
        verdict = CANNOT_TELL
    elif low > 0:
        verdict = HOLDS
    elif high < 0:
        verdict = DOES_NOT_HOLD
    else:
        verdict = CANNOT_TELL
    return dict(n=len(diff), mean_diff=mean, ci_low=low, ci_high=high, p_value=p,
                verdict=verdict)
