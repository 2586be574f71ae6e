"""Constraints: bounds a trial must meet on registered metrics, each in the metric's own better direction.

``{reliability: 0.95, locality_acc: 0.95, edit_seconds_per_edit: 0.9}`` means reliability >= 0.95, locality
token accuracy >= 0.95 and at most 0.9 s per edit (the registry says which way each metric is better). A sweep
file carries them under ``constraints:``; the report names the best trial that meets them all, or says none does.
"""

from __future__ import annotations

import math

from chronosweep.evaluation import metrics as registry


def check(where: str, constraints, problems: list[str]) -> None:
    if not isinstance(constraints, dict):
        problems.append(f"{where}: expected a mapping metric -> bound, got {constraints!r}")
        return
    allowed = registry.names(objective=True)
    for name, bound in constraints.items():
        if name not in allowed:
            problems.append(f"{where}.{name}: unknown metric (known: {', '.join(allowed)})")
        if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not math.isfinite(bound):
            problems.append(f"{where}.{name}: expected a number, got {bound!r}")


def op(name: str) -> str:
    return ">=" if registry.get(name).direction == "max" else "<="


def describe(constraints: dict) -> str:
    return ", ".join(f"{name} {op(name)} {bound:g}" for name, bound in constraints.items())


def shortfalls(metrics: dict, constraints: dict) -> dict[str, float | None]:
    """metric -> how far the trial misses its bound (None: not measured), for every bound it does not meet."""
    out: dict[str, float | None] = {}
    for name, bound in constraints.items():
        value = metrics.get(name)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            out[name] = None
            continue
        gap = bound - value if op(name) == ">=" else value - bound
        if gap > 1e-12:
            out[name] = gap
    return out


def parse_requirement(text: str) -> tuple[str, float]:
    """'reliability=0.95' (or 'reliability>=0.95', 'edit_seconds_per_edit<=0.9') -> (name, bound)."""
    for sep in (">=", "<=", "="):
        if sep in text:
            name, _, value = text.partition(sep)
            name = name.strip()
            try:
                bound = float(value)
            except ValueError:
                raise ValueError(f"--require {text}: {value.strip()!r} is not a number") from None
            if name not in registry.METRICS:
                raise ValueError(f"--require {text}: unknown metric {name!r} (known: {', '.join(registry.names())})")
            if sep != "=" and sep != op(name):
                raise ValueError(f"--require {text}: {name} is better {'higher' if op(name) == '>=' else 'lower'}, "
                                 f"so its bound reads {name}{op(name)}{value.strip()}")
            return name, bound
    raise ValueError(f"--require {text}: expected METRIC=BOUND, e.g. reliability=0.95")
