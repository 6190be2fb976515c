"""Statistics of a grid: mean ± sample standard deviation over seeds, and paired differences between two methods
(same seed, same τ) with a t-distribution confidence interval. Pairing by seed removes what the seed shares
between methods (step-1 start, batch order), so the interval is the one that says whether A beats B."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from scipy import stats


def mean_sd(values: Iterable[float]) -> tuple[float, float, int]:
    """(mean, sample standard deviation with ddof = 1, n); the sd is NaN for n < 2 and both are NaN for n = 0."""
    xs = [float(v) for v in values if not math.isnan(float(v))]
    n = len(xs)
    if n == 0:
        return math.nan, math.nan, 0
    mean = sum(xs) / n
    if n < 2:
        return mean, math.nan, n
    return mean, math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1)), n


@dataclass(frozen=True)
class PairedDifference:
    """Mean of A − B over the seeds both have, its sd, the two-sided confidence interval and the paired t-test p."""

    n: int
    mean: float
    sd: float
    low: float
    high: float
    p_value: float
    seeds: tuple[int, ...]


def paired_difference(a: Mapping[int, float], b: Mapping[int, float], confidence: float = 0.95) -> PairedDifference:
    """A − B paired by seed (only seeds present in both). The interval is mean ± t_{(1+c)/2, n−1} · sd/√n; with
    one pair, or zero spread, it is NaN (unknown), never a zero-width claim."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    seeds = tuple(sorted(set(a) & set(b)))
    diffs = [float(a[s]) - float(b[s]) for s in seeds]
    mean, sd, n = mean_sd(diffs)
    if n < 2 or sd == 0.0 or math.isnan(sd):
        return PairedDifference(n, mean, sd, math.nan, math.nan, math.nan, seeds)
    se = sd / math.sqrt(n)
    half = float(stats.t.ppf(0.5 + confidence / 2.0, n - 1)) * se
    p = float(2.0 * stats.t.sf(abs(mean / se), n - 1))
    return PairedDifference(n, mean, sd, mean - half, mean + half, p, seeds)
