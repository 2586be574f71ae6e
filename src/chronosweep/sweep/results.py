"""The end of a sweep: one row per trial (status, sampled values, objective, metrics), the best trial's config."""

from __future__ import annotations

import io
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import yaml

from chronosweep.evaluation import metrics as metrics_registry
from chronosweep.sweep.storage import Location, trial_run_dir

# Tune's bookkeeping in every result; not trial metrics.
_TUNE_KEYS = {
    "timestamp", "time_this_iter_s", "time_since_restore", "iterations_since_restore", "pid", "hostname",
    "node_ip", "date", "done", "config", "trial_id", "experiment_tag", "should_checkpoint", "checkpoint_dir_name",
    "training_iteration", "run_dir", "status",
}
# Shown in the printed table after the objective (when the trial has them); trials.csv holds every metric.
_SHOWN_METRICS = metrics_registry.names(shown="sweep")


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _cell(value):
    """Polars/CSV-friendly scalar: lists and mappings become their JSON text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value)


def _error_line(result, run: Location) -> str | None:
    text = run.child("error.txt").read_text()
    if text:
        return text.strip().splitlines()[0]
    if result.error is None:
        return None
    lines = [line.strip() for line in str(result.error).splitlines() if line.strip()]
    # Ray wraps the trial's exception in a traceback; its last line is the exception itself.
    return lines[-1] if lines else type(result.error).__name__


def status_of(result, early_stopping: bool) -> str:
    metrics = result.metrics or {}
    if _finite(metrics.get("objective")):
        # run_trial's own verdict (trial/health.py): a degenerate edit has an objective but is never ranked.
        return "degenerate" if metrics.get("status") == "degenerate" else "ok"
    if result.error is not None:
        return "failed"
    if not metrics.get("training_iteration"):
        return "pending"
    # Epoch reports but no final one: ASHA stopped it, or the driver was interrupted while it ran.
    return "stopped" if early_stopping else "interrupted"


@dataclass
class Summary:
    frame: pl.DataFrame
    param_columns: list[str]
    shown: list[str]
    mode: str
    best_trial: str | None
    best_config: dict | None
    # Why there is no best trial although some finished (a tie at 0).
    no_best: str | None = None

    @property
    def counts(self) -> dict[str, int]:
        return dict(self.frame.group_by("status").len().iter_rows()) if self.frame.height else {}

    def print(self, file=sys.stdout) -> None:
        # Columns empty for every trial (multi-hop metrics on DyKnow, error when none failed) only take room.
        shown = [c for c in self.shown if c in ("trial", "status") or self.frame[c].null_count() < self.frame.height]
        with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=300, fmt_str_lengths=70, float_precision=4,
                       tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True, tbl_formatting="MARKDOWN"):
            print(self.frame.select(shown), file=file)
        counts = ", ".join(f"{n} {s}" for s, n in sorted(self.counts.items()))
        print(f"\n{self.frame.height} trials: {counts}", file=file)
        degenerate = self.frame.filter(pl.col("status") == "degenerate")
        for row in degenerate.iter_rows(named=True):
            print(f"{row['trial']} is degenerate, never ranked: {row.get('degenerate_reason')}", file=file)
        if self.best_trial is None and self.no_best:
            print(self.no_best, file=file)
            return
        if self.best_trial is None:
            print("no trial finished with an objective" + (" and a healthy edit" if degenerate.height else ""),
                  file=file)
            return
        row = self.frame.filter(pl.col("trial") == self.best_trial).row(0, named=True)
        values = ", ".join(f"{k}={row[k]}" for k in self.param_columns if row.get(k) is not None)
        print(f"best ({self.mode} objective): {self.best_trial} objective={row['objective']:.4f}  {values}", file=file)
        # Highest is not yet better: only a paired comparison with the runner-up (the report's) can say so.
        print("  whether it is separated from the runner-up on the same units: chronosweep report", file=file)

    def write(self, experiment: Location) -> None:
        buffer = io.StringIO()
        self.frame.write_csv(buffer)
        experiment.child("trials.csv").write_text(buffer.getvalue())
        if self.best_config is not None:
            experiment.child("best.yaml").write_text(yaml.safe_dump(self.best_config, sort_keys=False))


def summarize(grid, spec, experiment: Location) -> Summary:
    params = spec.space.keys()
    terms = list(spec.objective.terms())
    rows = []
    for result in grid:
        trial = Path(result.path).name
        run = trial_run_dir(experiment.uri, trial)
        values = spec.space.decode(((result.config or {}).get("params")) or {})
        metrics = result.metrics or {}
        status = status_of(result, spec.file.early_stopping is not None)
        row = {"trial": trial, "status": status}
        row.update({k: _cell(values.get(k)) for k in params})
        row["objective"] = metrics.get("objective") if status in ("ok", "degenerate") else None
        for key, value in metrics.items():
            if key in _TUNE_KEYS or key == "objective":
                continue
            if isinstance(value, dict):
                row.update({f"{key}_{k}": _cell(v) for k, v in value.items() if not isinstance(v, (dict, list))})
            else:
                row[key] = _cell(value)
        row["error"] = _error_line(result, run) if status == "failed" else None
        row["run_dir"] = run.uri
        rows.append(row)
    frame = pl.DataFrame(rows, infer_schema_length=None, strict=False) if rows else pl.DataFrame(
        {"trial": [], "status": [], "objective": [], "error": [], "run_dir": []})
    frame = frame.sort("trial")
    ok = frame.filter(pl.col("status") == "ok")
    best_trial = best_config = no_best = None
    if ok.height:
        best = ok.sort("objective", descending=spec.objective.mode == "max").row(0, named=True)
        best_trial = best["trial"]
        tied = ok.filter(pl.col("objective") == best["objective"]).height
        if best["objective"] == 0 and tied > 1:
            # Nothing was learnt anywhere: naming one of them best would be an artefact of the sort order.
            best_trial, no_best = None, f"no best trial: {tied} trials tie at objective 0"
    if best_trial is not None:
        text = trial_run_dir(experiment.uri, best_trial).child("config.yaml").read_text()
        best_config = yaml.safe_load(text) if text else None
        if best_config is not None:
            # The trial's thread count was its CPU share; rerun alone, torch may use the machine.
            best_config["threads"] = spec.base_raw.get("threads")
    extra = [m for m in (*terms, *_SHOWN_METRICS) if m in frame.columns]
    shown = ["trial", "status", *[p for p in params if p in frame.columns], "objective",
             *dict.fromkeys(extra), "error"]
    return Summary(frame=frame, param_columns=[p for p in params if p in frame.columns],
                   shown=[c for c in dict.fromkeys(shown) if c in frame.columns], mode=spec.objective.mode,
                   best_trial=best_trial, best_config=best_config, no_best=no_best)
