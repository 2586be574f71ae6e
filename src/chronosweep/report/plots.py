"""PNG figures: layer windows drawn over their layers, method bars with interval error bars, cost against quality.

Figures are built with matplotlib's object API on the Agg canvas (no pyplot, so no global figure state and no
display needed).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from chronosweep.evaluation import metrics as registry
from chronosweep.report.tables import layers_label


def label(metric: str) -> str:
    return "objective" if metric == "objective" else registry.label(metric)


def slug(*parts) -> str:
    text = "-".join(str(p) for p in parts if p is not None and str(p) != "")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "all"


def _leading_digit(v: float) -> int:
    return int(round(v / 10 ** np.floor(np.log10(v)))) if v > 0 else 0


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _fmt_ci(value, low, high) -> str:
    if value is None:
        return "n/a"
    if low is None or high is None:
        return f"{value:.2f}"
    return f"{value:.2f} [{low:.2f}, {high:.2f}]"


def _window_rows(cells: pl.DataFrame, metric: str) -> list[dict]:
    cells = cells.filter(pl.col("window_start").is_not_null() & pl.col("window_width").is_not_null()
                         & pl.col(metric).is_not_null())
    return list(cells.sort("window_start", "window_width").iter_rows(named=True))


def _marks(verdict: dict | None) -> tuple[str | None, set[str], str]:
    """(the best window, windows to mark as tied, legend text) from a best_windows row."""
    if not verdict or verdict.get("window") is None:
        return None, set(), ""
    value = _fmt_ci(verdict["value"], verdict.get("ci_low"), verdict.get("ci_high"))
    runner = verdict.get("runner_up")
    if verdict.get("separated"):
        return verdict["window"], set(), f"best: {layers_label(verdict['window'])} = {value}"
    if runner:
        tied = {verdict["window"], runner.removeprefix("layers ").removeprefix("layer ")}
        return None, tied, f"tie: {layers_label(verdict['window'])} not separated from {runner}"
    return None, set(), f"only window: {layers_label(verdict['window'])} = {value}"


def window_panels(cells: pl.DataFrame, metrics: list[str], verdicts: dict[str, dict], title: str,
                  path: Path) -> Path | None:
    """One panel per metric, the layer index on a shared x axis: each window is drawn over the layers it spans.

    Windows of one width that do not overlap are bars (adjacent windows touch, so there are no gaps that read as
    missing data); otherwise each window is a horizontal segment over its layers. Error bars are the intervals;
    the best window is starred only when it is separated from the runner-up, a tie is hatched and called a tie.
    """
    panels = [m for m in metrics if _window_rows(cells, m)]
    if not panels:
        return None
    fig = _figure(8.0, 1.9 * len(panels) + 1.4)
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    handles = {}
    for ax, metric in zip(axes, panels):
        rows = _window_rows(cells, metric)
        widths = sorted({r["window_width"] for r in rows})
        spans = [(r["window_start"], r["window_start"] + r["window_width"] - 1) for r in rows]
        bars = len(widths) == 1 and all(b[0] > a[1] for a, b in zip(spans, spans[1:]))
        best, tied, legend = _marks(verdicts.get(metric))
        for r, (lo, hi) in zip(rows, spans):
            value = r[metric]
            low, high = r.get(f"{metric}_ci_low"), r.get(f"{metric}_ci_high")
            colour = f"C{widths.index(r['window_width']) % 10}"
            centre = (lo + hi) / 2
            mark = r["window"] == best or r["window"] in tied
            if bars:
                h = ax.bar(centre, value, width=hi - lo + 1, color=colour, alpha=0.75, edgecolor="black",
                           linewidth=1.8 if mark else 0.6, hatch="//" if r["window"] in tied else None)
            else:
                (h,) = ax.plot([lo - 0.45, hi + 0.45], [value, value], color=colour, linewidth=4 if mark else 2.5,
                               solid_capstyle="butt")
            handles.setdefault(f"width {r['window_width']}", h)
            if low is not None and high is not None:
                ax.errorbar([centre], [value], yerr=[[max(value - low, 0)], [max(high - value, 0)]], fmt="none",
                            ecolor="black", capsize=3, linewidth=1)
            if r["window"] == best:
                ax.plot([centre], [min(1.0, (high if high is not None else value)) + 0.06], marker="*",
                        markersize=10, color="red", linestyle="none")
        if legend:
            ax.text(0.0, 1.02, legend, transform=ax.transAxes, fontsize=8, va="bottom",
                    color="red" if best else "dimgray")
        m = registry.METRICS.get(metric)
        better = "lower is better" if m is not None and m.direction == "min" else "higher is better"
        ns = sorted({r.get(f"{metric}_n") for r in rows} - {None})
        n_text = f", n={ns[0]}" if len(ns) == 1 else (f", n={ns[0]}-{ns[-1]}" if ns else "")
        ax.set_ylabel(f"{label(metric)}\n({better}{n_text})", fontsize=8)
        ax.set_ylim(0, 1.12)
    axes[-1].set_xlabel("decoder layer (each window drawn over the layers it edits)")
    layers = [x for r in _window_rows(cells, panels[0]) for x in (r["window_start"],
                                                                  r["window_start"] + r["window_width"] - 1)]
    step = max(1, (max(layers) - min(layers) + 1) // 15)
    axes[-1].set_xticks(range(min(layers), max(layers) + 1, step))
    if len(handles) > 1:
        fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=len(handles),
                   frameon=False, fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110)
    return path


def method_bars(methods: pl.DataFrame, metrics: tuple[str, ...], title: str, path: Path) -> Path | None:
    """One row per metric, one marker per method (its best trial) with its interval as a horizontal bar.

    Rows rather than grouped bars: a dozen metrics stay readable, and a metric a trial lacks is written `n/a`
    instead of being drawn as a zero.
    """
    if methods.is_empty() or not metrics:
        return None
    protocols = methods["protocol"].to_list() if "protocol" in methods.columns else [None] * methods.height
    shown = len(set(protocols)) > 1
    names = [f"{m} {pr} ({b})" if shown else f"{m} ({b})"
             for m, pr, b in zip(methods["method"].to_list(), protocols, methods["basis"].to_list())]
    k = len(names)
    fig = _figure(8.5, 0.5 + (0.28 * k + 0.25) * len(metrics))
    ax = fig.add_subplot()
    step = 0.8 / k
    labelled: set[str] = set()
    for j, name in enumerate(names):
        colour = f"C{j % 10}"
        for i, metric in enumerate(metrics):
            y = i - 0.4 + step * (j + 0.5)
            row = methods.row(j, named=True)
            value, low, high = row.get(metric), row.get(f"{metric}_ci_low"), row.get(f"{metric}_ci_high")
            if value is None:
                ax.text(0.005, y, "n/a", fontsize=7, color="grey", va="center")
                continue
            if low is not None and high is not None:
                ax.plot([low, high], [y, y], color=colour, linewidth=2, alpha=0.6)
            n = row.get(f"{metric}_n")
            if n is not None:
                ax.text(min(max(high if high is not None else value, value) + 0.015, 0.93), y, f"n={n}",
                        fontsize=6, va="center", color="dimgray")
            ax.plot([value], [y], marker="o", color=colour, markersize=5, linestyle="none",
                    label=None if name in labelled else name)
            labelled.add(name)
    ax.set_yticks(range(len(metrics)), [label(m) + (" (lower is better)" if registry.METRICS.get(m) is not None
                                                    and registry.METRICS[m].direction == "min" else "")
                                        for m in metrics], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("value (dot) and 95% interval (bar)")
    ax.grid(axis="x", alpha=0.3)
    for i in range(1, len(metrics)):
        ax.axhline(i - 0.5, color="lightgrey", linewidth=0.5)
    # Outside the axes, so the legend never covers a point.
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.savefig(path, dpi=110)
    return path


def cost_quality(trials: pl.DataFrame, cost: str, title: str, path: Path, max_labels: int = 20) -> Path | None:
    """Every finished trial as a point; the Pareto front as a staircase, its points outlined and labelled."""
    points = trials.filter(pl.col(cost).is_not_null() & pl.col("objective").is_not_null())
    if points.is_empty():
        return None
    fig = _figure(7.5, 4.8)
    ax = fig.add_subplot()
    colours = {}
    for i, method in enumerate(sorted(points["method"].unique().to_list())):
        part = points.filter(pl.col("method") == method)
        dots = ax.scatter(part[cost].to_numpy(), part["objective"].to_numpy(), s=18, alpha=0.6, label=method,
                          color=f"C{i % 10}")
        colours[method] = dots.get_facecolor()[0]
    front = points.filter(pl.col("pareto")).sort(cost, "objective")
    if front.height:
        fx, fy = front[cost].to_numpy(), front["objective"].to_numpy()
        ax.plot(fx, fy, drawstyle="steps-post", color="black", linewidth=1.2, label="Pareto front")
        ax.scatter(fx, fy, s=60, facecolors="none", edgecolors="black", linewidths=1.5)
        for k, r in enumerate(front.head(max_labels).iter_rows(named=True)):
            label = r["method"] + (f" {r['window']}" if r.get("window") else "")
            # Alternate above/below so labels of neighbouring front points do not sit on each other.
            ax.annotate(label, (r[cost], r["objective"]), textcoords="offset points",
                        xytext=(6, 6) if k % 2 == 0 else (6, -13), fontsize=8)
    xs = points[cost].to_numpy()
    if xs.min() > 0 and xs.max() / xs.min() > 20:
        ax.set_xscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if _leading_digit(v) in (2, 5) else ""))
    units = [u for u in points["cost_unit"].unique().to_list() if u] if "cost_unit" in points.columns else []
    ax.set_xlabel(f"edit cost per edit, {' / '.join(units) or 'seconds'} (lower is cheaper)")
    ax.set_ylabel("objective (higher is better)")
    # Outside the axes, so the legend never covers a point.
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title(title, fontsize=10)
    fig.savefig(path, dpi=110)
    return path


def stream_panels(frame: pl.DataFrame, metrics: tuple[str, ...], labels: dict[str, str], title: str,
                  path: Path) -> Path | None:
    """One panel per metric against the wave, one line per method/strategy (an edit stream's stream.jsonl).

    A metric no line has (history retention when the unedited model knew none of the history probes) keeps its
    panel, saying so, rather than vanishing.
    """
    shown = [m for m in metrics if m in frame.columns]
    if frame.is_empty() or not shown:
        return None
    cols = min(3, len(shown))
    rows = -(-len(shown) // cols)
    fig = _figure(3.4 * cols + 2.2, 2.6 * rows + 0.5)
    lines = sorted(frame["line"].unique().to_list())
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(len(shown))]
    markers, styles = "osD^vP", ("-", "--", ":", "-.")
    for ax, metric in zip(axes, shown):
        for j, line in enumerate(lines):
            part = frame.filter((pl.col("line") == line) & pl.col(metric).is_not_null()).sort("wave")
            if part.height:
                # Markers and dashes differ per line, so lines with equal values stay visible on top of each other.
                ax.plot(part["wave"].to_numpy(), part[metric].to_numpy(), marker=markers[j % len(markers)],
                        linestyle=styles[j % len(styles)], markersize=4, color=f"C{j % 10}", label=line)
        if frame[metric].null_count() == frame.height:
            note = "n/a: no history probe the unedited\nmodel answered correctly" if metric == "history_retention" \
                else "n/a: no trial has a value"
            ax.text(0.5, 0.5, note, ha="center", va="center", fontsize=7, color="grey", transform=ax.transAxes)
        m = registry.METRICS.get(metric)
        worse = " (lower is better)" if m is not None and m.direction == "min" else ""
        ax.set_title(labels.get(metric, label(metric)) + worse, fontsize=9)
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("wave", fontsize=8)
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    handles, names = [], []
    for ax in axes:
        for h, n in zip(*ax.get_legend_handles_labels()):
            if n not in names:
                handles.append(h)
                names.append(n)
    # Beside the panels, so it never covers a point.
    fig.legend(handles, names, loc="outside right upper", frameon=False, fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110)
    return path
