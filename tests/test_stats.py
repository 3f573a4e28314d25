"""Intervals over seeds, paired comparisons, and the seeded Table 2 / claims / model-size tables."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from analysis.stats import CANNOT_TELL, DOES_NOT_HOLD, HOLDS, paired_test, t_interval
from analysis.tables import claims, model_size, table2


def test_t_interval_is_the_students_t_interval_of_the_mean():
    x = [1.0, 2.0, 4.0]
    mean, low, high = t_interval(x)
    half = scipy_stats.t.ppf(0.975, 2) * np.std(x, ddof=1) / math.sqrt(3)
    assert mean == pytest.approx(7 / 3)
    assert (low, high) == pytest.approx((7 / 3 - half, 7 / 3 + half))
    assert math.isnan(t_interval([1.0])[1])  # one seed: no interval


def test_paired_test_verdicts_follow_the_interval_of_the_differences():
    better = [2.00, 2.10, 2.05]
    assert paired_test(better, [2.20, 2.31, 2.24])["verdict"] == HOLDS
    assert paired_test(better, [1.90, 2.01, 1.93])["verdict"] == DOES_NOT_HOLD
    noisy = paired_test(better, [2.30, 1.90, 2.06])
    assert noisy["verdict"] == CANNOT_TELL and noisy["ci_low"] < 0 < noisy["ci_high"]
    result = paired_test(better, [2.20, 2.31, 2.24])
    assert result["p_value"] == pytest.approx(
        scipy_stats.ttest_rel([2.20, 2.31, 2.24], better).pvalue)
    assert paired_test([1.0], [2.0])["verdict"] == CANNOT_TELL  # one pair decides nothing
    with pytest.raises(ValueError, match="equal counts"):
        paired_test([1.0, 2.0], [1.0])


def seeded_perplexity(cells):
    """Per-seed perplexity rows: {(variant, train_len, eval_len): [loss per seed]}."""
    return pd.DataFrame([dict(variant=v, train_len=n, eval_len=e, seed=s, loss=loss,
                              perplexity=math.exp(loss))
                         for (v, n, e), losses in cells.items() for s, loss in enumerate(losses)])


VARIANTS = [dict(name="longnet", paper_model="LongNet"),
            dict(name="sparse_fixed", paper_model="Sparse Transformer"),
            dict(name="vanilla", paper_model="Transformer")]


def test_table2_keeps_one_row_per_seed_and_adds_the_geometric_mean_with_its_interval():
    losses = [2.0, 2.1, 2.3]
    table = table2(seeded_perplexity({("longnet", 512, 512): losses}), VARIANTS, 16)
    per_seed = table[table["statistic"] == "seed"]
    assert sorted(per_seed["seed"]) == [0, 1, 2]
    mean = table[table["statistic"] == "mean"].iloc[0]
    m, low, high = t_interval(losses)
    assert mean["perplexity_mean"] == pytest.approx(math.exp(m))
    assert (mean["ci_low"], mean["ci_high"]) == pytest.approx((math.exp(low), math.exp(high)))
    assert mean["n_seeds"] == 3 and pd.isna(mean["seed"]) and pd.isna(mean["perplexity"])
    assert mean["paper_perplexity"] == 3.24  # the paper's LongNet 8K at 8K, beside the aggregate


def test_claims_pair_seeds_and_decide_each_cell():
    cells = {("longnet", 2048, 512): [2.0, 2.1, 2.05], ("sparse_fixed", 2048, 512): [2.2, 2.31, 2.24],
             ("longnet", 2048, 2048): [2.0, 2.1, 2.05], ("sparse_fixed", 2048, 2048): [2.3, 1.9, 2.06],
             ("vanilla", 128, 512): [1.9, 2.01, 1.93], ("vanilla", 128, 128): [1.0, 1.0, 1.0],
             ("longnet", 2048, 128): [2.0, 2.0, 2.0], ("sparse_fixed", 2048, 128): [2.5, 2.5, 2.5]}
    table = table2(seeded_perplexity(cells), VARIANTS, 16)
    found = claims(table, VARIANTS).set_index(["claim", "worse", "eval_len"])
    sparse = "longnet beats sparse_fixed at equal lengths"
    assert found.loc[(sparse, "sparse_fixed", 512), "verdict"] == HOLDS
    assert found.loc[(sparse, "sparse_fixed", 2048), "verdict"] == CANNOT_TELL
    assert found.loc[(sparse, "sparse_fixed", 128), "verdict"] == HOLDS  # equal differences
    beyond = "longnet beats vanilla beyond vanilla's training length"
    assert found.loc[(beyond, "vanilla", 512), "verdict"] == DOES_NOT_HOLD
    assert (beyond, "vanilla", 128) not in found.index  # not beyond vanilla's 128
    assert found.loc[(sparse, "sparse_fixed", 512), "mean_diff"] == pytest.approx(
        np.mean([0.2, 0.21, 0.19]))


def test_claims_leave_out_the_model_size_entries():
    """A claim compares patterns at one model size: a narrower LongNet of the model-size study is
    not set against the Sparse Transformer."""
    cells = {("longnet", 2048, 512): [2.0, 2.1, 2.05], ("sparse_fixed", 2048, 512): [2.2, 2.31, 2.24],
             ("longnet_d48", 2048, 512): [2.9, 3.0, 2.95]}
    variants = VARIANTS + [dict(name="longnet", id="longnet_d48", model_overrides={"d_model": 48})]
    found = claims(table2(seeded_perplexity(cells), variants, 16), variants)
    assert set(found["better"]) == {"longnet"} and len(found) == 1


def test_model_size_fits_a_power_law_to_the_seed_means():
    params = {"small": 1e5, "mid": 4e5, "big": 1.6e6}
    cells = {(v, 512, 512): [3.0 * p ** -0.1 * f for f in (0.99, 1.0, 1.01)]
             for v, p in params.items()}
    variants = [dict(name="longnet", id=v) for v in params]
    table = model_size(table2(seeded_perplexity(cells), variants), variants, params, 512)
    assert len(table) == 9 and set(table["params"]) == set(params.values())
    assert table["fit_exponent"].iloc[0] == pytest.approx(0.1, abs=1e-3)
    assert table["fit_coefficient"].iloc[0] == pytest.approx(3.0, rel=0.01)
    assert model_size(table, variants, params, None).empty
