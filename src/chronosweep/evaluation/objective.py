"""The objective: the one number that ranks trials, for the sweep (Optuna, best.yaml) and the report alike.

A weighted sum of registered metrics, maximised or minimised. The sweep computes it from a trial's metrics.json
and refuses a trial that lacks a term; the report computes the same value and, for a trial that lacks a term
(a dataset without paraphrases has no generalization), rescales the terms it has to the full weight and says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from chronosweep.evaluation import metrics as registry

# What the report ranks by when the experiments share no sweep objective: the mean of the three edit scores.
DEFAULT_TERMS = ("reliability", "generalization", "locality")


@dataclass
class Objective:
    # One metric, or a weighted sum of several (weights may be negative, e.g. -0.01 on edit_seconds).
    metric: str | None = None
    weights: dict | None = None
    mode: Literal["max", "min"] = "max"

    def check(self, where: str, problems: list[str]) -> None:
        if (self.metric is None) == (self.weights is None):
            problems.append(f"{where}: give either metric or weights (a mapping metric -> weight)")
        allowed = registry.names(objective=True)
        for name in self.terms():
            if name not in allowed:
                problems.append(f"{where}: unknown metric {name!r} (known: {', '.join(allowed)})")
        for name, weight in (self.weights or {}).items():
            if isinstance(weight, bool) or not isinstance(weight, (int, float)):
                problems.append(f"{where}.weights.{name}: expected a number, got {weight!r}")

    @classmethod
    def mean_of(cls, names: list[str] | tuple[str, ...]) -> Objective:
        """Equal weights summing to one: the objective is the mean of the metrics (the report's --objective a+b)."""
        names = list(dict.fromkeys(names))
        return cls(weights={n: 1.0 / len(names) for n in names})

    def terms(self) -> dict[str, float]:
        if self.weights is not None:
            return {str(k): float(v) for k, v in self.weights.items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool)}
        return {self.metric: 1.0} if self.metric else {}

    def describe(self) -> str:
        terms = self.terms()
        if len(terms) == 1 and next(iter(terms.values())) == 1.0:
            return f"{self.mode} {next(iter(terms))}"
        if len(terms) > 1 and len(set(terms.values())) == 1 and math.isclose(sum(terms.values()), 1.0):
            return f"{self.mode} mean of " + " + ".join(terms)
        return f"{self.mode} " + " + ".join(f"{w:g}*{m}" for m, w in terms.items())

    def value(self, metrics: dict, missing: Literal["error", "rescale"] = "error") -> float | None:
        """The objective of one finished trial.

        missing="error" raises ValueError naming a term the trial could not measure (the sweep); "rescale" scales
        the terms present up to the full weight (the report), None when none is present.
        """
        total, present, full = 0.0, 0.0, 0.0
        for name, weight in self.terms().items():
            full += abs(weight)
            value = metrics.get(name)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                if missing == "error":
                    raise ValueError(
                        f"objective metric {name!r} is null for this trial (its data has no probes for it, "
                        f"e.g. multihop_accuracy needs multi-hop cases: data.name mquake-remastered-t); change objective or data"
                    )
                continue
            total += weight * float(value)
            present += abs(weight)
        if present == 0:
            return None
        return total * (full / present) if missing == "rescale" else total

    def missing_terms(self, metrics: dict) -> list[str]:
        return [n for n in self.terms() if metrics.get(n) is None]
