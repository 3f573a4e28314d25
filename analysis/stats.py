"""Statistics over training seeds: one cell's interval, one-sided tests of a claim, Holm's
adjustment over the pre-registered family, and the seeds a test needs.

Every trained cell runs once per training seed; a seed sets the initialisation and the order of
the training data, and every model is scored on the same test tokens (the evaluation's sampling
seed is one for all models). Losses are in nats per token; perplexities are exp(loss), so a mean
perplexity is the geometric mean over seeds and its interval is the loss interval exponentiated.

One cell (Table 2's mean rows, `cell_interval`)
    Seed i's test loss is L_i = mu + t_i + e_i: t_i the training seed's effect (variance
    sigma_t^2), e_i the test-set sampling error of that model (variance se_i^2, its `loss_se`:
    the standard error of the model's mean loss over its evaluation chunks). All seeds are scored
    on the *same* chunks, so the e_i are correlated (correlation rho >= 0: a hard chunk is hard
    for every seed). The seed spread s^2 estimates sigma_t^2 + (1 - rho) se^2: it holds only the
    part of the test noise that differs between seeds, and the shared part rho se^2 does not
    average out over seeds. So

        Var(cell mean) = s^2 / n + rho * mean(se_i^2)  <=  s_seed^2 / n + eval_se^2,
        eval_se^2 = mean(loss_se_i^2),

    and the suite uses the bound (rho = 1: not knowing rho, it assumes the whole test noise is
    shared, the conservative end). The interval is mean +- t(n - 1) sqrt(s^2/n + eval_se^2):
    the eval term has many chunks behind it and is treated as known, and the t quantile keeps
    the seed term's n - 1 degrees of freedom (a Satterthwaite df would grow with the known term
    and could make the interval *narrower* than the seed-only one; n - 1 never does). No loss_se
    column means eval_se = 0: the interval is then the plain Student-t interval over seeds,
    conditional on the test set.

A claim ("`better` has the lower value than `worse`", `one_sided`)
    Tested one-sided in the claimed direction at alpha = 0.05: H1 is mean(worse - better) > 0.
    The two cells are compared by
    - a paired t-test on the per-seed differences (seed s against seed s) where the pairing has a
      basis: the two models share their initialisation and data order, i.e. the same training
      seeds, training length and tokens per step (`choose_test`);
    - Welch's t-test otherwise (e.g. LongNet at 2048 against vanilla at 128, or LongNet at 2048
      against LongNet at 512: the same seed draws different windows there).
    Test noise enters as a known variance `eval_var` added to the seed term (the same bound as
    above: whole-shared across seeds; for a difference of two models scored on the same chunks
    the sum of their variances, which bounds the difference's as long as their chunk losses are
    not negatively correlated, and overstates it by as much as they are positively correlated); df is that of the seed term (n - 1 paired,
    Welch-Satterthwaite over the two groups for Welch). p_value is the one-sided
    p-value of the claim, p_opposite that of the opposite direction; ci_low / ci_high are the
    two one-sided 95% bounds (together a 90% two-sided interval), so ci_low > 0 exactly when
    p_value < 0.05 and ci_high < 0 exactly when p_opposite < 0.05.

A family of claims (`holm`, `verdict`)
    The pre-registered primary tests form one family; their p-values are adjusted by Holm's
    step-down method (strong control of the family-wise error at 0.05). A primary claim
    *holds* if its adjusted p-value is < 0.05, *does not hold* if the opposite one-sided test,
    Holm-adjusted over the family in the same way, is < 0.05, and *cannot tell* otherwise.
    Benjamini-Hochberg (false discovery rate) is computed beside it for reference only.

Power (`power`, `seeds_needed`)
    From a measured spread (the sd of the paired differences, or each group's sd for Welch) and
    the test-set variance, the smallest number of seeds per cell for which the one-sided test at
    alpha = 0.05 detects a true difference of `delta` (default 0.02 nats) with probability 0.8,
    from the noncentral t distribution (exact for the paired test without test noise; with the
    Welch-Satterthwaite df of the seed terms for Welch). Test-set noise shared by all seeds
    does not fall with more seeds: where it alone hides `delta`, no number of seeds is enough
    (inf; more test tokens are).
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats

LEVEL = 0.95
ALPHA = 0.05  # one-sided, every test of a claim
POWER = 0.8
MIN_EFFECT = 0.02  # nats per token: the difference the power rule is sized for
HOLDS, DOES_NOT_HOLD, CANNOT_TELL = "holds", "does not hold", "cannot tell"
EXPLORATORY = "exploratory"
PAIRED, WELCH, SLOPE = "paired_t", "welch", "slope_t"


def t_interval(values, level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, low, high): the Student-t interval of the mean of `values` (nan bounds for n < 2)."""
    x = np.asarray(values, dtype=float)
    mean = float(x.mean()) if len(x) else math.nan
    if len(x) < 2:
        return mean, math.nan, math.nan
    half = stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return mean, mean - half, mean + half


def satterthwaite_df(parts) -> float:
    """Welch-Satterthwaite degrees of freedom of a sum of variance estimates: `parts` is a list
    of (variance, df); a part with df = inf (a known variance) adds to the sum, not to the
    denominator. inf when every part is known, nan when the sum is 0."""
    total = sum(v for v, _ in parts)
    denominator = sum(v * v / df for v, df in parts if math.isfinite(df) and v > 0)
    if total <= 0:
        return math.nan
    return math.inf if denominator == 0 else total * total / denominator


def _eval_var(values, n: int) -> float:
    """Mean of per-seed test-set variances (scalar or array; None or nan -> 0)."""
    if values is None:
        return 0.0
    v = np.broadcast_to(np.asarray(values, dtype=float), (n,)) if n else np.zeros(0)
    v = np.where(np.isfinite(v), v, 0.0)
    return float(v.mean()) if len(v) else 0.0


def cell_interval(losses, loss_se=None, level: float = LEVEL) -> dict:
    """One cell's mean test loss over seeds with the interval that includes test-set noise.

    losses: the seeds' test losses; loss_se: each seed's standard error of its mean test loss
    over the evaluation chunks (None: not measured, taken as 0). Returns mean, low, high (the
    two-sided `level` interval mean +- t(n - 1) sqrt(seed_sd^2 / n + eval_se^2)), seed_sd
    (sd over seeds, n - 1), eval_se (sqrt(mean(loss_se^2))) and df. See the module docstring for why eval_se^2 is not divided by n."""
    x = np.asarray(losses, dtype=float)
    n = len(x)
    mean = float(x.mean()) if n else math.nan
    eval_var = _eval_var(loss_se if loss_se is None else np.square(np.asarray(loss_se, float)), n)
    out = dict(mean=mean, low=math.nan, high=math.nan, seed_sd=math.nan,
               eval_se=math.sqrt(eval_var), df=math.nan)
    if n < 2:
        return out
    sd = float(x.std(ddof=1))
    var = sd * sd / n + eval_var
    df = n - 1
    half = 0.0 if var == 0 else stats.t.ppf(0.5 + level / 2, df) * math.sqrt(var)
    return dict(out, low=mean - half, high=mean + half, seed_sd=sd, df=df)


def choose_test(train_len_a, train_len_b, seeds_a, seeds_b, tokens_per_step_a=None,
                tokens_per_step_b=None) -> str:
    """PAIRED ("paired_t") where seed s of one cell and seed s of the other share their
    initialisation and data order: the same training length, the same tokens per step (None:
    not recorded; the pipeline trains every language model from one training section, so it is
    then taken as equal) and the same set of at least 2 training seeds; WELCH ("welch")
    otherwise."""
    same_step = (tokens_per_step_a is None or tokens_per_step_b is None
                 or tokens_per_step_a == tokens_per_step_b)
    seeds_a, seeds_b = set(seeds_a), set(seeds_b)
    if train_len_a == train_len_b and same_step and seeds_a == seeds_b and len(seeds_a) >= 2:
        return PAIRED
    return WELCH


def _one_sided_from(mean, se, df, alpha) -> dict:
    """p-values of mean > 0 and mean < 0 and the two one-sided (1 - alpha) bounds."""
    if not (se == se and df == df):
        return dict(p_value=math.nan, p_opposite=math.nan, ci_low=math.nan, ci_high=math.nan)
    if se == 0:  # every difference equal and no test noise: no doubt at all
        p = math.nan if mean == 0 else float(mean < 0)
        return dict(p_value=p, p_opposite=math.nan if mean == 0 else 1 - p, ci_low=mean,
                    ci_high=mean)
    t = mean / se
    q = stats.t.ppf(1 - alpha, df)
    return dict(p_value=float(stats.t.sf(t, df)), p_opposite=float(stats.t.cdf(t, df)),
                ci_low=mean - q * se, ci_high=mean + q * se)


def one_sided(better, worse, test: str, better_eval_var=None, worse_eval_var=None,
              alpha: float = ALPHA) -> dict:
    """One-sided test of the claim "`better` has the lower value than `worse`" (H1: mean of
    worse - better > 0), by `test`:

    - PAIRED: `better` and `worse` are aligned by seed; the per-seed differences worse - better
      are tested against 0 (SLOPE, a one-sample test of per-seed statistics, is the same with
      `worse` the statistic and `better` zeros);
    - WELCH: two independent groups (any sizes >= 2).

    better_eval_var, worse_eval_var: per-seed test-set variance of each side's value (scalar or
    per seed; None: 0), added as mean(better) + mean(worse) to the variance of the difference
    (module docstring).

    Returns test, n (pairs; both groups' seeds for Welch), n_better, n_worse, n_wins (pairs in
    which `better` was lower; nan for Welch), mean_diff (worse - better: positive supports the
    claim), ci_low, ci_high (one-sided 1 - alpha bounds), seed_sd (sd of the paired differences;
    Welch: sqrt(sd_better^2 + sd_worse^2), the spread of a difference of one seed of each),
    sd_better, sd_worse (Welch only), eval_se (sqrt of the test-noise variance of the
    difference), df, p_value, p_opposite."""
    a, b = np.asarray(better, dtype=float), np.asarray(worse, dtype=float)
    out = dict(test=test, n_better=len(a), n_worse=len(b), n_wins=math.nan, sd_better=math.nan,
               sd_worse=math.nan, seed_sd=math.nan, df=math.nan)
    if test in (PAIRED, SLOPE):
        if a.shape != b.shape:
            raise ValueError(f"one_sided: {len(a)} and {len(b)} values; pairs need equal counts")
        n = len(a)
        diff = b - a
        mean = float(diff.mean()) if n else math.nan
        eval_var = _eval_var(better_eval_var, n) + _eval_var(worse_eval_var, n)
        out.update(n=n, n_wins=int((diff > 0).sum()), mean_diff=mean, eval_se=math.sqrt(eval_var))
        if n < 2:
            return dict(out, **_one_sided_from(mean, math.nan, math.nan, alpha))
        sd = float(diff.std(ddof=1))
        seed_var = sd * sd / n
        df = n - 1
        out.update(seed_sd=sd, df=df)
        return dict(out, **_one_sided_from(mean, math.sqrt(seed_var + eval_var),
                                           math.inf if seed_var + eval_var == 0 else df, alpha))
    if test != WELCH:
        raise ValueError(f"one_sided: unknown test {test!r} (one of {PAIRED}, {WELCH}, {SLOPE})")
    na, nb = len(a), len(b)
    mean = float(b.mean() - a.mean()) if na and nb else math.nan
    eval_var = _eval_var(better_eval_var, na) + _eval_var(worse_eval_var, nb)
    out.update(n=na + nb, mean_diff=mean, eval_se=math.sqrt(eval_var))
    if na < 2 or nb < 2:
        return dict(out, **_one_sided_from(mean, math.nan, math.nan, alpha))
    sa, sb = float(a.std(ddof=1)), float(b.std(ddof=1))
    va, vb = sa * sa / na, sb * sb / nb
    total = va + vb + eval_var
    df = satterthwaite_df([(va, na - 1), (vb, nb - 1)]) if va + vb > 0 else math.inf
    out.update(sd_better=sa, sd_worse=sb, seed_sd=math.hypot(sa, sb), df=df)
    return dict(out, **_one_sided_from(mean, math.sqrt(total), math.inf if total == 0 else df,
                                       alpha))


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values: sorted ascending p_(1) <= ... <= p_(m),
    adjusted p_(i) = max over j <= i of min(1, (m - j + 1) p_(j)). A nan (a test that could not
    be computed) counts in m, as if its p were 1, and stays nan."""
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    filled = np.where(np.isnan(p), 1.0, p)
    order = np.argsort(filled, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * filled[order]))
    out = np.empty(m)
    out[order] = adjusted
    return np.where(np.isnan(p), np.nan, out)


def benjamini_hochberg(p_values) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (false discovery rate): adjusted p_(i) =
    min over j >= i of min(1, m p_(j) / j). nan as in holm."""
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    filled = np.where(np.isnan(p), 1.0, p)
    order = np.argsort(filled, kind="stable")
    scaled = filled[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum(1.0, np.minimum.accumulate(scaled[::-1])[::-1])
    out = np.empty(m)
    out[order] = adjusted
    return np.where(np.isnan(p), np.nan, out)


def verdict(p_adjusted, p_opposite_adjusted, alpha: float = ALPHA) -> str:
    """holds if p_adjusted < alpha, does not hold if p_opposite_adjusted < alpha, cannot tell
    otherwise (nan p-values: cannot tell)."""
    if p_adjusted == p_adjusted and p_adjusted < alpha:
        return HOLDS
    if p_opposite_adjusted == p_opposite_adjusted and p_opposite_adjusted < alpha:
        return DOES_NOT_HOLD
    return CANNOT_TELL


def power(n: int, sd: float, delta: float = MIN_EFFECT, test: str = PAIRED,
          sd_worse: float | None = None, eval_var: float = 0.0, alpha: float = ALPHA) -> float:
    """Probability that the one-sided test at `alpha` with `n` seeds per cell finds a true
    difference `delta` > 0: 1 - F_nct(t_(1-alpha, df); df, delta / se). PAIRED / SLOPE: `sd` is
    the sd of the per-seed differences, se^2 = sd^2 / n + eval_var, df = n - 1; WELCH: `sd`,
    `sd_worse` the two groups' sds, n seeds each,
    se^2 = (sd^2 + sd_worse^2) / n + eval_var, df Welch-Satterthwaite of the two seed terms."""
    if n < 2 or not (sd == sd) or (test == WELCH and not (sd_worse is not None
                                                           and sd_worse == sd_worse)):
        return math.nan
    if test == WELCH:
        parts = [(sd * sd / n, n - 1), (sd_worse * sd_worse / n, n - 1)]
    else:
        parts = [(sd * sd / n, n - 1)]
    var = sum(v for v, _ in parts) + eval_var
    if var == 0:
        return 1.0 if delta > 0 else math.nan
    df = satterthwaite_df(parts) if var > eval_var else math.inf
    return float(stats.nct.sf(stats.t.ppf(1 - alpha, df), df, delta / math.sqrt(var)))


def seeds_needed(sd: float, delta: float = MIN_EFFECT, test: str = PAIRED,
                 sd_worse: float | None = None, eval_var: float = 0.0, alpha: float = ALPHA,
                 target: float = POWER, max_seeds: int = 1000) -> float:
    """The smallest n >= 2 seeds per cell with power(n, ...) >= `target` (see power): nan when
    the spread is unknown, inf when no n up to max_seeds reaches it (with eval_var, the shared
    test-set noise alone can hide delta: then more test tokens, not seeds, are what helps)."""
    if not (sd == sd) or (test == WELCH and not (sd_worse is not None and sd_worse == sd_worse)):
        return math.nan
    if eval_var > 0 and stats.norm.sf(stats.norm.ppf(1 - alpha) - delta / math.sqrt(eval_var)) \
            < target:
        return math.inf  # even infinitely many seeds leave eval_var: the limit is a z-test
    for n in range(2, max_seeds + 1):
        if power(n, sd, delta, test, sd_worse, eval_var, alpha) >= target:
            return n
    return math.inf
