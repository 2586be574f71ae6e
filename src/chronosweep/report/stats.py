"""Percentile bootstrap intervals over edits, the objective, and the Pareto front of quality against cost."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np

from chronosweep.core.errors import UserError
from chronosweep.evaluation.objective import Objective
from chronosweep.report import DEFAULT_OBJECTIVE

__all__ = ["DEFAULT_OBJECTIVE", "Bootstrap", "Interval", "bootstrap_intervals", "pareto_mask", "parse_objective",
           "resample_counts", "resample_indices"]


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
