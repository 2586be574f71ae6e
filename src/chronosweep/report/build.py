"""`make_report`: experiments in, report folder out (trials.parquet, summary.md/.html, plots/, optional CSV/JSON)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from chronosweep.core.errors import UserError
from chronosweep.evaluation import metrics as registry
from chronosweep.evaluation.objective import Objective
from chronosweep.report import render as r
from chronosweep.report import streams
from chronosweep.report.constraints import blocks as constraint_blocks
from chronosweep.report.constraints import constraint_table
from chronosweep.report.load import UNIT_METRICS, load_trials, load_units
from chronosweep.report.stats import DEFAULT_OBJECTIVE, THIN, Bootstrap, parse_objective
from chronosweep.report.tables import (
    COST,
    INTERVAL_METRICS,
    Tables,
    add_derived,
    add_intervals,
    add_pareto,
    build_tables,
    check_columns,
    layers_label,
    unit_map,
)

FORMATS = ("md", "csv", "json")
# How the report counts trials; "degenerate" is shown only when there are some.
STATUSES = ("ok", "degenerate", "failed", "running", "invalid")


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
    units_frame, unit_problems = load_units(ok_dirs)
    units = unit_map(units_frame)
    df, warnings = add_intervals(df, units, options.bootstrap)
    df = add_pareto(df, options.by)
    tables = build_tables(df, options.by, loaded.config_columns, objective, units, options.bootstrap)
    tables.warnings = loaded.problems + unit_problems + warnings
    constrained = constraint_table(df, options.constraints, loaded.config_columns)

    out = Path(out)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    files = [out / "trials.parquet"]
    df.write_parquet(files[0])
    plots = make_plots(df, tables, out, objective) if options.plots else {}
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


# Panels of the layer-window figure, in order (those the trials have).
WINDOW_PANELS = ("objective", "multihop_accuracy", "multihop_specific", "leakage", "hop_accuracy", "locality_answer",
                 "locality", "reliability")


def _present(df: pl.DataFrame, columns) -> list[str]:
    return [c for c in columns if c in df.columns and df[c].null_count() < df.height]


def make_plots(df: pl.DataFrame, tables: Tables, out: Path, objective: Objective | None = None) -> dict[tuple, str]:
    """Every figure, keyed by what it shows; values are paths relative to out."""
    from chronosweep.report import plots as p

    made: dict[tuple, str] = {}
    ok = df.filter(pl.col("status") == "ok")
    several_terms = objective is not None and len(objective.terms()) > 1
    for g in _group_values(tables, [tables.methods, ok]):
        title = _group_title(tables.groups, g)
        suffix = f" ({title})" if title else ""
        methods = _in_group(tables.methods, tables.groups, g)
        name = f"plots/{p.slug(*g, 'methods')}.png"
        shown = tuple(_present(methods, UNIT_METRICS))
        if shown and p.method_bars(methods, shown, f"Best trial per method, 95% intervals (Wilson for shares, "
                                   f"bootstrap for scores){suffix}", out / name):
            made[("methods", g)] = name
        windows = _in_group(tables.windows, tables.groups, g)
        best = _in_group(tables.best_windows, tables.groups, g)
        by = ["method"] + (["protocol"] if "protocol" in windows.columns and "protocol" not in tables.groups else [])
        several = "protocol" in by and windows["protocol"].n_unique() > 1
        for values in windows.select(by).unique(maintain_order=True).iter_rows():
            method = values[0]
            who = " ".join(str(v) for v in values) if several else method
            cells = _in_group(windows, by, values)
            panels = [m for m in _present(cells, WINDOW_PANELS) if m != "objective" or several_terms]
            verdicts = {r["metric"]: r for r in _in_group(best, by, values).iter_rows(named=True)}
            name = f"plots/{p.slug(*g, *(values if several else (method,)), 'windows')}.png"
            if p.window_panels(cells, panels, verdicts, f"{who}: layer windows, 95% intervals{suffix}", out / name):
                made[("window", g, who)] = name
        lines = streams.best_per_line(_in_group(ok, tables.groups, g))
        name = f"plots/{p.slug(*g, 'stream')}.png"
        if lines and p.stream_panels(streams.stream_frame(lines), streams.PLOTTED, streams.LABELS,
                                     f"Edit streams: after each wave{suffix}", out / name):
            made[("stream", g)] = name
        name = f"plots/{p.slug(*g, 'cost-quality')}.png"
        if p.cost_quality(_in_group(ok, tables.groups, g), COST, f"Quality against edit cost{suffix}", out / name):
            made[("cost", g)] = name
    return made


# --- the summary ----------------------------------------------------------------------------------------------------

def _credits(df: pl.DataFrame) -> list[str]:
    from chronosweep.data.catalog import CREDITS

    names = set()
    for col in ("dataset", "data.name"):
        if col in df.columns:
            names.update(v for v in df[col].drop_nulls().unique().to_list() if isinstance(v, str))
    return [f"{n}: {CREDITS[n]}" for n in sorted(names) if n in CREDITS]


def _with(row: dict, metric: str) -> str:
    return r.with_ci(row.get(metric), row.get(f"{metric}_ci_low"), row.get(f"{metric}_ci_high"), row.get(f"{metric}_n"))


def window_bullets(tables: Tables, objective: Objective) -> list[str]:
    """'best window for X: **layers a-b** = v [lo, hi] n=N; leakage ..., locality ...; separated from ...'."""
    items = []
    cells = {(tuple(w[c] for c in tables.key), w["window"]): w for w in tables.windows.iter_rows(named=True)}
    for row in tables.best_windows.iter_rows(named=True):
        where = _group_title(tables.key, tuple(row[c] for c in tables.key))
        metric = row["metric"]
        cell = cells.get((tuple(row[c] for c in tables.key), row["window"]), {})
        what = f"the objective ({objective.describe()})" if metric == "objective" else registry.label(metric)
        value = r.with_ci(row["value"], row["ci_low"], row["ci_high"], row["n"])
        beside = [f"{registry.label(m)} {_with(cell, m)}" for m in ("leakage", "locality_answer", "locality",
                                                                   "multihop_specific", "hop_accuracy")
                  if m != metric and cell.get(m) is not None]
        verdict = row.get("verdict") or ""
        if row.get("separated"):
            text = f"{where}: best window for {what}: **{layers_label(row['window'])}** = {value}; {verdict}"
        elif row.get("runner_up"):
            # Not separated: no winner is named, the leading window is said to be level with the runner-up.
            text = f"{where}: no best window for {what}: {layers_label(row['window'])} = {value} is {verdict}"
        else:
            text = f"{where}: {what}: {layers_label(row['window'])} = {value} ({verdict})"
        if row["ties"]:
            text += f" (tied on the value with {row['ties']} other window{'s' if row['ties'] > 1 else ''})"
        if beside:
            text += "; beside it: " + ", ".join(beside)
        if row["n"] is not None and row["n"] < THIN and "evidence is thin" not in text:
            text += f"; the evidence is thin (n={row['n']} < {THIN})"
        items.append(text)
    return items


def summary_blocks(df: pl.DataFrame, tables: Tables, options: ReportOptions, experiments: list[str],
                   plots: dict[tuple, str], constrained: pl.DataFrame | None = None) -> list[r.Block]:
    counts = dict(df.group_by("status").len().iter_rows())
    boot = options.bootstrap
    level = f"{100 * boot.confidence:g}%"
    objective = resolve_objective(options.objective)
    credits = _credits(df.filter(pl.col("status") == "ok"))
    blocks: list[r.Block] = [
        r.Heading(1, "chronosweep report"),
        r.Bullets([
            f"Experiments: {', '.join(experiments)}",
            "Trials: " + ", ".join(f"{counts.get(s, 0)} {s}" for s in STATUSES if s in counts or s != "degenerate"),
            f"Objective: {objective.describe()} (the same value the sweep computes; a trial lacking a term has the "
            "terms it has scaled to the full weight)",
            f"Intervals ({level}, from each trial's predictions.jsonl, n = units): Wilson score intervals for shares "
            f"(reliability, generalization, multi-hop per case, leakage...), percentile bootstrap for graded scores "
            f"(ROUGE locality, token accuracies; {boot.n_resamples} resamples, seed {boot.seed})",
            "A best trial or window is named only when its difference from the runner-up on the same units has an "
            f"interval excluding 0 (McNemar for 0/1 outcomes, paired bootstrap otherwise); fewer than {THIN} paired "
            "units is called thin evidence",
            "Grouped by: " + ", ".join(tables.key),
            *(f"Data: {c}" for c in credits),
            f"Written {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}",
        ]),
        *constraint_blocks(constrained if constrained is not None else pl.DataFrame(), options.constraints),
        r.Heading(2, "Best configuration per method"),
        r.Para("The trial with the highest objective per method, compared with the method's runner-up trial "
               "(`verdict`): the objective's difference with a paired bootstrap interval, each term resampled over "
               "its own units."),
        r.table(tables.best.drop("run_dir"), ci_metrics=()),
        r.Heading(2, f"Quality per method ({level} intervals)"),
        r.Para("Each row is the method's best trial; `basis` says of how many. n = the units resampled: edits "
               "(reliability, generalization, confusion), probes (locality, neighborhood, leakage, hops) or "
               "multi-hop cases."),
        r.table(tables.methods, ci_metrics=UNIT_METRICS),
    ]
    blocks += [r.Image(path, "method bars") for key, path in plots.items() if key[0] == "methods"]

    blocks.append(r.Heading(2, "Layer windows"))
    if tables.windows.is_empty():
        blocks.append(r.Para("No finished trial names a layer window (<method>.layer_start/layer_width, "
                             "<method>.layers or <method>.layer)."))
    else:
        blocks.append(r.Para("A cell is one layer window of one method; when several trials share a window the cell "
                             "shows the one with the best objective (`trials` counts them). Each headline metric's "
                             "best window is compared with the runner-up window on the same units."))
        blocks.append(r.Bullets(window_bullets(tables, objective) + tables.no_best_window))
        blocks.append(r.table(tables.windows.drop("run_dir"), ci_metrics=INTERVAL_METRICS))
        blocks += [r.Image(path, f"{key[2]} by window") for key, path in plots.items() if key[0] == "window"]

    lines = streams.best_per_line(df)
    if lines:
        blocks += [
            r.Heading(2, "Edit streams"),
            r.Para("Trials with `stream.wave` (protocol sequential): edits arrive in waves in time_start order and "
                   "after each wave the run scores that wave's edits (reliability), every earlier wave's edits on "
                   "their own prompts (retention), locality, leakage and the applied edits' history probes "
                   "(stream.jsonl). One line per method and LoRA strategy (its best trial). `first_wave_at_start` is "
                   "the first wave's reliability right after it, `first_wave_retention` the same edits at the end of "
                   f"the stream, with its {level} Wilson interval over the first wave's edits."),
            r.table(streams.stream_table(lines), ci_metrics=streams.AT_END),
        ]
        blocks += [r.Image(path, "edit streams") for key, path in plots.items() if key[0] == "stream"]

    blocks += [
        r.Heading(2, "Cost"),
        r.Para("Best trial per method. `cost_per_edit` is what the edit used, not how long it waited: process CPU "
               "seconds (user + system) per edit on CPU, GPU seconds (wall x GPUs) per edit on GPU. "
               "`concurrent_trials` is how many other trials ran on the node meanwhile, `load_average` the node's "
               "load when it finished. compute = (edit + evaluation) CPU seconds / 3600 as CPU-hours, or "
               "wall x GPUs / 3600 as GPU-hours; objective per hour divides the objective by it. The last columns "
               "cover all of the method's trials."),
        r.table(tables.cost),
    ]
    if tables.cost_notes:
        blocks.append(r.Bullets(tables.cost_notes))
    blocks += [
        r.Heading(2, "Pareto front: quality against edit cost"),
        r.Para(f"Finished trials that no other trial beats on both cost per edit (lower) and objective "
               f"(higher){' within its group' if tables.groups else ''}."),
        r.table(tables.pareto),
    ]
    blocks += [r.Image(path, "cost against quality") for key, path in plots.items() if key[0] == "cost"]
    blocks += [r.Heading(2, f"Failed trials ({tables.failures.height})"), r.table(tables.failures)]
    blocks += [r.Heading(2, f"Degenerate trials ({tables.degenerate.height})"),
               r.Para("Finished, but the edit broke the model (training loss rose, or the outputs collapsed to empty "
                      "or identical strings; thresholds in chronosweep/trial/health.py). Their numbers are in "
                      "trials.parquet; no table above ranks them."),
               r.table(tables.degenerate)]
    blocks += [r.Heading(2, f"Running or incomplete trials ({tables.running.height})"),
               r.Para("No metrics.json and no error.txt yet: still running, or stopped without a trace."),
               r.table(tables.running)]
    if tables.warnings:
        blocks += [r.Heading(2, "Warnings"), r.Bullets(tables.warnings)]
    return blocks
