"""Naming a "best" only with evidence: the winner against the runner-up, paired on the same units.

A winner is named when the interval of its difference from the runner-up excludes 0; otherwise the report says
"not separated from <runner-up>". Below stats.THIN paired units it also says that the evidence is thin.
"""

from __future__ import annotations

from dataclasses import dataclass

from chronosweep.evaluation import metrics as registry
from chronosweep.evaluation.objective import Objective
from chronosweep.report.stats import THIN, Bootstrap, Comparison, paired_comparison, weighted_comparison

# (run_dir, metric) -> {unit id: value}
UnitMap = dict[tuple[str, str], dict[str, float]]


@dataclass(frozen=True)
class Verdict:
    """What the summary may say about a winner and its runner-up on one metric (or the objective)."""

    comparison: Comparison | None
    runner_up: str | None
    # No second candidate at all: nothing to compare with.
    alone: bool = False

    @property
    def separated(self) -> bool:
        return self.comparison is not None and self.comparison.separated

    def words(self, what: str = "") -> str:
        """'separated from X: difference +0.12 [0.05, 0.19], n=150 paired cases, McNemar p=0.003' or the tie."""
        if self.alone:
            return "the only candidate: nothing to compare it with"
        c = self.comparison
        if c is None:
            return f"not compared with {self.runner_up} (no units in common)"
        detail = f"difference {c.diff:+.3f} [{c.low:+.3f}, {c.high:+.3f}], {c.n} paired {what or 'units'}, {c.method}"
        if c.p_value is not None:
            detail += f" p={c.p_value:.3g}"
        head = f"separated from {self.runner_up}" if c.separated else f"**not separated from {self.runner_up}**"
        text = f"{head} ({detail})"
        if c.n < THIN:
            text += f"; the evidence is thin (fewer than {THIN} paired {what or 'units'})"
        return text


def unit_word(metric: str) -> str:
    m = registry.METRICS.get(metric)
    return {"edit": "edits", "probe": "probes", "case": "cases"}.get(m.unit if m else "", "units")


def compare_metric(metric: str, winner: str, runner_up: str, units: UnitMap, boot: Bootstrap,
                   runner_up_name: str) -> Verdict:
    """Winner minus runner-up on one metric, signed so that positive is better for the winner."""
    a, b = units.get((winner, metric)), units.get((runner_up, metric))
    if not a or not b:
        return Verdict(None, runner_up_name)
    m = registry.METRICS.get(metric)
    if m is not None and m.direction == "min":
        a, b = b, a  # lower is better: the runner-up's excess over the winner is the winner's advantage
    c = paired_comparison(a, b, boot, exact=m is None or m.interval == "wilson")
    return Verdict(c, runner_up_name)


def compare_objective(objective: Objective, winner: dict, runner_up: dict, units: UnitMap, boot: Bootstrap,
                      runner_up_name: str) -> Verdict:
    """Winner minus runner-up on the objective (higher is better whatever its mode)."""
    sign = 1.0 if objective.mode == "max" else -1.0
    terms, full, present = {}, 0.0, 0.0
    for name, weight in objective.terms().items():
        full += abs(weight)
        va, vb = winner.get(name), runner_up.get(name)
        if va is None or vb is None:
            continue
        present += abs(weight)
        terms[name] = (sign * weight, units.get((winner["run_dir"], name)), units.get((runner_up["run_dir"], name)),
                       float(va), float(vb))
    if not terms:
        return Verdict(None, runner_up_name)
    return Verdict(weighted_comparison(terms, boot, scale=full / present if present else 1.0), runner_up_name)
