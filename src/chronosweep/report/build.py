"""`make_report`: experiments in, report folder out (trials.parquet, summary.md/.html, plots/, optional CSV/JSON)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from chronosweep.core.errors import UserError
from chronosweep.evaluation.objective import Objective
from chronosweep.report import render as r
from chronosweep.report.constraints import blocks as constraint_blocks
from chronosweep.report.constraints import constraint_table
from chronosweep.report.load import UNIT_METRICS, load_trials, load_units
from chronosweep.report.stats import DEFAULT_OBJECTIVE, Bootstrap, parse_objective
from chronosweep.report.tables import (
    COST,
    WINDOW_METRICS,
    Tables,
    add_derived,
    add_intervals,
    add_pareto,
    build_tables,
    check_columns,
    layers_label,
)

FORMATS = ("md", "csv", "json")


@dataclass
class ReportOptions:
    by: list[str] = field(default_factory=list)
    # md (summary.md + summary.html) is always written; csv and json add one file per table.
    formats: list[str] = field(default_factory=lambda: ["md"])
    # '+'-joined metric names (their mean), or the sweep's own Objective.
    objective: str | Objective = DEFAULT_OBJECTIVE
    bootstrap: Bootstrap = field(default_factory=Bootstrap)
    # metric -> bound in its better direction (evaluation.constraints): the "meeting the constraints" section.
    constraints: dict = field(default_factory=dict)
    plots: bool = True
    progress: bool = True


@dataclass
class ReportResult:
    trials: pl.DataFrame
    tables: Tables
    files: list[Path]
    # Finished trials against the constraints, best first (empty without constraints).
    constrained: pl.DataFrame = field(default_factory=pl.DataFrame)


def make_report(experiments: list[str | Path], out: str | Path, options: ReportOptions | None = None) -> ReportResult:
    options = options or ReportOptions()
    for f in options.formats:
        if f not in FORMATS:
            raise UserError(f"--format {f}: unknown format (known: {', '.join(FORMATS)})")
    objective = resolve_objective(options.objective)
    loaded = load_trials(experiments, progress=options.progress)
    check_columns(loaded.trials, options.by, objective)
    df = add_derived(loaded.trials, objective)
    ok_dirs = df.filter(pl.col("status") == "ok")["run_dir"].to_list()
    units, unit_problems = load_units(ok_dirs)
    df, warnings = add_intervals(df, units, options.bootstrap)
    df = add_pareto(df, options.by)
    tables = build_tables(df, options.by, loaded.config_columns)
    tables.warnings = loaded.problems + unit_problems + warnings
    constrained = constraint_table(df, options.constraints, loaded.config_columns)

    out = Path(out)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    files = [out / "trials.parquet"]
    df.write_parquet(files[0])
    plots = make_plots(df, tables, out) if options.plots else {}
    blocks = summary_blocks(df, tables, options, [str(e) for e in experiments], plots, constrained)
    (out / "summary.md").write_text(r.to_markdown(blocks))
    (out / "summary.html").write_text(r.to_html(blocks, "chronosweep report"))
    files += [out / "summary.md", out / "summary.html", *(out / p for p in plots.values())]
    named = {"trials": df, **tables.named(), **({"constrained": constrained} if options.constraints else {})}
    for fmt in set(options.formats) - {"md"}:
        for name, table in named.items():
            path = out / f"{name}.{fmt}"
            if fmt == "csv":
                _flat(table).write_csv(path)
            else:
                table.write_json(path)
            files.append(path)
    return ReportResult(df, tables, files, constrained)


def resolve_objective(objective: str | Objective) -> Objective:
    return objective if isinstance(objective, Objective) else parse_objective(objective)


def _flat(df: pl.DataFrame) -> pl.DataFrame:
    """CSV holds no lists: MEMIT's layer lists become '[4,5,6]'."""
    lists = [c for c, t in df.schema.items() if isinstance(t, pl.List)]
    return df.with_columns(pl.format("[{}]", pl.col(c).cast(pl.List(pl.String)).list.join(",")).alias(c)
                           for c in lists)


# --- grouping helpers -----------------------------------------------------------------------------------------------

def _group_values(tables: Tables, frames: list[pl.DataFrame]) -> list[tuple]:
    if not tables.groups:
        return [()]
    seen: dict[tuple, None] = {}
    for f in frames:
        for row in f.select(tables.groups).unique(maintain_order=True).iter_rows():
            seen[row] = None
    return list(seen)


def _in_group(df: pl.DataFrame, groups: list[str], values: tuple) -> pl.DataFrame:
    for col, value in zip(groups, values):
        df = df.filter(pl.col(col).eq_missing(value))
    return df


def _group_title(groups: list[str], values: tuple) -> str:
    return ", ".join(f"{c}={v}" for c, v in zip(groups, values))


def make_plots(df: pl.DataFrame, tables: Tables, out: Path) -> dict[tuple, str]:
    """Every figure, keyed by what it shows; values are paths relative to out."""
    from chronosweep.report import plots as p

    made: dict[tuple, str] = {}
    ok = df.filter(pl.col("status") == "ok")
    for g in _group_values(tables, [tables.methods, ok]):
        title = _group_title(tables.groups, g)
        suffix = f" ({title})" if title else ""
        methods = _in_group(tables.methods, tables.groups, g)
        name = f"plots/{p.slug(*g, 'methods')}.png"
        if p.method_bars(methods, UNIT_METRICS, f"Best trial per method, 95% bootstrap CI over edits{suffix}",
                         out / name):
            made[("methods", g)] = name
        windows = _in_group(tables.windows, tables.groups, g)
        best = _in_group(tables.best_windows, tables.groups, g)
        for method in windows["method"].unique(maintain_order=True).to_list():
            for metric in WINDOW_METRICS:
                pick = best.filter((pl.col("method") == method) & (pl.col("metric") == metric))
                name = f"plots/{p.slug(*g, method, 'window', metric)}.png"
                heading = f"{method}: {p.label(metric)} by layer window{suffix}"
                if p.window_heatmap(windows.filter(pl.col("method") == method), metric,
                                    pick.row(0, named=True) if pick.height else None, heading, out / name):
                    made[("window", g, method, metric)] = name
        name = f"plots/{p.slug(*g, 'cost-quality')}.png"
        if p.cost_quality(_in_group(ok, tables.groups, g), COST, f"Quality against edit cost{suffix}", out / name):
            made[("cost", g)] = name
    return made


# --- the summary ----------------------------------------------------------------------------------------------------

def summary_blocks(df: pl.DataFrame, tables: Tables, options: ReportOptions, experiments: list[str],
                   plots: dict[tuple, str], constrained: pl.DataFrame | None = None) -> list[r.Block]:
    counts = dict(df.group_by("status").len().iter_rows())
    boot = options.bootstrap
    level = f"{100 * boot.confidence:g}%"
    objective = resolve_objective(options.objective)
    blocks: list[r.Block] = [
        r.Heading(1, "chronosweep report"),
        r.Bullets([
            f"Experiments: {', '.join(experiments)}",
            "Trials: " + ", ".join(f"{counts.get(s, 0)} {s}" for s in ("ok", "failed", "running", "invalid")),
            f"Objective: {objective.describe()} (the same value the sweep computes; a trial lacking a term has the "
            "terms it has scaled to the full weight)",
            f"Intervals: {level} percentile bootstrap over edits ({boot.n_resamples} resamples, seed {boot.seed}), "
            "from each trial's predictions.jsonl; a method with several trials is shown by its best trial "
            "(highest objective, then cheapest per edit)",
            "Grouped by: " + ", ".join(tables.key),
            f"Written {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}",
        ]),
        *constraint_blocks(constrained if constrained is not None else pl.DataFrame(), options.constraints),
        r.Heading(2, "Best configuration per method"),
        r.table(tables.best.drop("run_dir")),
        r.Heading(2, f"Quality per method ({level} bootstrap CI over edits)"),
        r.Para("Each row is the method's best trial; `basis` says of how many. n = edits (reliability, "
               "generalization) or probes (locality, multi-hop cases) resampled."),
        r.table(tables.methods, ci_metrics=UNIT_METRICS),
    ]
    blocks += [r.Image(path, "method bars") for key, path in plots.items() if key[0] == "methods"]

    blocks.append(r.Heading(2, "Layer windows"))
    if tables.windows.is_empty():
        blocks.append(r.Para("No finished trial names a layer window (<method>.layer_start/layer_width, "
                             "<method>.layers or <method>.layer)."))
    else:
        blocks.append(r.Para("A cell is one layer window of one method; when several trials share a window the cell "
                             "shows the one with the best objective (`trials` counts them)."))
        items = []
        for row in tables.best_windows.iter_rows(named=True):
            where = _group_title(tables.key, tuple(row[c] for c in tables.key))
            span = (f" (layer_start {row['window_start']}, width {row['window_width']})"
                    if row["window_start"] is not None else "")
            items.append(f"{where}: best window for {row['metric']}: **{layers_label(row['window'])}**{span} = "
                         f"{r.with_ci(row['value'], row['ci_low'], row['ci_high'], row['n'])}, trial {row['trial']}"
                         + (f" (tied on the value with {row['ties']} other window{'s' if row['ties'] > 1 else ''})"
                            if row["ties"] else ""))
        blocks.append(r.Bullets(items))
        blocks.append(r.table(tables.windows, ci_metrics=WINDOW_METRICS))
        blocks += [r.Image(path, f"{key[2]} {key[3]} by window") for key, path in plots.items() if key[0] == "window"]

    blocks += [
        r.Heading(2, "Cost"),
        r.Para("Best trial per method. compute = (edit + post-edit evaluation seconds) x GPUs / 3600 as GPU-hours "
               "when the trial used GPUs, x CPU threads / 3600 as CPU-hours otherwise; objective per hour divides "
               "the objective by it (compare rows with the same unit). The last columns cover all of the method's "
               "trials."),
        r.table(tables.cost),
        r.Heading(2, "Pareto front: quality against edit cost"),
        r.Para(f"Finished trials that no other trial beats on both edit seconds per edit (lower) and objective "
               f"(higher){' within its group' if tables.groups else ''}."),
        r.table(tables.pareto),
    ]
    blocks += [r.Image(path, "cost against quality") for key, path in plots.items() if key[0] == "cost"]
    blocks += [r.Heading(2, f"Failed trials ({tables.failures.height})"), r.table(tables.failures)]
    blocks += [r.Heading(2, f"Running or incomplete trials ({tables.running.height})"),
               r.Para("No metrics.json and no error.txt yet: still running, or stopped without a trace."),
               r.table(tables.running)]
    if tables.warnings:
        blocks += [r.Heading(2, "Warnings"), r.Bullets(tables.warnings)]
    return blocks
