"""Statistics of a benchmark table (numpy + scipy).

**Pairing unit: the test case.** Every row predicts the same test cases (paired by file name). A row's value for a
case is the mean of that case's metric over the row's folds and seeds (NaN-ignoring); the row's table entry is the
mean +- std over cases of these values, with a percentile bootstrap 95 % CI of that mean (cases resampled). A paired
difference ``d_c = v_row(c) - v_baseline(c)`` uses the cases where both values are defined; its mean gets a
bootstrap CI and the two-sided Wilcoxon signed-rank p-value (``scipy.stats.wilcoxon``, zero differences dropped:
``zero_method="wilcox"``; NaN when every difference is zero or fewer than one case is left).

**Seeds.** With several seeds, each seed's row mean (over cases, folds averaged) is also computed; the table shows
their mean and the between-seed standard deviation (ddof=1).

**Undefined values.** ``nnunet-ext evaluate`` gives NaN when a value is undefined: HD95/ASD when exactly one mask
is empty, Dice/IoU when both are (no lesion, none predicted). NaN cases are left out of means and CIs and counted
(``n_undefined``), and the table prints that count next to HD95/ASD. A missed lesion has Dice 0 and counts.

**Bootstrap.** ``scipy.stats.bootstrap`` with ``method="percentile"`` (well defined for degenerate samples: a
constant shift gives the CI [shift, shift]) and a seeded ``numpy.random.default_rng``: the same inputs give the
same interval.
"""
from __future__ import annotations

import math
import warnings
from typing import Iterable, Sequence

import numpy as np


def finite(values: Iterable[float]) -> np.ndarray:
    array = np.asarray(list(values), dtype=float)
    return array[np.isfinite(array)]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """NaN-ignoring mean and standard deviation (ddof=1; NaN for fewer than two values)."""
    x = finite(values)
    if x.size == 0:
        return math.nan, math.nan
    return float(np.mean(x)), float(np.std(x, ddof=1)) if x.size > 1 else math.nan


def bootstrap_ci(values: Sequence[float], confidence: float = 0.95, n_resamples: int = 10000,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of the finite values (cases resampled with replacement); (NaN, NaN) for
    fewer than two values."""
    from scipy.stats import bootstrap

    x = finite(values)
    if x.size < 2:
        return math.nan, math.nan
    if np.all(x == x[0]):  # degenerate sample: every resample has this mean
        return float(x[0]), float(x[0])
    result = bootstrap((x,), np.mean, n_resamples=n_resamples, confidence_level=confidence, method="percentile",
                       rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def paired_differences(row: dict[str, float], baseline: dict[str, float]) -> dict[str, float]:
    """Per-case differences ``row - baseline`` over the cases where both are finite."""
    out = {}
    for case, value in row.items():
        other = baseline.get(case)
        if other is not None and math.isfinite(value) and math.isfinite(other):
            out[case] = value - other
    return out


def wilcoxon_p(differences: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (NaN when undefined)."""
    from scipy.stats import wilcoxon

    d = finite(differences)
    if d.size == 0 or np.all(d == 0):
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


def paired_comparison(row: dict[str, float], baseline: dict[str, float], confidence: float = 0.95,
                      n_resamples: int = 10000, seed: int = 0) -> dict:
    """Mean paired difference with bootstrap CI and Wilcoxon p-value, and the number of pairs used."""
    diffs = paired_differences(row, baseline)
    values = list(diffs.values())
    mean, _ = mean_std(values)
    low, high = bootstrap_ci(values, confidence, n_resamples, seed)
    return {"diff_mean": mean, "paired_ci": [low, high], "wilcoxon_p": wilcoxon_p(values), "n_pairs": len(values),
            "per_case": diffs}


def case_means(records: Iterable[tuple[str, float]]) -> dict[str, float]:
    """Average (NaN-ignoring) per case over the given (case, value) records: folds and seeds of one row.
    A case whose every value is NaN stays NaN (undefined)."""
    groups: dict[str, list[float]] = {}
    for case, value in records:
        groups.setdefault(case, []).append(value)
    out = {}
    for case, values in groups.items():
        x = finite(values)
        out[case] = float(np.mean(x)) if x.size else math.nan
    return out


def describe(per_case: dict[str, float], per_seed: dict[int, dict[str, float]], confidence: float = 0.95,
             n_resamples: int = 10000, seed: int = 0) -> dict:
    """Table entry of one row and metric: mean, std, median, CI over cases; seed mean and between-seed std."""
    values = list(per_case.values())
    x = finite(values)
    mean, std = mean_std(values)
    low, high = bootstrap_ci(values, confidence, n_resamples, seed)
    seed_means = {s: mean_std(list(v.values()))[0] for s, v in sorted(per_seed.items())}
    seed_mean, seed_std = mean_std(list(seed_means.values()))
    return {"mean": mean, "std": std, "median": float(np.median(x)) if x.size else math.nan, "ci": [low, high],
            "n_cases": int(x.size), "n_undefined": int(len(values) - x.size), "seed_means": seed_means,
            "seed_mean": seed_mean, "seed_std": seed_std, "n_seeds": len(seed_means)}
