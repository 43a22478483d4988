"""Statistics against numpy/scipy on hand-made paired samples, including analytic cases."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from nnunet_ext.benchmark import stats


def _cases(values):
    return {f"case_{i}": float(v) for i, v in enumerate(values)}


@pytest.mark.parametrize("shift, n", [(0.1, 8), (-0.25, 12), (0.0, 5)])
def test_constant_shift_gives_degenerate_ci_at_the_shift(shift, n):
    rng = np.random.default_rng(n)
    base = rng.uniform(0.2, 0.8, n)
    result = stats.paired_comparison(_cases(base + shift), _cases(base), n_resamples=1000, seed=0)
    assert result["diff_mean"] == pytest.approx(shift, abs=1e-12)
    assert result["paired_ci"] == pytest.approx([shift, shift], abs=1e-12)
    assert result["n_pairs"] == n
    if shift == 0.0:
        assert math.isnan(result["wilcoxon_p"])  # every difference is zero: no test
    else:  # all n signed ranks on one side: exact two-sided p = 2 / 2^n
        assert result["wilcoxon_p"] == pytest.approx(2.0 / 2 ** n)


@pytest.mark.parametrize("seed, n", [(0, 10), (1, 25), (2, 40)])
def test_bootstrap_matches_scipy_and_is_reproducible(seed, n):
    x = np.random.default_rng(seed).normal(0.5, 0.2, n)
    ours = stats.bootstrap_ci(x, 0.95, 2000, seed=7)
    reference = sps.bootstrap((x,), np.mean, n_resamples=2000, method="percentile",
                              rng=np.random.default_rng(7)).confidence_interval
    assert ours == pytest.approx((reference.low, reference.high))
    assert stats.bootstrap_ci(x, 0.95, 2000, seed=7) == ours            # same seed, same interval
    assert ours[0] < x.mean() < ours[1]
    # about the normal-theory interval of the mean
    half = 1.96 * x.std(ddof=1) / math.sqrt(n)
    assert ours[1] - ours[0] == pytest.approx(2 * half, rel=0.3)


def test_bootstrap_ignores_nan_and_needs_two_values():
    assert all(math.isnan(v) for v in stats.bootstrap_ci([0.5]))
    assert all(math.isnan(v) for v in stats.bootstrap_ci([math.nan, 0.5]))
    with_nan = stats.bootstrap_ci([0.1, math.nan, 0.5, 0.9], n_resamples=500)
    without = stats.bootstrap_ci([0.1, 0.5, 0.9], n_resamples=500)
    assert with_nan == without


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wilcoxon_matches_scipy_with_zero_differences(seed):
    rng = np.random.default_rng(seed)
    a = rng.uniform(0, 1, 15)
    b = a + rng.normal(0.05, 0.1, 15)
    b[:3] = a[:3]  # three ties (zero differences), dropped as scipy's "wilcox" does
    result = stats.paired_comparison(_cases(b), _cases(a), n_resamples=500)
    expected = sps.wilcoxon(b - a, zero_method="wilcox").pvalue
    assert result["wilcoxon_p"] == pytest.approx(expected)
    assert result["diff_mean"] == pytest.approx(np.mean(b - a))


def test_pairs_use_cases_defined_in_both_rows():
    row = {"a": 0.5, "b": math.nan, "c": 0.7, "d": 0.1}
    base = {"a": 0.4, "b": 0.2, "c": math.nan, "e": 0.3}
    assert stats.paired_differences(row, base) == pytest.approx({"a": 0.1})


@pytest.mark.parametrize("values", [[0.1, 0.2, 0.6], [1.0, 1.0], [0.3, math.nan, 0.9, 0.0]])
def test_mean_std_match_numpy(values):
    x = np.array([v for v in values if not math.isnan(v)])
    mean, std = stats.mean_std(values)
    assert mean == pytest.approx(x.mean()) and std == pytest.approx(x.std(ddof=1))


def test_case_means_average_folds_and_seeds_and_keep_undefined_cases():
    records = [("a", 0.2), ("a", 0.4), ("b", math.nan), ("b", 0.6), ("c", math.nan), ("c", math.nan)]
    means = stats.case_means(records)
    assert means["a"] == pytest.approx(0.3) and means["b"] == pytest.approx(0.6) and math.isnan(means["c"])


def test_describe_counts_undefined_and_aggregates_seeds():
    per_seed = {0: {"a": 0.2, "b": 0.4, "c": math.nan}, 1: {"a": 0.4, "b": 0.8, "c": math.nan}}
    per_case = stats.case_means((case, v) for s in per_seed.values() for case, v in s.items())
    d = stats.describe(per_case, per_seed, n_resamples=500)
    assert d["n_cases"] == 2 and d["n_undefined"] == 1
    assert d["mean"] == pytest.approx(np.mean([0.3, 0.6]))
    assert d["median"] == pytest.approx(0.45)
    assert d["seed_means"] == pytest.approx({0: 0.3, 1: 0.6})
    assert d["seed_mean"] == pytest.approx(0.45) and d["seed_std"] == pytest.approx(np.std([0.3, 0.6], ddof=1))
    assert d["n_seeds"] == 2


def test_a_missed_lesion_counts_as_dice_zero():
    # evaluate gives Dice 0 (not NaN) for a missed lesion: it lowers the mean
    d = stats.describe({"hit": 0.8, "missed": 0.0}, {0: {"hit": 0.8, "missed": 0.0}}, n_resamples=200)
    assert d["mean"] == pytest.approx(0.4) and d["n_undefined"] == 0
