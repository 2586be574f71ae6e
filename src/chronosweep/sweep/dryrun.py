"""`chronosweep sweep SWEEP.yaml --dry-run`: size and price every trial of a sweep before launch (no Ray, no weights).

The trials are the ones the sweep would run: every point of a grid; for an Optuna search, the corners of the space
(each range's ends, every category) stand in for the ``num_samples`` trials it will sample, and the totals are
num_samples times their mean, with the range between the cheapest and the dearest corner.
Memory comes from ``estimate``; time too, unless earlier run dirs of the same method and model on the same kind of
device exist: then the estimate is scaled by what those runs measured against what it predicted for them.
"""

from __future__ import annotations

import copy
import json
import math
import statistics
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml

from chronosweep.core.errors import UserError
from chronosweep.core.models import ModelInfo
from chronosweep.core.shapes import ModelShape, find_shape
from chronosweep.core.typed import set_dotted
from chronosweep.sweep.estimate import Device, Estimate, Lengths, estimate_trial
from chronosweep.sweep.spec import SweepSpec, _contexts, _representative, load_sweep
from chronosweep.trial.config import TrialConfig, config_from_dict

DEFAULT_GPU = "A100-80GB"
GiB = 2**30


@cache
def gpu_table() -> dict[str, dict]:
    return yaml.safe_load(Path(__file__).with_name("gpus.yaml").read_text())


def gpu_device(name: str, cpus: float) -> Device:
    table = gpu_table()
    if name not in table:
        raise UserError(f"--gpu {name!r}: not in chronosweep's GPU table (known: {', '.join(table)})")
    row = table[name]
    return Device(kind="cuda", name=name, memory=row["memory_gb"] * 1e9,
                  tflops={k: v for k, v in row.items() if k.endswith("_tflops")}, bandwidth=row["bandwidth_gbs"] * 1e9,
                  cpus=cpus)


def offline_info(name: str, revision: str | None = None) -> ModelInfo:
    """A ModelInfo from the model's shape alone, for validating the sweep without a network or the weights."""
    shape = find_shape(name, revision)
    return ModelInfo(name=name, path=name, model_type=shape.model_type, num_layers=shape.num_layers,
                     hidden_size=shape.hidden_size, intermediate_size=shape.intermediate_size,
                     fingerprint=f"{name}-shape")


# ---------------------------------------------------------------- the trials

def sweep_trials(spec: SweepSpec) -> tuple[list[dict], bool]:
    """The assignments to size: (list of {dotted key: value}, exhaustive). A grid is exhaustive; Optuna's corners are not."""
    space = spec.space
    if spec.file.search == "grid":
        return [space.decode(point) for point in space.grid()], True
    seen, out = set(), []
    for p in space.params:
        for context in _contexts(p, space):
            for probe in p.probes(space.info_for(context)):
                values = _representative(space, p, context, space.decode(probe))
                key = json.dumps(values, sort_keys=True, default=str)
                if key not in seen:
                    seen.add(key)
                    out.append(values)
    return out, False


def trial_config(spec: SweepSpec, values: dict) -> TrialConfig:
    raw = copy.deepcopy(spec.base_raw)
    for key, value in values.items():
        set_dotted(raw, key, copy.deepcopy(value))
    return config_from_dict(raw)


# ---------------------------------------------------------------- sequence lengths

def _tokenizer(shape: ModelShape, name: str):
    """A fast tokenizer from the model's local tokenizer.json, or None (lengths then come from characters)."""
    from chronosweep.core.models import BUILTIN, builtin_dir

    folder = builtin_dir(name) if name in BUILTIN else Path(name).expanduser()
    path = folder / "tokenizer.json"
    if not path.is_file():
        return None
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


def trial_lengths(cfg: TrialConfig, shape: ModelShape) -> Lengths:
    return _lengths(cfg.model, shape, json.dumps(cfg.to_dict()["data"], sort_keys=True, default=str),
                    json.dumps(cfg.to_dict()["eval"], sort_keys=True), cfg.target_suffix)


@cache
def _lengths(model: str, shape: ModelShape, data_json: str, eval_json: str, suffix: str) -> Lengths:
    from chronosweep.core.tokens import target_text
    from chronosweep.core.typed import build
    from chronosweep.data import load_edits
    from chronosweep.data.config import DataConfig
    from chronosweep.evaluation.config import EvalConfig
    from chronosweep.evaluation.probes import build_probes

    problems: list[str] = []
    data = build(DataConfig, json.loads(data_json), "data", problems)
    eval_cfg = build(EvalConfig, json.loads(eval_json), "eval", problems)
    edits = load_edits(data)
    probes = build_probes(edits, eval_cfg)
    tok = _tokenizer(shape, model)
    if tok is not None:
        count = lambda text, special=True: len(tok.encode(text, add_special_tokens=special).ids)  # noqa: E731
        source = "tokenizer"
    else:
        count = lambda text, special=True: max(1, math.ceil(len(text) / 3.6)) + (1 if special else 0)  # noqa: E731
        source = "characters"
    reqs = edits.requests
    train = [count(r.prompt + target_text(r, suffix)) for r in reqs] or [1]
    generate = [count(q) for p in probes for q in (p.questions or (p.prompt,))] or [1]
    teacher = [count(p.prompt + p.tf_target) for p in probes if p.tf_target is not None] or [1]
    targets = [count(target_text(r, suffix), False) for r in reqs] or [1]
    kl = [count(f"{r.subject} is a") for r in reqs] or [1]
    return Lengths(n_edits=len(reqs), train_max=max(train), train_mean=statistics.fmean(train),
                   n_generate=len(generate), generate_max=max(generate), n_teacher=len(teacher),
                   teacher_max=max(teacher), locate_max=max(train), kl_max=max(kl), target_mean=statistics.fmean(targets),
                   source=source, locality_share=sum(p.kind == "locality" for p in probes) / max(len(probes), 1))


# ---------------------------------------------------------------- earlier runs

@dataclass
class Calibration:
    """Measured over estimated seconds of earlier runs of one method and model on one kind of device."""

    runs: int
    edit: float
    eval: float


def earlier_runs(roots: list[Path]) -> list[tuple[TrialConfig, dict]]:
    """(config, metrics) of every finished run dir under roots (a run dir holds metrics.json and config.yaml)."""
    found = []
    for root in roots:
        root = Path(root).expanduser()
        if not root.is_dir():
            continue
        for metrics_path in sorted(root.rglob("metrics.json")):
            config_path = metrics_path.with_name("config.yaml")
            if not config_path.exists():
                continue
            try:
                metrics = json.loads(metrics_path.read_text())
                cfg = config_from_dict(yaml.safe_load(config_path.read_text()))
            except Exception:  # noqa: BLE001 - a run dir of another version or a broken one is simply not used
                continue
            if metrics.get("status") == "ok" and metrics.get("edit_seconds") and metrics.get("n_edits"):
                found.append((cfg, metrics))
    return found


def calibrations(runs: list[tuple[TrialConfig, dict]], shapes: dict[str, ModelShape],
                 device_kind: str) -> dict[tuple[str, str], Calibration]:
    """(method, model) -> how much slower (or faster) the runs were than the estimate said, on this kind of device."""
    ratios: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for cfg, metrics in runs:
        if metrics.get("device") != device_kind or cfg.model not in shapes:
            continue
        device = Device(kind=device_kind, cpus=float(metrics.get("threads") or 1))
        if device_kind == "cuda":
            # The GPU kind is not recorded; the ratio is taken against the default table row.
            device = gpu_device(DEFAULT_GPU, 1)
        try:
            est = estimate_trial(cfg, shapes[cfg.model], trial_lengths(cfg, shapes[cfg.model]), device,
                                 max(1, int(metrics.get("n_gpus") or 1)))
        except Exception:  # noqa: BLE001 - data of an old run no longer readable
            continue
        edit = metrics["edit_seconds"] / max(est.seconds["edit"], 1e-9)
        evaluation = (metrics.get("eval_seconds") or 0.0) / max(est.seconds["eval"], 1e-9)
        ratios.setdefault((cfg.method, cfg.model), []).append((edit, evaluation))
    return {key: Calibration(len(v), statistics.median(r[0] for r in v), statistics.median(r[1] for r in v))
            for key, v in ratios.items()}


# ---------------------------------------------------------------- the dry run

@dataclass
class TrialRow:
    values: dict
    cfg: TrialConfig
    estimate: Estimate
    per_device: float  # bytes the trial needs on each of its devices
    capacity: float  # bytes it may use there (its share of the GPU)
    fits: bool
    seconds: float
    gpu_hours: float
    time_source: str


@dataclass
class DryRun:
    spec: SweepSpec
    device: Device
    gpus_per_trial: float
    rows: list[TrialRow]
    exhaustive: bool
    price: float | None
    notes: list[str] = field(default_factory=list)

    @property
    def n_trials(self) -> int:
        return self.spec.num_trials

    def totals(self) -> dict[str, float]:
        scale = 1.0 if self.exhaustive else self.n_trials / max(1, len(self.rows))
        hours = [r.gpu_hours for r in self.rows]
        secs = [r.seconds for r in self.rows]
        out = {"trials": self.n_trials, "seconds": sum(secs) * scale, "gpu_hours": sum(hours) * scale}
        if not self.exhaustive:
            out["gpu_hours_low"] = min(hours) * self.n_trials
            out["gpu_hours_high"] = max(hours) * self.n_trials
        return out

    def warnings(self) -> list[str]:
        return [f"trial {i + 1} ({_label(r.values) or 'base'}) needs {r.per_device / GiB:.1f} GiB per device, more than "
                f"the {r.capacity / GiB:.1f} GiB it gets ({_share(self.gpus_per_trial)} {self.device.name}): it will "
                f"not fit" for i, r in enumerate(self.rows) if not r.fits]


def _share(gpus: float) -> str:
    return f"{gpus:g} x" if gpus >= 1 else f"{gpus:g} of one"


def _label(values: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


def dry_run(spec: SweepSpec, gpu: str | None = None, price: float | None = None, run_roots: list[Path] | None = None,
            mfu: float | None = None) -> DryRun:
    resources = spec.resources
    notes: list[str] = []
    gpus = resources.gpus
    if gpu is None and gpus == 0:
        device = Device(kind="cpu", name="CPU", cpus=resources.cpus / resources.num_workers)
        notes.append("resources.gpus is 0: the trials run on the CPU; sized for CPU memory and time "
                     "(--gpu NAME sizes them for a GPU instead)")
        world = resources.num_workers
    else:
        name = gpu or DEFAULT_GPU
        if gpus == 0:
            notes.append(f"resources.gpus is 0 in the sweep file: sized as if each trial had 1 {name} "
                         "(--set resources.gpus=N to match the launch)")
            gpus = 1.0
        device = gpu_device(name, resources.cpus)
        world = max(1, int(gpus)) if gpus >= 1 else 1
    if mfu is not None:
        device.mfu = mfu
    values_list, exhaustive = sweep_trials(spec)
    shapes = {name: find_shape(name, spec.base_raw.get("revision")) for name in spec.space.infos}
    cal = calibrations(earlier_runs(run_roots or []), shapes, device.kind)
    rows = []
    stats_done: set = set()
    if device.kind == "cpu":
        import psutil

        device.memory = float(psutil.virtual_memory().total)
        notes.append(f"CPU trials are checked against this machine's memory ({device.memory / GiB:.0f} GiB)")
    for values in values_list:
        cfg = trial_config(spec, values)
        shape = shapes[cfg.model]
        lengths = trial_lengths(cfg, shape)
        est = estimate_trial(cfg, shape, lengths, device, world)
        seconds = dict(est.seconds)
        if "stats" in seconds:
            # Key statistics are computed by the first trial that needs them and cached for the others (per node).
            key = (cfg.model, cfg.options.stats_corpus, cfg.options.stats_samples)
            if key in stats_done:
                seconds.pop("stats")
            stats_done.add(key)
        source = f"estimate ({100 * device.mfu:.0f}% of peak)"
        c = cal.get((cfg.method, cfg.model))
        if c is not None:
            seconds["edit"] *= c.edit
            seconds["eval"] *= c.eval
            source = f"{c.runs} earlier run(s)"
        total_s = sum(seconds.values())
        capacity = device.memory * (gpus if 0 < gpus < 1 else 1.0)
        per_device = est.memory.total
        row = TrialRow(values=values, cfg=cfg, estimate=est, per_device=per_device, capacity=capacity,
                       fits=per_device <= capacity, seconds=total_s,
                       gpu_hours=total_s / 3600 * (gpus if device.kind == "cuda" else 0.0), time_source=source)
        rows.append(row)
        if lengths.source == "characters":
            notes.append(f"{cfg.model}: no local tokenizer.json, sequence lengths from characters / 3.6")
    notes.extend(n for r in rows for n in r.estimate.notes)
    return DryRun(spec=spec, device=device, gpus_per_trial=gpus, rows=rows, exhaustive=exhaustive, price=price,
                  notes=list(dict.fromkeys(notes)))


def load_for_dry_run(path: str, overrides: list[str]) -> SweepSpec:
    """The sweep file validated as for a launch, with model shapes read offline (no network, no weights)."""
    return load_sweep(path, overrides, resolve_model=offline_info)


# ---------------------------------------------------------------- output

def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def render(dry: DryRun) -> str:
    dev = dry.device
    where = (f"{_share(dry.gpus_per_trial)} {dev.name} ({dev.memory / 1e9:.0f} GB) per trial" if dev.kind == "cuda"
             else f"CPU, {dev.cpus:g} core(s) per trial")
    search = "grid" if dry.exhaustive else f"optuna: {len(dry.rows)} corner(s) of the space for {dry.n_trials} trial(s)"
    lines = [f"dry run of {dry.spec.source}: {dry.n_trials} trial(s) ({search}), {where}"]
    headers = ["#", "trial", "method", "model", "prec", "trainable", "weights GiB", "peak GiB", "fits", "time",
               "GPU-h" if dev.kind == "cuda" else "CPU-h", "time from"]
    table = []
    for i, r in enumerate(dry.rows, 1):
        m = r.estimate.memory
        hours = r.gpu_hours if dev.kind == "cuda" else r.seconds / 3600 * dev.cpus
        table.append([str(i), _label(r.values) or "base", r.cfg.method, r.cfg.model, r.estimate.precision,
                      f"{r.estimate.trainable_params:,}", f"{m.weights / GiB:.2f}", f"{r.per_device / GiB:.2f}",
                      "yes" if r.fits else "NO", _hms(r.seconds), f"{hours:.3f}", r.time_source])
    widths = [max(len(h), *(len(row[k]) for row in table)) if table else len(h) for k, h in enumerate(headers)]
    lines.append("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in table]
    totals = dry.totals()
    unit = "GPU-hours" if dev.kind == "cuda" else "CPU-hours"
    hours = totals["gpu_hours"] if dev.kind == "cuda" else totals["seconds"] / 3600 * dev.cpus
    total = f"total: {totals['trials']} trial(s), {_hms(totals['seconds'])} of trial time, {hours:.2f} {unit}"
    if "gpu_hours_low" in totals and dev.kind == "cuda":
        total += f" (between {totals['gpu_hours_low']:.2f} and {totals['gpu_hours_high']:.2f})"
    if dry.price is not None:
        total += f", cost {dry.price * hours:.2f} at {dry.price:g} per {unit[:-1]}"
    lines.append(total)
    lines += [f"note: {n}" for n in dry.notes]
    lines += [f"warning: {w}" for w in dry.warnings()]
    return "\n".join(lines)
