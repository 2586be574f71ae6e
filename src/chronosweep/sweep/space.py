"""Search-space parameters, their conditions, Optuna define-by-run sampling and grid expansion.

A parameter is addressed by a dotted trial-config key (``lora.rank``, ``data.limit``). A ``window`` parameter
named ``<section>.window`` produces two keys, ``<section>.layer_start`` and ``<section>.layer_width``, and only
ever yields windows that fit the trial's model. Parameters are active when their ``when`` conditions hold and,
for keys inside a method's section, when the trial runs that method.

Values travel through Tune as ``config["params"]``, a flat ``{dotted key: encoded value}`` mapping: Optuna only stores scalars, so
a categorical choice that is a list (a layer list for MEMIT) is sent as its JSON text and decoded here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from chronosweep.core.models import ModelInfo

_SCALARS = (type(None), bool, int, float, str)
# Optuna parameter names carry this prefix so that Tune (which unflattens "/" in them) hands every trial its
# values as config["params"], the same shape a grid's points have.
PREFIX = "params/"


@dataclass(frozen=True)
class Condition:
    # Dotted key (a space parameter or a base-config value) -> accepted values.
    key: str
    values: tuple


@dataclass
class Param:
    key: str
    when: tuple[Condition, ...] = ()
    # The method whose section the key lives in, or None for shared keys.
    section_method: str | None = None

    def outputs(self) -> tuple[str, ...]:
        return (self.key,)

    def suggest(self, trial, info: ModelInfo) -> dict:
        raise NotImplementedError

    def grid(self, info: ModelInfo) -> list[dict]:
        raise NotImplementedError

    def probes(self, info: ModelInfo) -> list[dict]:
        """A few decoded assignments (extremes, every category) used to validate the space before Ray starts."""
        return self.grid(info)

    def decode(self, key: str, value: Any) -> Any:
        return value


@dataclass
class Categorical(Param):
    values: tuple = ()

    def _encoded(self) -> list:
        return [v if isinstance(v, _SCALARS) else json.dumps(v) for v in self.values]

    def suggest(self, trial, info):
        return {self.key: trial.suggest_categorical(PREFIX + self.key, self._encoded())}

    def grid(self, info):
        return [{self.key: v} for v in self._encoded()]

    def decode(self, key, value):
        if isinstance(value, str) and value not in self.values:
            for original, encoded in zip(self.values, self._encoded()):
                if encoded == value:
                    return original
        return value


@dataclass
class IntRange(Param):
    low: int = 0
    high: int = 0
    step: int = 1
    log: bool = False

    def suggest(self, trial, info):
        return {self.key: trial.suggest_int(PREFIX + self.key, self.low, self.high, step=self.step, log=self.log)}

    def grid(self, info):
        return [{self.key: v} for v in range(self.low, self.high + 1, self.step)]

    def probes(self, info):
        return [{self.key: self.low}, {self.key: self.high}]


@dataclass
class FloatRange(Param):
    low: float = 0.0
    high: float = 0.0
    step: float | None = None
    log: bool = False

    def suggest(self, trial, info):
        return {self.key: trial.suggest_float(PREFIX + self.key, self.low, self.high, step=self.step, log=self.log)}

    def grid(self, info):
        # Only stepped ranges are enumerable; spec validation refuses the others for grid search.
        count = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
        return [{self.key: round(self.low + i * self.step, 12)} for i in range(count)]

    def probes(self, info):
        return [{self.key: self.low}, {self.key: self.high}]


@dataclass
class Window(Param):
    """A layer window: the width from ``widths``, the first layer from a stepped range clipped to the model."""

    widths: tuple[int, ...] = ()
    start_low: int = 0
    start_high: int | None = None
    start_step: int = 1

    @property
    def prefix(self) -> str:
        return self.key.rsplit(".", 1)[0]

    def outputs(self):
        return (f"{self.prefix}.layer_start", f"{self.prefix}.layer_width")

    def starts(self, width: int, info: ModelInfo) -> list[int]:
        """First layers for this width that fit the model, on the start_low + k*start_step lattice."""
        last_start = info.num_layers - width
        if self.start_high is not None:
            last_start = min(last_start, self.start_high)
        return list(range(self.start_low, last_start + 1, self.start_step))

    def fitting_widths(self, info: ModelInfo) -> list[int]:
        return [w for w in self.widths if self.starts(w, info)]

    def suggest(self, trial, info):
        start_key, width_key = self.outputs()
        widths = self.fitting_widths(info)
        width = trial.suggest_categorical(PREFIX + width_key, widths)
        starts = self.starts(width, info)
        # Optuna accepts a range that changes with the width (define-by-run); TPE models it per value seen.
        start = trial.suggest_int(PREFIX + start_key, starts[0], starts[-1], step=self.start_step)
        return {start_key: start, width_key: width}

    def grid(self, info):
        start_key, width_key = self.outputs()
        return [{start_key: s, width_key: w} for w in self.widths for s in self.starts(w, info)]


@dataclass
class Space:
    # Parameters in sampling order: every parameter comes after those its conditions name.
    params: list[Param] = field(default_factory=list)
    # Resolved base config (every default filled in), for conditions on keys outside the space.
    base: dict = field(default_factory=dict)
    # Model name -> shape, for every model a trial can use (window fitting).
    infos: dict[str, ModelInfo] = field(default_factory=dict)

    def keys(self) -> list[str]:
        return [k for p in self.params for k in p.outputs()]

    def _lookup(self, key: str, chosen: dict) -> Any:
        if key in chosen:
            return chosen[key]
        node: Any = self.base
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    def active(self, param: Param, chosen: dict) -> bool:
        if param.section_method is not None and self._lookup("method", chosen) != param.section_method:
            return False
        return all(self._lookup(c.key, chosen) in c.values for c in param.when)

    def info_for(self, chosen: dict) -> ModelInfo:
        return self.infos[self._lookup("model", chosen)]

    def define_by_run(self, trial) -> None:
        """Optuna define-by-run: sample the active parameters in order (the values stay in trial.params)."""
        chosen: dict = {}
        for param in self.params:
            if self.active(param, chosen):
                chosen.update(self._decoded(param.suggest(trial, self.info_for(chosen))))

    def grid(self) -> list[dict]:
        """Every combination of the active parameters' values (encoded), conditions applied as the tree unfolds."""
        return [encoded for encoded, _ in self._expand(0, {}, {})]

    def _expand(self, index: int, encoded: dict, chosen: dict) -> Iterator[tuple[dict, dict]]:
        if index == len(self.params):
            yield dict(encoded), dict(chosen)
            return
        param = self.params[index]
        if not self.active(param, chosen):
            yield from self._expand(index + 1, encoded, chosen)
            return
        for assignment in param.grid(self.info_for(chosen)):
            yield from self._expand(index + 1, {**encoded, **assignment}, {**chosen, **self._decoded(assignment)})

    def _decoded(self, encoded: dict) -> dict:
        owners = {k: p for p in self.params for k in p.outputs()}
        return {k: owners[k].decode(k, v) if k in owners else v for k, v in encoded.items()}

    def decode(self, encoded: dict) -> dict:
        """Tune's flat config of one trial -> {dotted key: value} to apply to the base config."""
        return self._decoded(encoded)

    def grid_size(self) -> int:
        return sum(1 for _ in self._expand(0, {}, {}))


def order_params(params: list[Param], problems: list[str], where: str) -> list[Param]:
    """Stable topological order: a parameter follows every parameter its conditions (or method/model) read."""
    produced = {k: p for p in params for k in p.outputs()}
    deps: dict[int, set[int]] = {}
    for i, p in enumerate(params):
        names = {c.key for c in p.when}
        if p.section_method is not None:
            names.add("method")
        if isinstance(p, Window):
            names.add("model")
        deps[i] = {params.index(produced[n]) for n in names if n in produced and produced[n] is not p}
    ordered: list[int] = []
    pending = list(range(len(params)))
    while pending:
        ready = [i for i in pending if deps[i] <= set(ordered)]
        if not ready:
            cycle = ", ".join(params[i].key for i in pending)
            problems.append(f"{where}: conditions form a cycle among {cycle}")
            ordered.extend(pending)
            break
        ordered.append(ready[0])
        pending.remove(ready[0])
    return [params[i] for i in ordered]
