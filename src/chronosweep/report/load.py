"""Find trials under experiment folders and load them into one Polars frame, one row per trial.

Two layouts are read, and may be mixed:
- a Ray Tune experiment: ``EXPERIMENT/<trial>/`` holds Tune's ``params.json``/``result.json`` (and ``error.txt``
  when the trial failed); the chronosweep run dir sits inside it, normally at ``<trial>/run/``;
- any folder holding chronosweep run dirs (``metrics.json``, ``error.txt`` or ``config.yaml``) at any depth,
  such as the outputs of ``chronosweep edit``.

A run dir with ``metrics.json`` finished (status ``ok``, or ``degenerate`` when run_trial found the edit broke the
model: listed with its reason, never ranked); with ``error.txt`` it failed; with neither it is still running or was
killed (``running``). A run dir whose files cannot be read as the contract in docs/run-dir.md says
is ``invalid``: it is listed with the file and field at fault and kept out of every number.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from chronosweep.core.errors import UserError
from chronosweep.evaluation import metrics as registry

RUN_MARKERS = ("metrics.json", "error.txt", "config.yaml")
TUNE_MARKERS = ("params.json", "result.json")
ID_COLUMNS = ("experiment", "trial", "status", "method", "protocol", "model")

# Quality metrics the report's headline tables and plots show with their intervals (the registry says which).
UNIT_METRICS = registry.names(shown="report", with_units=True)
# metrics.json fields the report computes with: every registered metric, each a number or null.
NUMERIC_FIELDS = tuple(registry.METRICS)
# Large or nested metrics.json parts that are not per-trial scalars (history.jsonl holds the history).
SKIPPED_METRIC_KEYS = ("config", "history")


@dataclass
class TrialDir:
    experiment: str
    # Path of the trial relative to its experiment folder (the Tune trial folder name for Tune layouts).
    trial: str
    # The chronosweep run dir; for a Tune trial that has not started editing it may not exist yet.
    run_dir: Path
    tune_dir: Path | None = None


@dataclass
class Loaded:
    trials: pl.DataFrame
    config_columns: list[str]
    metric_columns: list[str]
    # 'file: what' for every input that was skipped as invalid.
    problems: list[str] = field(default_factory=list)


def _is_tune_trial(files: set[str]) -> bool:
    return any(name in files for name in TUNE_MARKERS)


def _run_dirs_below(folder: Path) -> list[Path]:
    """Run dirs strictly below folder (a Tune trial folder's own error.txt does not make it a run dir)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        if Path(dirpath) != folder and any(name in filenames for name in RUN_MARKERS):
            found.append(Path(dirpath))
            dirnames[:] = []
        else:
            dirnames.sort()
    return found


def discover(root: Path, experiment: str) -> list[TrialDir]:
    """Every trial under root, in path order. Adapter folders and other run-dir contents are not descended into."""
    out: list[TrialDir] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        files = set(filenames)
        rel = here.relative_to(root).as_posix()
        trial = root.name if rel == "." else rel
        if _is_tune_trial(files):
            runs = _run_dirs_below(here)
            if not runs:
                out.append(TrialDir(experiment, trial, here / "run", tune_dir=here))
            for run in runs:
                sub = run.relative_to(here).as_posix()
                name = trial if sub == "run" or len(runs) == 1 else f"{trial}/{sub}"
                out.append(TrialDir(experiment, name, run, tune_dir=here))
            dirnames[:] = []
        elif any(name in files for name in RUN_MARKERS):
            out.append(TrialDir(experiment, trial, here))
            dirnames[:] = []
        else:
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    return out


def flatten(tree: dict, prefix: str = "", out: dict | None = None) -> dict:
    """Nested mappings become dotted keys (lora.rank); lists of scalars stay lists, other lists become JSON text."""
    out = {} if out is None else out
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flatten(value, f"{name}.", out)
        elif isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
            out[name] = json.dumps(value)
        else:
            out[name] = value
    return out


def error_summary(text: str) -> str:
    """The line of an error.txt that says what went wrong.

    chronosweep writes 'Type: message' first and the traceback after; Ray Tune writes a header and the traceback,
    whose last line is the exception.
    """
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return "(empty error.txt)"
    if lines[0].startswith(("Traceback", "Failure #")):
        line = lines[-1]
    else:
        # The message may span lines (a ConfigError lists every problem): keep it up to the first blank line.
        head = text.strip().split("\n\n", 1)[0]
        line = " ".join(part.strip() for part in head.splitlines() if part.strip())
    return line if len(line) <= 500 else line[:497] + "..."


def _read_yaml(path: Path) -> dict:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    data = yaml.load(path.read_text(), Loader=loader)
    if not isinstance(data, dict):
        raise ValueError(f"the top level must be a mapping, got {type(data).__name__}")
    return data


def _last_json_line(path: Path) -> dict | None:
    """Tune's result.json is append-only ndjson: the last complete line is the latest report."""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - 65536))
        tail = fh.read().decode("utf-8", errors="replace")
    for line in reversed(tail.splitlines()):
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line being written, or cut by the tail window
        return value if isinstance(value, dict) else None
    return None


def _tune_params(params) -> dict:
    """The sampled parameters of a Tune trial. chronosweep sweeps pass them as {"params": {dotted key: value}},
    with list choices (MEMIT layers) as JSON text."""
    if not isinstance(params, dict):
        raise ValueError(f"expected one JSON object, got {type(params).__name__}")
    if set(params) == {"params"} and isinstance(params["params"], dict):
        params = params["params"]
    out = {}
    for key, value in params.items():
        if isinstance(value, str) and value.startswith("["):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        out[key] = value
    return out


def _check_metrics(metrics: object, path: Path) -> str | None:
    if not isinstance(metrics, dict):
        return f"{path}: expected one JSON object, got {type(metrics).__name__}"
    for key in NUMERIC_FIELDS:
        value = metrics.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            return f"{path}: field {key!r} must be a number or null, got {value!r}"
    for key in ("config", "pre"):
        if key in metrics and metrics[key] is not None and not isinstance(metrics[key], dict):
            return f"{path}: field {key!r} must be an object, got {type(metrics[key]).__name__}"
    return None


def read_trial(t: TrialDir) -> tuple[dict, list[str], list[str]]:
    """(row, config keys, metric keys) for one trial; never raises for a bad trial, marks it invalid instead."""
    row: dict = {"experiment": t.experiment, "trial": t.trial, "run_dir": str(t.run_dir), "status": "running",
                 "error": None, "error_file": None}
    config: dict = {}
    metrics: dict = {}
    metrics_path, run_error = t.run_dir / "metrics.json", t.run_dir / "error.txt"
    tune_error = t.tune_dir / "error.txt" if t.tune_dir is not None else None
    if metrics_path.exists():
        try:
            loaded = json.loads(metrics_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            problem = f"{metrics_path}: not valid JSON: {err}"
        else:
            problem = _check_metrics(loaded, metrics_path)
        if problem:
            row.update(status="invalid", error=problem, error_file=str(metrics_path))
        else:
            metrics = loaded
            # run_trial's verdict on the edit itself (trial/health.py): a degenerate trial is shown, never ranked.
            degenerate = loaded.get("status") == "degenerate"
            row["status"] = "degenerate" if degenerate else "ok"
            if degenerate:
                row["error"] = loaded.get("degenerate_reason") or "degenerate edit"
                row["error_file"] = str(metrics_path)
            if isinstance(metrics.get("config"), dict):
                config = metrics["config"]
    else:
        for path in (run_error, tune_error):
            if path is not None and path.exists():
                row.update(status="failed", error=error_summary(path.read_text(errors="replace")),
                           error_file=str(path))
                break
    if not config:
        config_path = t.run_dir / "config.yaml"
        params_path = t.tune_dir / "params.json" if t.tune_dir is not None else None
        try:
            if config_path.exists():
                config = _read_yaml(config_path)
            elif params_path is not None and params_path.exists():
                # The trial has not written its run dir yet: the sweep's sampled parameters are what there is.
                config = _tune_params(json.loads(params_path.read_text()))
        except Exception as err:  # noqa: BLE001 - any unreadable config marks this one trial invalid
            bad = config_path if config_path.exists() else params_path
            row.update(status="invalid", error=f"{bad}: cannot be read: {err}", error_file=str(bad))
            config = {}
    if t.tune_dir is not None and (t.tune_dir / "result.json").exists():
        last = _last_json_line(t.tune_dir / "result.json")
        if last:
            row["tune.trial_id"] = last.get("trial_id")
            row["tune.iteration"] = last.get("training_iteration")

    flat_config = flatten(config)
    flat_metrics = flatten({k: v for k, v in metrics.items() if k not in SKIPPED_METRIC_KEYS})
    flat_metrics.pop("status", None)
    for key, value in flat_config.items():
        # What ran (metrics: device, threads) wins; a differing requested value is kept beside it.
        if key in flat_metrics and flat_metrics[key] != value:
            row[f"config.{key}"] = value
        elif key not in flat_metrics:
            row[key] = value
    row.update(flat_metrics)
    if row["status"] in ("ok", "degenerate") and not isinstance(row.get("method"), str):
        row.update(status="invalid", error=f"{metrics_path}: no 'method' string in metrics.json or its config",
                   error_file=str(metrics_path))
    return row, list(flat_config), list(flat_metrics)


def _kind(value) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "num"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list):
        return "list:" + ",".join(sorted({_kind(v) for v in value if v is not None}))
    return "other"


def _text(value) -> str | None:
    if value is None:
        return None
    return json.dumps(value) if isinstance(value, list) else str(value)


def normalize(rows: list[dict]) -> list[dict]:
    """Give every column one type: a column whose values disagree (int here, text there) becomes text."""
    kinds: dict[str, set[str]] = {}
    for row in rows:
        for key, value in row.items():
            if value is not None:
                kinds.setdefault(key, set()).add(_kind(value))
    mixed = [k for k, ks in kinds.items() if len(ks) > 1 or "other" in ks or any("," in s for s in ks)]
    for row in rows:
        for key in mixed:
            if key in row:
                row[key] = _text(row[key])
    return rows


def load_trials(experiments: list[str | Path], progress: bool = True) -> Loaded:
    """Read every trial of the given experiment folders (or single run dirs) into one frame."""
    from tqdm import tqdm

    roots = [Path(e) for e in experiments]
    for root in roots:
        if not root.is_dir():
            raise UserError(f"{root}: no such experiment folder")
    names = [r.resolve().name for r in roots]
    if len(set(names)) < len(names):
        names = [str(r) for r in roots]  # same folder name in two places: keep them apart by path
    trial_dirs = [t for root, name in zip(roots, names) for t in discover(root, name)]
    if not trial_dirs:
        raise UserError(f"no trials under {', '.join(map(str, roots))} (looked for run dirs holding "
                        f"{', '.join(RUN_MARKERS)} and Ray Tune trial folders holding {', '.join(TUNE_MARKERS)})")
    rows, config_keys, metric_keys = [], {}, {}
    for t in tqdm(trial_dirs, desc="reading trials", unit="trial", disable=not progress, leave=False):
        row, ck, mk = read_trial(t)
        rows.append(row)
        config_keys.update(dict.fromkeys(ck))
        metric_keys.update(dict.fromkeys(mk))
    df = pl.from_dicts(normalize(rows), infer_schema_length=None)
    problems = [r["error"] for r in rows if r["status"] == "invalid"]
    metric_cols = [k for k in metric_keys if k in df.columns]
    config_cols = sorted(k for k in df.columns if k in config_keys and k not in metric_keys)
    config_cols += sorted(k for k in df.columns if k.startswith("config."))
    for col in ("method", "model", "protocol"):
        if col not in df.columns:
            df = df.with_columns(pl.lit(None, dtype=pl.String).alias(col))
    # Runs from before the edit protocols existed applied their edits as one batch.
    df = df.with_columns(pl.when(pl.col("status") == "ok").then(pl.col("protocol").cast(pl.String).fill_null("batch"))
                         .otherwise(pl.col("protocol").cast(pl.String)).alias("protocol"))
    # Contract metrics always exist and are numbers, even when every trial has them null (no paraphrases) or
    # no trial has finished yet.
    df = df.with_columns(pl.col(c).cast(pl.Float64) if c in df.columns and df.schema[c] == pl.Null
                         else pl.lit(None, dtype=pl.Float64).alias(c)
                         for c in NUMERIC_FIELDS if c not in df.columns or df.schema[c] == pl.Null)
    metric_keys.update(dict.fromkeys(c for c in NUMERIC_FIELDS if c not in metric_keys))
    first = [c for c in ID_COLUMNS if c in df.columns]
    tail = ["run_dir", "error", "error_file"]
    rest = [c for c in metric_cols + config_cols if c not in first and c not in tail]
    others = [c for c in df.columns if c not in first and c not in tail and c not in rest]
    df = df.select(first + rest + others + tail)
    return Loaded(df, [c for c in config_cols if c not in first], [c for c in metric_cols if c not in first], problems)


# --- predictions ------------------------------------------------------------------------------------------------

UNIT_SCHEMA = {"run_dir": pl.String, "metric": pl.String, "unit": pl.String, "value": pl.Float64}


def read_predictions(path: Path) -> tuple[list[dict] | None, str | None]:
    """(rows, None), or (None, 'file line N: what') for the first line that breaks the contract."""
    rows = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                return None, f"{path} line {number}: not valid JSON: {err.msg} at character {err.pos + 1}"
            if not isinstance(record, dict):
                return None, f"{path} line {number}: expected a JSON object"
            if not isinstance(record.get("probe"), str):
                return None, f"{path} line {number}: field 'probe' must be a string, got {record.get('probe')!r}"
            score = record.get("score")
            if record["probe"] in _SCORED_PROBES and (isinstance(score, bool) or not isinstance(score, (int, float))):
                return None, f"{path} line {number}: field 'score' must be a number, got {score!r}"
            if record.get("case_id") is None:
                return None, f"{path} line {number}: field 'case_id' is missing"
            rows.append(record)
    return rows, None


_SCORED_PROBES = {"rewrite", "paraphrase", "locality", "neighborhood", "multihop"}


def load_units(run_dirs: list[str], progress: bool = False) -> tuple[pl.DataFrame, list[str]]:
    """Per-unit values (run_dir, metric, unit, value) of every run dir's predictions.jsonl.

    The units are the registry's (evaluation.scoring.unit_values, the same function that computed metrics.json):
    an edit, a probe or a case per metric. Returns the frame and the problems of files that were skipped.
    """
    from tqdm import tqdm

    from chronosweep.evaluation.scoring import unit_values

    columns: dict[str, list] = {k: [] for k in UNIT_SCHEMA}
    problems: list[str] = []
    for rd in tqdm(run_dirs, desc="reading predictions", unit="trial", disable=not progress, leave=False):
        path = Path(rd) / "predictions.jsonl"
        if not path.exists():
            continue
        rows, problem = read_predictions(path)
        if problem:
            problems.append(problem)
            continue
        for metric, units in unit_values(rows).items():
            for unit, value in units.items():
                columns["run_dir"].append(rd)
                columns["metric"].append(metric)
                columns["unit"].append(unit)
                columns["value"].append(value)
    return pl.DataFrame(columns, schema=UNIT_SCHEMA), problems
