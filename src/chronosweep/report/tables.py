"""The report's tables, computed from the trials frame: derived columns, best configurations, windows, cost, front.

Every table is grouped by the report's key: the --by columns plus `method` and `protocol` (unless --by names them),
so a variant (rome-preserve) and each protocol of a method are rows of their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from chronosweep.core.errors import UserError
from chronosweep.evaluation import metrics as registry
from chronosweep.evaluation.objective import Objective
from chronosweep.report.compare import UnitMap, Verdict, compare_metric, compare_objective, unit_word
from chronosweep.report.load import UNIT_METRICS
from chronosweep.report.stats import Bootstrap, bootstrap_intervals, pareto_mask, wilson

# The layer-window table: multi-hop with what it rests on beside it (leakage, hops, locality), then the edit itself.
WINDOW_METRICS = ("multihop_accuracy", "multihop_specific", "multihop_known", "leakage", "hop_accuracy", "hop_edited",
                  "hop_unchanged", "locality", "locality_answer", "reliability")
# The windows the summary names a best for (the objective first), each against its runner-up.
HEADLINE_WINDOW_METRICS = ("objective", "multihop_accuracy", "multihop_specific", "reliability")
# Every metric with units gets an interval column in trials.parquet.
INTERVAL_METRICS = registry.names(with_units=True)
# What one edit cost in resources it got: CPU seconds on CPU, GPU seconds on GPU (wall seconds only for runs that
# recorded neither); the cost table and the Pareto front use it.
COST = "cost_per_edit"


@dataclass
class Tables:
    key: list[str]
    groups: list[str]
    best: pl.DataFrame
    methods: pl.DataFrame
    windows: pl.DataFrame
    best_windows: pl.DataFrame
    cost: pl.DataFrame
    pareto: pl.DataFrame
    failures: pl.DataFrame
    running: pl.DataFrame
    warnings: list[str] = field(default_factory=list)
    # Notes on the cost table (rows measured under different concurrency...).
    cost_notes: list[str] = field(default_factory=list)
    # Trials that finished with a broken model (trial/health.py): listed with the reason, in no other table.
    degenerate: pl.DataFrame = field(default_factory=pl.DataFrame)
    # "<metric>: ..." where no window scored above 0, so none is named best.
    no_best_window: list[str] = field(default_factory=list)

    def named(self) -> dict[str, pl.DataFrame]:
        """Tables under the file names they are written with (--format csv/json)."""
        return {"best": self.best, "methods": self.methods, "windows": self.windows,
                "best_windows": self.best_windows, "cost": self.cost, "pareto": self.pareto,
                "failures": self.failures, "running": self.running, "degenerate": self.degenerate}


# --- derived columns ----------------------------------------------------------------------------------------------

def check_columns(df: pl.DataFrame, by: list[str], objective: Objective) -> None:
    """Unknown --by or --objective columns fail here, before predictions are read."""
    numeric = [c for c, t in df.schema.items() if t.is_numeric()]
    for col in by:
        if col not in df.columns:
            raise UserError(f"--by {col}: no such column in the trials (columns: {', '.join(df.columns)})")
    for col in objective.terms():
        if col not in df.columns or not df.schema[col].is_numeric():
            raise UserError(f"--objective: {col!r} is not a numeric column of the trials "
                            f"(numeric columns: {', '.join(numeric)})")


def window_of(layers) -> tuple[int | None, int | None, str | None]:
    """(start, width, label) of the decoder layers a trial edited (metrics.json's edited_layers).

    A contiguous run is a window; layers with gaps have a label but no start/width; none (P-tuning) is no window.
    """
    if not isinstance(layers, list) or not layers or not all(isinstance(v, int) for v in layers):
        return None, None, None
    lo, hi = min(layers), max(layers)
    if sorted(set(layers)) == list(range(lo, hi + 1)):
        return lo, hi - lo + 1, f"{lo}-{hi}" if hi > lo else str(lo)
    return None, None, ",".join(map(str, sorted(set(layers))))


def layers_label(window: str) -> str:
    """'12-17' -> 'layers 12-17', '5' -> 'layer 5'."""
    return f"layer {window}" if window.isdigit() else f"layers {window}"


def add_derived(df: pl.DataFrame, objective: Objective) -> pl.DataFrame:
    """objective, window, compute hours and quality per compute hour, for every trial that has the inputs."""
    layers = df["edited_layers"].to_list() if "edited_layers" in df.columns else [None] * df.height
    windows = [window_of(v) for v in layers]
    terms = [c for c in objective.terms() if c in df.columns]
    values = [objective.value(row, missing="rescale") for row in df.select(terms).iter_rows(named=True)]
    df = df.with_columns(
        pl.Series("window_start", [w[0] for w in windows], dtype=pl.Int64),
        pl.Series("window_width", [w[1] for w in windows], dtype=pl.Int64),
        pl.Series("window", [w[2] for w in windows], dtype=pl.String),
        # A trial lacking a term (no paraphrases: no generalization) has the terms it has scaled to the full weight.
        pl.Series("objective", values, dtype=pl.Float64),
        # Higher is better whatever the objective's mode: what ranking and the Pareto front compare.
        pl.Series("objective_score", [None if v is None else (v if objective.mode == "max" else -v) for v in values],
                  dtype=pl.Float64),
    )
    num = lambda c: pl.col(c).cast(pl.Float64) if c in df.columns else pl.lit(None, dtype=pl.Float64)  # noqa: E731
    gpu = num("n_gpus").fill_null(0) > 0
    cpu_known = num("edit_cpu_seconds").is_not_null()
    # CPU seconds count the work whatever else shared the cores; wall x threads only bounds it (older runs).
    cpu_busy = pl.when(cpu_known).then(num("edit_cpu_seconds") + num("eval_cpu_seconds").fill_null(0.0)) \
        .otherwise((num("edit_seconds") + num("eval_seconds")) * num("threads"))
    df = df.with_columns(
        compute_hours=pl.when(gpu).then((num("edit_seconds") + num("eval_seconds")) * num("n_gpus") / 3600)
        .otherwise(cpu_busy / 3600),
        compute_unit=pl.when(num("edit_seconds").is_null()).then(None)
        .when(gpu).then(pl.lit("GPU-hours")).otherwise(pl.lit("CPU-hours")),
        cost_per_edit=pl.when(gpu).then(pl.coalesce(num("edit_gpu_seconds_per_edit"),
                                                    num("edit_seconds_per_edit") * num("n_gpus")))
        .when(cpu_known).then(pl.coalesce(num("edit_cpu_seconds_per_edit"),
                                          num("edit_cpu_seconds") / num("n_edits")))
        .otherwise(num("edit_seconds_per_edit")),
        cost_unit=pl.when(num("edit_seconds_per_edit").is_null() & num("edit_cpu_seconds").is_null()).then(None)
        .when(gpu).then(pl.lit("GPU s")).when(cpu_known).then(pl.lit("CPU s"))
        .otherwise(pl.lit("wall s (no CPU time recorded)")),
    )
    return df.with_columns(
        objective_per_compute_hour=pl.when(pl.col("compute_hours") > 0)
        .then(pl.col("objective") / pl.col("compute_hours")))


def unit_map(units: pl.DataFrame) -> UnitMap:
    """(run_dir, metric) -> {unit id: value}: what intervals and paired comparisons resample."""
    out: UnitMap = {}
    if units.height:
        for (run_dir, metric), part in units.group_by("run_dir", "metric", maintain_order=True):
            out[(run_dir, metric)] = dict(zip(part["unit"].to_list(), part["value"].to_list()))
    return out


def add_intervals(df: pl.DataFrame, units: UnitMap, boot: Bootstrap) -> tuple[pl.DataFrame, list[str]]:
    """Add <metric>_ci_low/_ci_high/_n for every trial with predictions (Wilson or bootstrap, as the registry says);
    warn where the units disagree with metrics.json."""
    boot_groups: dict[tuple[str, str], np.ndarray] = {}
    rows: dict[str, dict] = {}
    for (run_dir, metric), values in sorted(units.items()):
        m = registry.METRICS.get(metric)
        if m is None or not values:
            continue
        if m.interval == "wilson":
            mean = float(np.mean(list(values.values())))
            low, high = wilson(mean, len(values), boot.confidence)
            rows.setdefault(run_dir, {"run_dir": run_dir}).update(
                {f"{metric}_ci_low": low, f"{metric}_ci_high": high, f"{metric}_n": len(values),
                 f"{metric}_units_mean": mean})
        else:
            boot_groups[(run_dir, metric)] = np.array(list(values.values()), dtype=np.float64)
    for (run_dir, metric), iv in bootstrap_intervals(boot_groups, boot).items():
        rows.setdefault(run_dir, {"run_dir": run_dir}).update(
            {f"{metric}_ci_low": iv.low, f"{metric}_ci_high": iv.high, f"{metric}_n": iv.n,
             f"{metric}_units_mean": iv.mean})
    schema = {"run_dir": pl.String}
    for m in INTERVAL_METRICS:
        schema.update({f"{m}_ci_low": pl.Float64, f"{m}_ci_high": pl.Float64, f"{m}_n": pl.Int64,
                       f"{m}_units_mean": pl.Float64})
    wide = pl.from_dicts(list(rows.values()), schema=schema) if rows else pl.DataFrame(schema=schema)
    df = df.join(wide, on="run_dir", how="left")
    warnings = []
    for m in INTERVAL_METRICS:
        if m not in df.columns:
            continue
        off = df.filter((pl.col(m) - pl.col(f"{m}_units_mean")).abs() > 1e-6)
        for r in off.select("run_dir", m, f"{m}_units_mean").iter_rows():
            warnings.append(f"{r[0]}: {m} is {r[1]:.4f} in metrics.json but {r[2]:.4f} from predictions.jsonl; "
                            "its interval is centred on the latter")
    return df.drop([f"{m}_units_mean" for m in INTERVAL_METRICS]), warnings


def add_pareto(df: pl.DataFrame, groups: list[str]) -> pl.DataFrame:
    """pareto: the trial is on its group's front of objective (higher) against cost per edit (lower)."""
    if COST not in df.columns:
        return df.with_columns(pareto=pl.lit(False))
    df = df.with_row_index("_row")
    flags = np.zeros(df.height, dtype=bool)
    parts = df.partition_by(groups, maintain_order=True) if groups else [df]
    for part in parts:
        # Only healthy finished trials compete: a degenerate one must not push a real trial off the front.
        score = part.select(pl.when(pl.col("status") == "ok").then(pl.col("objective_score")))[:, 0]
        mask = pareto_mask(part[COST].cast(pl.Float64).fill_null(np.nan).to_numpy(),
                           score.fill_null(np.nan).to_numpy())
        flags[part["_row"].to_numpy()[mask]] = True
    return df.with_columns(pareto=pl.Series(flags)).drop("_row")


# --- tables ---------------------------------------------------------------------------------------------------------

def _ranked(df: pl.DataFrame) -> pl.DataFrame:
    """Best first: higher objective, then cheaper per edit, then trial name (so ties resolve the same every time)."""
    cost = pl.col(COST) if COST in df.columns else pl.lit(None)
    return df.filter(pl.col("objective_score").is_not_null()).sort(
        [pl.col("objective_score"), cost, pl.col("experiment"), pl.col("trial")],
        descending=[True, False, False, False], nulls_last=True)


def config_summaries(ok: pl.DataFrame, key: list[str], config_cols: list[str]) -> pl.DataFrame:
    """run_dir -> 'rank=32, lr=0.002, ...': the method's own options plus shared settings that vary in the group."""
    methods = set(ok["method"].drop_nulls().unique().to_list())
    shared = [c for c in config_cols if c in ok.columns and c.split(".")[0] not in methods
              and not c.startswith("config.")]
    out_dirs, out_text = [], []
    for part in ok.partition_by(key, maintain_order=True) if key else [ok]:
        varying = [c for c in shared if part[c].n_unique() > 1] if part.height > 1 else []
        for r in part.iter_rows(named=True):
            m = r["method"]
            own = [c for c in config_cols if c.startswith(f"{m}.") and r.get(c) is not None]
            items = [f"{c[len(m) + 1:]}={r[c]}" for c in own] + [f"{c}={r[c]}" for c in varying]
            out_dirs.append(r["run_dir"])
            out_text.append(", ".join(items))
    return pl.DataFrame({"run_dir": out_dirs, "config": out_text}, schema={"run_dir": pl.String, "config": pl.String})


def _ci_columns(metrics) -> list[str]:
    return [c for m in metrics for c in (m, f"{m}_ci_low", f"{m}_ci_high", f"{m}_n")]


def _select(df: pl.DataFrame, cols: list[str]) -> pl.DataFrame:
    return df.select([pl.col(c) if c in df.columns else pl.lit(None).alias(c) for c in cols])


def _present(df: pl.DataFrame, metrics) -> list[str]:
    """The metrics some finished trial has a value for (multi-hop columns vanish on DyKnow, neighborhood on MQuAKE)."""
    return [m for m in dict.fromkeys(metrics) if m in df.columns and df[m].null_count() < df.height]


def _name(row: dict, who: list[str], window: bool) -> str:
    if window and row.get("window"):
        return layers_label(row["window"])
    return "/".join(str(row[c]) for c in who)


_VERDICT_SCHEMA = {"runner_up": pl.String, "runner_up_value": pl.Float64, "diff": pl.Float64, "diff_low": pl.Float64,
                   "diff_high": pl.Float64, "paired_n": pl.Int64, "test": pl.String, "p_value": pl.Float64,
                   "separated": pl.Boolean, "verdict": pl.String}


def _verdict_row(v: Verdict | None, runner_up_value, what: str) -> dict:
    if v is None:
        return {k: None for k in _VERDICT_SCHEMA}
    c = v.comparison
    return {"runner_up": v.runner_up, "runner_up_value": runner_up_value,
            "diff": c.diff if c else None, "diff_low": c.low if c else None, "diff_high": c.high if c else None,
            "paired_n": c.n if c else None, "test": c.method if c else None, "p_value": c.p_value if c else None,
            "separated": v.separated if not v.alone else None, "verdict": v.words(what)}


def _best_with_verdicts(ranked: pl.DataFrame, key: list[str], who: list[str], objective: Objective,
                        units: UnitMap, boot: Bootstrap) -> pl.DataFrame:
    """Best trial per key group with its comparison against the group's runner-up on the objective."""
    rows = []
    for part in ranked.partition_by(key, maintain_order=True) if ranked.height else []:
        best = part.row(0, named=True)
        if part.height == 1:
            v = Verdict(None, None, alone=True)
            second = None
        else:
            second = part.row(1, named=True)
            v = compare_objective(objective, best, second, units, boot, _name(second, who, False))
        rows.append({"run_dir": best["run_dir"], **_verdict_row(v, second["objective"] if second else None,
                                                               "units per term")})
    return pl.DataFrame(rows, schema={"run_dir": pl.String, **_VERDICT_SCHEMA})


def _best_windows(windows: pl.DataFrame, key: list[str], who: list[str], objective: Objective, units: UnitMap,
                  boot: Bootstrap) -> tuple[pl.DataFrame, list[str]]:
    """Per key group and headline metric: the best window, its runner-up, and whether the two are separated; and
    a line for each group where no window scored above 0 on a higher-is-better metric (none is named best)."""
    out, nothing = [], []
    single = list(objective.terms()) if len(objective.terms()) == 1 else []
    for metric in HEADLINE_WINDOW_METRICS:
        if metric not in windows.columns or (metric == "objective" and single):
            continue  # a one-metric objective is that metric's own line
        m = registry.METRICS.get(metric)
        lower = m is not None and m.direction == "min"
        cand = windows.filter(pl.col(metric).is_not_null())
        if cand.is_empty():
            continue
        low_col = f"{metric}_ci_low" if f"{metric}_ci_low" in cand.columns else metric
        cand = cand.sort([metric, low_col, "window_width", "window_start"],
                         descending=[not lower, not lower, False, False], nulls_last=True)
        for part in cand.partition_by(key, maintain_order=True):
            best = part.row(0, named=True)
            if not lower and best[metric] <= 0:
                where = ", ".join(f"{c}={best[c]}" for c in key)
                nothing.append(f"{where}: no window scored above 0 on {metric} ({part.height} window"
                               f"{'s' if part.height > 1 else ''} at 0): none is named best")
                continue
            ties = int((part[metric] == best[metric]).sum()) - 1
            if part.height == 1:
                v, second = Verdict(None, None, alone=True), None
            else:
                second = part.row(1, named=True)
                name = _name(second, who, True)
                v = (compare_objective(objective, best, second, units, boot, name) if metric == "objective"
                     else compare_metric(metric, best["run_dir"], second["run_dir"], units, boot, name))
            what = "units per term" if metric == "objective" else unit_word(metric)
            out.append({**{k: best[k] for k in key}, "metric": metric, "window": best["window"],
                        "window_start": best["window_start"], "window_width": best["window_width"],
                        "value": best[metric], "ci_low": best.get(f"{metric}_ci_low"),
                        "ci_high": best.get(f"{metric}_ci_high"), "n": best.get(f"{metric}_n"), "ties": ties,
                        **{c: best[c] for c in who}, "trials": best["trials"], "run_dir": best["run_dir"],
                        **_verdict_row(v, second[metric] if second else None, what)})
    if not out:
        return pl.DataFrame(schema={**{k: windows.schema[k] for k in key}, "metric": pl.String, "window": pl.String}), nothing
    return pl.from_dicts(out, infer_schema_length=None).sort(key, nulls_last=True, maintain_order=True), nothing


def concurrency_notes(ok: pl.DataFrame, groups: list[str]) -> list[str]:
    """Rows measured with different numbers of trials beside them: their wall seconds do not compare."""
    if "concurrent_trials" not in ok.columns or ok["concurrent_trials"].drop_nulls().is_empty():
        return ["No trial recorded how many others ran beside it (runs before scoring version 3): wall seconds "
                "may reflect concurrency as much as cost."] if ok.height else []
    notes = []
    for part in ok.partition_by(groups, maintain_order=True) if groups else [ok]:
        seen = sorted(part["concurrent_trials"].drop_nulls().unique().to_list())
        if len(seen) > 1:
            where = ", ".join(f"{c}={part[c][0]}" for c in groups)
            notes.append(f"{where + ': ' if where else ''}trials ran beside {', '.join(map(str, seen))} other "
                         "trials on their node: compare cost per edit (CPU or GPU seconds), not wall seconds.")
    return notes


HOST_COLUMNS = ("host.cpu", "host.cpu_features", "host.logical_cpus", "host.gpu")


def host_notes(ok: pl.DataFrame) -> list[str]:
    """Trials measured on different machines: their seconds (wall and CPU) do not compare as costs of the method."""
    if "host.cpu" not in ok.columns:
        return []
    from chronosweep.trial.host import label

    cols = [c for c in HOST_COLUMNS if c in ok.columns]
    counts: dict[str, int] = {}
    for row in ok.select(cols).iter_rows(named=True):
        if row.get("host.cpu") is None:
            continue
        name = label({k.removeprefix("host."): v for k, v in row.items()})
        counts[name] = counts.get(name, 0) + 1
    if len(counts) < 2:
        return []
    seen = "; ".join(f"{name}: {n} trial(s)" for name, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    return [f"Trials ran on {len(counts)} different hosts ({seen}): their seconds measure the machines as much as the "
            "methods; compare costs within one host (metrics.json `host`)."]


def build_tables(df: pl.DataFrame, by: list[str], config_cols: list[str], objective: Objective | None = None,
                 units: UnitMap | None = None, boot: Bootstrap | None = None) -> Tables:
    """All tables from a trials frame that already has derived, interval and pareto columns."""
    objective = objective or Objective.mean_of(["reliability", "generalization", "locality"])
    units = units or {}
    boot = boot or Bootstrap()
    groups = list(by)
    key = groups + [c for c in ("method", "protocol") if c not in groups and c in df.columns]
    ok = df.filter(pl.col("status") == "ok")
    summaries = config_summaries(ok, key, config_cols) if ok.height else pl.DataFrame(
        schema={"run_dir": pl.String, "config": pl.String})
    ok = ok.join(summaries, on="run_dir", how="left")
    ranked = _ranked(ok)
    counts = ok.group_by(key).agg(pl.len().alias("trials"),
                                  pl.col("compute_hours").sum().alias("sweep_compute_hours"),
                                  pl.col(COST).median().alias(f"median_{COST}") if COST in ok.columns
                                  else pl.lit(None, dtype=pl.Float64).alias(f"median_{COST}"))
    # Trial names repeat across experiments (trial_00000...): name the experiment too when there are several.
    who = ["experiment", "trial"] if df["experiment"].n_unique() > 1 and "experiment" not in groups else ["trial"]
    best = ranked.group_by(key, maintain_order=True).first().join(counts, on=key, how="left", nulls_equal=True)
    best = best.join(_best_with_verdicts(ranked, key, who, objective, units, boot), on="run_dir", how="left")
    # A method whose trials all tie at objective 0 learnt nothing anywhere: its first trial is shown, not called best.
    zero_ties = ranked.filter(pl.col("objective_score") == 0).group_by(key).agg(pl.len().alias("_zeros"))
    best = best.join(zero_ties, on=key, how="left", nulls_equal=True)
    best = best.sort(key, nulls_last=True).with_columns(
        basis=pl.when((pl.col("objective_score") == 0) & (pl.col("_zeros") > 1))
        .then(pl.format("no best: {} trials tie at objective 0", pl.col("_zeros")))
        .when(pl.col("trials") > 1).then(pl.format("best of {} trials", pl.col("trials")))
        .otherwise(pl.lit("only trial"))).drop("_zeros")

    terms = [t for t in objective.terms() if t in ok.columns]
    shown = _present(ok, [*UNIT_METRICS, *(t for t in terms if t in INTERVAL_METRICS)])
    # Objective terms without units (a cost such as edit_seconds) are shown as they are, so every term is in a table.
    plain_terms = [t for t in terms if t not in INTERVAL_METRICS]
    best_cols = key + ["trials", *who, "objective", "verdict", "window", "config", *shown, *plain_terms, COST,
                       "cost_unit", "run_dir"]
    methods_cols = key + ["trials", "basis", *who, "objective", *_ci_columns(shown)]
    cost_cols = key + [*who, COST, "cost_unit", "edit_seconds_per_edit", "concurrent_trials", "load_average",
                       "compute_hours", "compute_unit", "trainable_params", "trainable_fraction", "peak_rss_mb",
                       "peak_gpu_mb", "objective", "objective_per_compute_hour", "trials", f"median_{COST}",
                       "sweep_compute_hours"]

    cell = key + ["window", "window_start", "window_width"]
    in_window = ranked.filter(pl.col("window").is_not_null())
    cell_counts = in_window.group_by(cell).len("trials")
    windows = (in_window.group_by(cell, maintain_order=True).first()
               .join(cell_counts, on=cell, how="left", nulls_equal=True)
               .sort(key + ["window_width", "window_start", "window"], nulls_last=True))
    window_metrics = _present(in_window, [*(t for t in terms if t in INTERVAL_METRICS), *WINDOW_METRICS])
    best_windows, no_best_window = _best_windows(windows, key, who, objective, units, boot)
    windows = _select(windows, cell + ["trials", *who, "objective", *_ci_columns(window_metrics), *plain_terms,
                                       "run_dir"])

    front = ok.filter(pl.col("pareto")).sort(groups + [COST, "objective_score"] if groups else [COST, "objective_score"],
                                             nulls_last=True)
    pareto = _select(front, groups + ["method", *who, "window", COST, "cost_unit", "objective", "compute_hours",
                                      "config"])

    bad = df.filter(pl.col("status").is_in(["failed", "invalid"]))
    failures = _select(bad, groups + [c for c in ("experiment", "trial", "status", "error", "error_file")
                                      if c not in groups])
    running_cols = [c for c in ("experiment", "trial", "tune.iteration", "run_dir") if c not in groups]
    running = _select(df.filter(pl.col("status") == "running"), groups + running_cols)
    degenerate = _select(df.filter(pl.col("status") == "degenerate").sort("experiment", "trial"),
                         groups + [c for c in ("experiment", "trial", "method", "objective", "error", "error_file")
                                   if c not in groups]).rename({"error": "reason"})
    return Tables(key=key, groups=groups, best=_select(best, best_cols), methods=_select(best, methods_cols),
                  windows=windows, best_windows=best_windows, cost=_select(best, cost_cols), pareto=pareto,
                  failures=failures, running=running,
                  cost_notes=concurrency_notes(ok, groups) + host_notes(ok), degenerate=degenerate,
                  no_best_window=no_best_window)
