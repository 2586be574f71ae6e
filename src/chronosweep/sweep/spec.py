"""The sweep file: a base trial config, a search space, the search, resources and the objective.

Everything is validated before Ray starts and every problem is reported at once, each naming the file and
the key (``space.lora.rank.low``). Values the space can produce are checked by building the trial configs
they lead to (and, for layer windows and other model-dependent options, by the method's own ``check``),
so a sweep never launches a trial whose config could not have been valid.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from chronosweep.core.models import ModelInfo
from chronosweep.core.typed import ConfigError, build, set_dotted
from chronosweep.editing.registry import METHODS
from chronosweep.evaluation.constraints import check as check_constraints
from chronosweep.evaluation.objective import Objective
from chronosweep.sweep.resources import Resources
from chronosweep.sweep.space import Categorical, Condition, FloatRange, IntRange, Param, Space, Window, order_params
from chronosweep.sweep.tracking import Tracking
from chronosweep.trial.config import apply_overrides, config_from_dict, read_yaml
from chronosweep.trial.presets import apply_preset

SAMPLERS = {
    "tpe": "TPESampler",
    "random": "RandomSampler",
    "cmaes": "CmaEsSampler",
    "qmc": "QMCSampler",
    "gp": "GPSampler",
    "nsgaii": "NSGAIISampler",
}

_PARAM_FIELDS = {
    "categorical": {"values"},
    "int": {"low", "high", "step", "log"},
    "float": {"low", "high", "step", "log"},
    "log-float": {"low", "high"},
    "window": {"widths", "start_low", "start_high", "start_step"},
}

# Grids larger than this are almost always a typo in a range; validation says so instead of launching them.
MAX_GRID = 10_000


@dataclass
class EarlyStopping:
    """ASHA on the per-epoch metric the gradient methods report (their training loss)."""

    metric: str = "loss"
    mode: Literal["min", "max"] = "min"
    # Epochs every trial runs before it can be stopped, and the factor of trials kept at each rung.
    grace_period: int = 2
    reduction_factor: float = 3.0
    max_t: int = 100

    def check(self, where: str, problems: list[str]) -> None:
        if self.grace_period < 1:
            problems.append(f"{where}.grace_period: must be >= 1, got {self.grace_period}")
        if self.reduction_factor <= 1:
            problems.append(f"{where}.reduction_factor: must be > 1, got {self.reduction_factor}")
        if self.max_t <= self.grace_period:
            problems.append(f"{where}.max_t: must exceed grace_period ({self.grace_period}), got {self.max_t}")


@dataclass
class SweepFile:
    base: dict = field(default_factory=dict)
    space: dict = field(default_factory=dict)
    search: Literal["optuna", "grid"] = "optuna"
    # Optuna sampler by name, its constructor options, and the seed it gets.
    sampler: str = "tpe"
    sampler_options: dict = field(default_factory=dict)
    seed: int = 0
    # Trials Optuna samples; a grid runs every combination once, so it must be left out there.
    num_samples: int | None = None
    max_concurrent_trials: int | None = None
    resources: Resources = field(default_factory=Resources)
    objective: Objective = field(default_factory=lambda: Objective(metric="reliability"))
    early_stopping: EarlyStopping | None = None
    # metric -> bound in its better direction: the report names the best trial meeting them all (or says none does).
    constraints: dict = field(default_factory=dict)
    # Retries of a failed trial before it is recorded as failed (OOM on a busy node may pass on a retry).
    max_failures: int = 0
    description: str = ""
    # Experiment tracking (MLflow through Ray Tune's callback); none by default.
    tracking: Tracking | None = None


@dataclass
class SweepSpec:
    source: str
    file: SweepFile
    # The sweep file as read, with --set applied (stored with the experiment to detect changes on resume).
    raw: dict
    space: Space
    # The base trial config as given (raw), and with every default filled in.
    base_raw: dict
    num_trials: int

    @property
    def objective(self) -> Objective:
        return self.file.objective

    @property
    def resources(self) -> Resources:
        return self.file.resources


def load_sweep(path: str | Path, overrides: list[str] | None = None, resolve_model=None) -> SweepSpec:
    """Read, override and validate a sweep file; raises ConfigError listing every problem."""
    source = str(path)
    problems: list[str] = []
    raw = apply_overrides(read_yaml(path), overrides, problems)
    if problems:
        raise ConfigError(problems, source)
    return parse_sweep(raw, source, resolve_model)


def _model_info(name: str, base: dict, resolve_model) -> ModelInfo:
    from chronosweep.core.models import resolve

    fn = resolve_model or (lambda n: resolve(n, base.get("revision"), bool(base.get("trust_remote_code")), fetch=False))
    return fn(name)


def parse_sweep(raw: dict, source: str, resolve_model=None) -> SweepSpec:
    problems: list[str] = []
    sweep = build(SweepFile, raw, "", problems)
    not_mappings = [key for key in ("base", "space") if not isinstance(raw.get(key, {}), dict)]
    problems += [f"{key}: expected a mapping, got {raw[key]!r}" for key in not_mappings]
    if not_mappings:
        raise ConfigError(problems, source)

    base_raw = copy.deepcopy(sweep.base)
    base_resolved: dict = {}
    try:
        base_cfg = config_from_dict(base_raw)
        base_resolved = base_cfg.to_dict()
    except ConfigError as err:
        problems.extend(f"base.{p}" for p in err.problems)
        base_cfg = None

    check_constraints("constraints", sweep.constraints, problems)
    params = [p for key, spec in sweep.space.items() if (p := _parse_param(str(key), spec, problems)) is not None]
    params = order_params(params, problems, "space")
    _check_keys(params, problems)
    if base_resolved:
        _check_condition_keys(params, base_resolved, problems)

    if sweep.search == "optuna":
        if sweep.num_samples is None:
            problems.append("num_samples: required with search: optuna (how many trials to sample)")
        elif sweep.num_samples < 1:
            problems.append(f"num_samples: must be >= 1, got {sweep.num_samples}")
        if sweep.sampler not in SAMPLERS:
            problems.append(f"sampler: unknown Optuna sampler {sweep.sampler!r} (known: {', '.join(SAMPLERS)})")
        else:
            _check_sampler_options(sweep.sampler, sweep.sampler_options, problems)
        if not params:
            problems.append("space: empty; an Optuna search needs at least one parameter")
    else:
        if not params:
            problems.append("space: empty; a grid search needs at least one parameter (to run the base config "
                            "alone, use chronosweep edit)")
        if sweep.num_samples not in (None, 1):
            problems.append("num_samples: a grid runs every combination once; put seed in the space to repeat trials")
        for p in params:
            if isinstance(p, FloatRange) and p.step is None:
                problems.append(f"space.{p.key}: a grid cannot enumerate a continuous range; give step, or use "
                                "type: categorical with the values to try")
    if sweep.resources.distributed and base_resolved.get("engine") == "torch":
        problems.append("base.engine: torch trains each worker on its own; a trial with several workers "
                        f"(resources: {sweep.resources.num_workers}) needs engine deepspeed (or auto)")
    if sweep.max_concurrent_trials is not None and sweep.max_concurrent_trials < 1:
        problems.append(f"max_concurrent_trials: must be >= 1, got {sweep.max_concurrent_trials}")
    if sweep.max_failures < 0:
        problems.append(f"max_failures: must be >= 0, got {sweep.max_failures}")

    infos: dict[str, ModelInfo] = {}
    space = Space(params=params, base=base_resolved, infos=infos)
    num_trials = 0
    if base_cfg is not None and not problems:
        models = [base_cfg.model]
        for p in params:
            if p.key == "model" and isinstance(p, Categorical):
                models += [v for v in p.values if isinstance(v, str)]
        for name in dict.fromkeys(models):
            try:
                infos[name] = _model_info(name, base_raw, resolve_model)
            except Exception as err:  # noqa: BLE001 - resolve raises ModelError or transformers' errors
                where = "base.model" if name == base_cfg.model else "space.model"
                problems.append(f"{where}: {err}")
        if not problems:
            num_trials = _check_space(sweep, space, base_raw, problems)

    if problems:
        raise ConfigError(list(dict.fromkeys(problems)), source)
    return SweepSpec(source=source, file=sweep, raw=raw, space=space, base_raw=base_raw, num_trials=num_trials)


def _parse_param(key: str, spec: Any, problems: list[str]) -> Param | None:
    where = f"space.{key}"
    if isinstance(spec, list):
        spec = {"type": "categorical", "values": spec}
    if not isinstance(spec, dict):
        problems.append(f"{where}: expected a mapping with type (categorical, int, float, log-float, window) "
                        f"or a list of values, got {spec!r}")
        return None
    kind = spec.get("type")
    if kind not in _PARAM_FIELDS:
        problems.append(f"{where}.type: must be one of {', '.join(_PARAM_FIELDS)}, got {kind!r}")
        return None
    for name in spec:
        if name not in _PARAM_FIELDS[kind] | {"type", "when"}:
            problems.append(f"{where}.{name}: unknown key for type {kind} "
                            f"(known: {', '.join(sorted(_PARAM_FIELDS[kind] | {'type', 'when'}))})")
    when = _parse_when(where, spec.get("when"), problems)
    section = key.split(".", 1)[0]
    common = dict(key=key, when=when, section_method=section if section in METHODS and "." in key else None)
    before = len(problems)

    def number(name: str, tp: type, default: Any = ...) -> Any:
        if name not in spec:
            if default is ...:
                problems.append(f"{where}.{name}: required for type {kind}")
            return None if default is ... else default
        value = spec[name]
        if tp is float and isinstance(value, str):
            try:
                value = float(value)  # YAML 1.1 reads 1e-3 as a string
            except ValueError:
                pass
        ok = isinstance(value, (int, float) if tp is float else int) and not isinstance(value, bool)
        if not ok:
            problems.append(f"{where}.{name}: expected {'a number' if tp is float else 'an integer'}, got {value!r}")
            return None
        return tp(value)

    if kind == "categorical":
        values = spec.get("values")
        if not isinstance(values, list) or not values:
            problems.append(f"{where}.values: expected a non-empty list, got {values!r}")
            return None
        return Categorical(**common, values=tuple(values))
    if kind == "window":
        if not key.endswith(".window") or key.count(".") != 1:
            problems.append(f"{where}: a window parameter is named <section>.window (e.g. lora.window); it sets "
                            "<section>.layer_start and <section>.layer_width")
        widths = spec.get("widths")
        if not isinstance(widths, list) or not widths or not all(isinstance(w, int) and not isinstance(w, bool)
                                                                 and w >= 1 for w in widths):
            problems.append(f"{where}.widths: expected a non-empty list of integers >= 1, got {widths!r}")
            widths = []
        start_low = number("start_low", int, 0)
        start_high = number("start_high", int, None)
        start_step = number("start_step", int, 1)
        if start_low is not None and start_low < 0:
            problems.append(f"{where}.start_low: must be >= 0, got {start_low}")
        if start_step is not None and start_step < 1:
            problems.append(f"{where}.start_step: must be >= 1, got {start_step}")
        if start_high is not None and start_low is not None and start_high < start_low:
            problems.append(f"{where}.start_high: must be >= start_low ({start_low}), got {start_high}")
        if len(problems) > before:
            return None
        return Window(**common, widths=tuple(widths), start_low=start_low, start_high=start_high,
                      start_step=start_step)

    tp = int if kind == "int" else float
    low, high = number("low", tp), number("high", tp)
    log = spec.get("log", kind == "log-float")
    if not isinstance(log, bool):
        problems.append(f"{where}.log: expected true or false, got {log!r}")
        log = False
    step = number("step", tp, 1 if kind == "int" else None)
    if low is not None and high is not None:
        if high < low:
            problems.append(f"{where}: high ({high}) is below low ({low})")
        if log and low <= 0:
            problems.append(f"{where}.low: a log scale needs low > 0, got {low}")
    if step is not None and step <= 0:
        problems.append(f"{where}.step: must be > 0, got {step}")
    if log and step not in (None, 1):
        problems.append(f"{where}: step and log cannot be combined (Optuna samples either)")
    if len(problems) > before:
        return None
    if kind == "int":
        return IntRange(**common, low=low, high=high, step=step, log=log)
    return FloatRange(**common, low=low, high=high, step=step, log=log)


def _parse_when(where: str, when: Any, problems: list[str]) -> tuple[Condition, ...]:
    if when is None:
        return ()
    if not isinstance(when, dict) or not when:
        problems.append(f"{where}.when: expected a mapping of dotted key -> value (or list of values), got {when!r}")
        return ()
    return tuple(Condition(str(k), tuple(v) if isinstance(v, list) else (v,)) for k, v in when.items())


def _check_keys(params: list[Param], problems: list[str]) -> None:
    seen: dict[str, str] = {}
    for p in params:
        for out in p.outputs():
            if out in seen:
                problems.append(f"space.{p.key}: sets {out}, which space.{seen[out]} sets too")
            seen[out] = p.key


def _check_sampler_options(name: str, options: dict, problems: list[str]) -> None:
    import optuna

    cls = getattr(optuna.samplers, SAMPLERS[name])
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "seed"}
    for key in options:
        if key not in accepted:
            problems.append(f"sampler_options.{key}: {SAMPLERS[name]} takes no such option "
                            f"(it takes: {', '.join(sorted(accepted))})")


def _check_space(sweep: SweepFile, space: Space, base_raw: dict, problems: list[str]) -> int:
    """Build the trial configs the space can produce and collect what is wrong with them; returns the trial count."""
    before = len(problems)
    for p in space.params:
        contexts = _contexts(p, space)
        if not contexts:
            problems.append(f"space.{p.key}: never active (its method or when-conditions cannot hold given base "
                            "and the space)")
        for context in contexts:
            info = space.info_for(context)
            if isinstance(p, Window) and not p.fitting_widths(info):
                problems.append(f"space.{p.key}: no window of widths {list(p.widths)} starting in "
                                f"{p.start_low}..{p.start_high if p.start_high is not None else 'end'} "
                                f"fits {info.name} ({info.num_layers} layers)")
    if len(problems) > before:
        return 0
    # (where, problem) -> the assignments that run into it, so one bad value is one line, not one per trial.
    failing: dict[tuple[str, str], list[str]] = {}

    def check(values: dict, where: str) -> None:
        shown = ", ".join(f"{k}={v!r}" for k, v in values.items())
        for problem in _trial_problems(values, space, base_raw):
            failing.setdefault((where, problem), []).append(shown)

    if sweep.search == "grid":
        size = space.grid_size()
        if size > MAX_GRID:
            problems.append(f"space: the grid has {size} combinations (more than {MAX_GRID}); narrow the ranges")
            return 0
        points = [space.decode(point) for point in space.grid()]
        for point in points:
            check(point, "space")
        if not points:
            problems.append("space: the grid is empty")
        count = len(points)
    else:
        for p in space.params:
            for context in _contexts(p, space):
                for probe in p.probes(space.info_for(context)):
                    check(_representative(space, p, context, space.decode(probe)), f"space.{p.key}")
        count = sweep.num_samples or 0
    for (where, problem), cases in failing.items():
        more = f"; and {len(cases) - 1} more combination(s)" if len(cases) > 1 else ""
        problems.append(f"{where}: {problem} (with {cases[0]}{more})")
    return count


def _check_condition_keys(params: list[Param], base: dict, problems: list[str]) -> None:
    produced = {k for p in params for k in p.outputs()}
    for p in params:
        for cond in p.when:
            node, found = base, True
            for part in cond.key.split("."):
                found = isinstance(node, dict) and part in node
                node = node[part] if found else None
                if not found:
                    break
            if cond.key not in produced and not found:
                problems.append(f"space.{p.key}.when.{cond.key}: neither a space parameter nor a key of the base config")


def _contexts(p: Param, space: Space) -> list[dict]:
    """Assignments of the parameters p depends on (method, model, when-keys) under which p is active."""
    owners = {k: q for q in space.params for k in q.outputs()}
    names = [c.key for c in p.when] + (["method"] if p.section_method else []) + ["model"]
    needed: list[Param] = []
    for name in names:
        q = owners.get(name)
        if q is not None and q is not p and all(q is not other for other in needed):
            needed.append(q)
    contexts = [{}]
    for q in needed:
        if isinstance(q, Categorical):
            options = [{q.key: v} for v in q.values]
        elif isinstance(q, FloatRange) or (isinstance(q, IntRange) and (q.high - q.low) // q.step > 1000):
            options = [space.decode(a) for a in q.probes(space.info_for({}))]
        else:
            options = [space.decode(a) for a in q.grid(space.info_for({}))]
        contexts = [{**c, **o} for c in contexts for o in options]
    return [c for c in contexts if space.active(p, c)]


def _representative(space: Space, target: Param, context: dict, probe: dict) -> dict:
    """A whole trial around one probe of target: every other active parameter at its first value."""
    chosen = dict(context)
    for param in space.params:
        if param is target:
            chosen.update(probe)
        elif space.active(param, chosen) and not any(k in chosen for k in param.outputs()):
            probes = param.probes(space.info_for(chosen))
            if probes:
                chosen.update(space.decode(probes[0]))
    return chosen


def _trial_problems(values: dict, space: Space, base_raw: dict) -> list[str]:
    """What is wrong with the trial config base + values: config validation, then the method's model checks."""
    raw = copy.deepcopy(base_raw)
    for key, value in values.items():
        set_dotted(raw, key, copy.deepcopy(value))
    try:
        cfg = config_from_dict(raw)
    except ConfigError as err:
        return list(err.problems)
    problems: list[str] = []
    info = space.infos.get(cfg.model)
    if info is not None and cfg.method in METHODS:
        # The trial will run with the model's preset under the sampled values: check what it will run.
        apply_preset(cfg, info, problems)
        if not problems:
            cfg.options.check_model(cfg.method, info, problems)
    return problems
