"""Intervals (Wilson for shares, percentile bootstrap for graded scores), paired comparisons of two trials on the
same units (McNemar for 0/1 outcomes, paired bootstrap otherwise), and the Pareto front of quality against cost.

Everything here is numpy and the standard library: no scipy. The exact binomial tails behind Clopper-Pearson and
McNemar are summed in log space, which is exact enough for the few hundred units a trial has.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from chronosweep.core.errors import UserError
from chronosweep.evaluation.objective import Objective
from chronosweep.report import DEFAULT_OBJECTIVE

__all__ = ["DEFAULT_OBJECTIVE", "THIN", "Bootstrap", "Comparison", "Interval", "bootstrap_intervals", "clopper_pearson",
           "mcnemar_p", "paired_comparison", "pareto_mask", "parse_objective", "resample_counts", "resample_indices",
           "wilson"]

# Below this many units (edits, probes, cases) the summary says in words that the evidence is thin.
THIN = 30


@dataclass(frozen=True)
class Bootstrap:
    n_resamples: int = 1000
    seed: int = 0
    confidence: float = 0.95

    def __post_init__(self):
        if self.n_resamples < 1:
            raise UserError(f"--bootstrap: must be >= 1, got {self.n_resamples}")
        if not 0.0 < self.confidence < 1.0:
            raise UserError(f"--confidence: must be between 0 and 1, got {self.confidence}")

    @property
    def percentiles(self) -> tuple[float, float]:
        tail = (1.0 - self.confidence) / 2 * 100
        return tail, 100.0 - tail


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int


def resample_indices(n: int, boot: Bootstrap) -> np.ndarray:
    """(n_resamples, n) unit indices drawn with replacement. A fresh generator per call: every trial with n units
    gets the same draws, so intervals do not depend on which other trials are in the report."""
    return np.random.default_rng(boot.seed).integers(0, n, size=(boot.n_resamples, n))


def resample_counts(n: int, boot: Bootstrap) -> np.ndarray:
    """How often each unit is drawn in each resample, (n_resamples, n): resample means become one matrix product."""
    idx = resample_indices(n, boot)
    flat = idx + (np.arange(boot.n_resamples)[:, None] * n)
    return np.bincount(flat.ravel(), minlength=boot.n_resamples * n).reshape(boot.n_resamples, n)


def bootstrap_intervals(groups: dict[Hashable, np.ndarray], boot: Bootstrap) -> dict[Hashable, Interval]:
    """Percentile bootstrap interval of the mean for each group of unit values (groups with equal n share draws)."""
    out: dict[Hashable, Interval] = {}
    by_n: dict[int, list[Hashable]] = {}
    for key, values in groups.items():
        by_n.setdefault(len(values), []).append(key)
    lo_pct, hi_pct = boot.percentiles
    for n, keys in by_n.items():
        if n == 0:
            continue
        values = np.stack([np.asarray(groups[k], dtype=np.float64) for k in keys])  # (T, n)
        means = values @ resample_counts(n, boot).T.astype(np.float64) / n  # (T, n_resamples)
        low, high = np.percentile(means, [lo_pct, hi_pct], axis=1)
        # A resample mean lies within the values' range; clipping only removes float round-off (all-equal -> zero width).
        low = np.clip(low, values.min(axis=1), values.max(axis=1))
        high = np.clip(high, values.min(axis=1), values.max(axis=1))
        for i, key in enumerate(keys):
            out[key] = Interval(float(values[i].mean()), float(low[i]), float(high[i]), n)
    return out


def z_value(confidence: float) -> float:
    return NormalDist().inv_cdf(1.0 - (1.0 - confidence) / 2.0)


def wilson(mean: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a share: mean = successes / n (3 of 3 at 95% -> [0.438, 1.000]).

    Also used for a mean of per-edit shares (generalization): for values in [0, 1] with that mean the Bernoulli
    variance is the largest possible, so the interval is conservative there.
    """
    if n <= 0:
        return math.nan, math.nan
    z = z_value(confidence)
    z2 = z * z
    centre = (mean + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(max(mean * (1 - mean), 0.0) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def _log_binom_pmf(k: int, n: int, p: float) -> float:
    if p <= 0.0:
        return 0.0 if k == 0 else -math.inf
    if p >= 1.0:
        return 0.0 if k == n else -math.inf
    return (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
            + k * math.log(p) + (n - k) * math.log1p(-p))


def binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k), X ~ Binomial(n, p)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    return min(1.0, sum(math.exp(_log_binom_pmf(i, n, p)) for i in range(k + 1)))


def _solve(f, target: float) -> float:
    """p in [0, 1] with f(p) = target for f decreasing in p (bisection to 1e-12)."""
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if f(mid) > target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of a binomial proportion k / n."""
    if n <= 0:
        return math.nan, math.nan
    alpha = 1.0 - confidence
    # Lower: P(X >= k | p) = alpha/2; upper: P(X <= k | p) = alpha/2 (both CDFs fall as p grows).
    low = 0.0 if k == 0 else _solve(lambda p: binom_cdf(k - 1, n, p), 1.0 - alpha / 2)
    high = 1.0 if k == n else _solve(lambda p: binom_cdf(k, n, p), alpha / 2)
    return low, high


def mcnemar_p(b: int, c: int) -> float:
    """Exact two-sided McNemar test: the discordant pairs split b : c under a fair coin."""
    n = b + c
    if n == 0:
        return 1.0
    tail = binom_cdf(min(b, c), n, 0.5)
    return min(1.0, 2.0 * tail)


@dataclass(frozen=True)
class Comparison:
    """A (the better trial) minus B (the runner-up) over the units both have."""

    diff: float
    low: float
    high: float
    # Paired units the comparison rests on.
    n: int
    method: str  # "McNemar" | "paired bootstrap"
    p_value: float | None = None
    # For McNemar: units only A got right, only B got right.
    discordant: tuple[int, int] | None = None

    @property
    def separated(self) -> bool:
        """The difference's interval excludes 0."""
        return not (self.low <= 0.0 <= self.high)

    @property
    def thin(self) -> bool:
        return self.n < THIN


def _binary(values: np.ndarray) -> bool:
    return bool(np.all((values == 0.0) | (values == 1.0)))


def paired_comparison(a: dict[str, float], b: dict[str, float], boot: Bootstrap, *, exact: bool = True
                      ) -> Comparison | None:
    """A against B over their shared unit ids; None when they share none.

    0/1 units (and exact=True): McNemar, and the difference's interval from the Clopper-Pearson interval of the
    discordant split (it excludes 0 exactly when McNemar's test rejects at the same level). Otherwise the
    percentile bootstrap of the mean paired difference.
    """
    shared = sorted(set(a) & set(b))
    if not shared:
        return None
    x = np.array([a[u] for u in shared], dtype=np.float64)
    y = np.array([b[u] for u in shared], dtype=np.float64)
    n = len(shared)
    diff = float(x.mean() - y.mean())
    if exact and _binary(x) and _binary(y):
        only_a, only_b = int(((x == 1) & (y == 0)).sum()), int(((x == 0) & (y == 1)).sum())
        nd = only_a + only_b
        if nd == 0:
            return Comparison(0.0, 0.0, 0.0, n, "McNemar", 1.0, (0, 0))
        lo, hi = clopper_pearson(only_a, nd, boot.confidence)
        return Comparison(diff, nd * (2 * lo - 1) / n, nd * (2 * hi - 1) / n, n, "McNemar",
                          mcnemar_p(only_a, only_b), (only_a, only_b))
    d = x - y
    means = resample_counts(n, boot).astype(np.float64) @ d / n
    lo_pct, hi_pct = boot.percentiles
    low, high = np.percentile(means, [lo_pct, hi_pct])
    return Comparison(diff, float(min(low, diff)), float(max(high, diff)), n, "paired bootstrap")


def weighted_comparison(terms: dict[str, tuple[float, dict[str, float] | None, dict[str, float] | None, float, float]],
                        boot: Bootstrap, scale: float = 1.0) -> Comparison | None:
    """A weighted sum of metrics (the objective), A minus B: each term with units is resampled over its own paired
    units (terms independently), a term without units (a cost) counts as its fixed difference.

    terms: name -> (weight, A's units or None, B's units or None, A's value, B's value).
    """
    total = np.zeros(boot.n_resamples)
    point, n_min = 0.0, None
    for weight, ua, ub, va, vb in terms.values():
        shared = sorted(set(ua or {}) & set(ub or {}))
        if shared:
            d = np.array([ua[u] - ub[u] for u in shared], dtype=np.float64)
            draws = resample_counts(len(shared), boot).astype(np.float64) @ d / len(shared)
            total += weight * draws
            point += weight * float(d.mean())
            n_min = len(shared) if n_min is None else min(n_min, len(shared))
        else:
            total += weight * (va - vb)
            point += weight * (va - vb)
    if n_min is None:
        return None
    lo_pct, hi_pct = boot.percentiles
    low, high = np.percentile(total * scale, [lo_pct, hi_pct])
    point *= scale
    return Comparison(point, float(min(low, point)), float(max(high, point)), n_min, "paired bootstrap")


def parse_objective(text: str) -> Objective:
    """'reliability+generalization+locality' -> the objective that is the mean of those columns."""
    names = [part.strip() for part in text.split("+")]
    if not text.strip() or any(not name for name in names):
        raise UserError(f"--objective: expected metric names joined by '+', got {text!r}")
    return Objective.mean_of(names)


def pareto_mask(cost: np.ndarray, quality: np.ndarray) -> np.ndarray:
    """True where no other point is at most as costly and at least as good, and better in one of the two.

    NaN in either coordinate is never on the front. Identical points on the front are all kept.
    """
    cost = np.asarray(cost, dtype=np.float64)
    quality = np.asarray(quality, dtype=np.float64)
    mask = np.zeros(len(cost), dtype=bool)
    valid = np.flatnonzero(~(np.isnan(cost) | np.isnan(quality)))
    order = valid[np.lexsort((-quality[valid], cost[valid]))]  # cheapest first, best first among equal cost
    best = -np.inf
    last: tuple[float, float] | None = None
    for i in order:
        point = (cost[i], quality[i])
        if quality[i] > best:
            mask[i], best, last = True, quality[i], point
        elif point == last:
            mask[i] = True
    return mask
