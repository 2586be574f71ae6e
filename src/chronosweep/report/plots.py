"""PNG figures: layer-window heatmaps, method bars with interval error bars, cost against quality with its front.

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
from matplotlib.patches import Rectangle
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


def window_heatmap(cells: pl.DataFrame, metric: str, best: dict | None, title: str, path: Path) -> Path | None:
    """Colour = metric of each (layer_start, layer_width) cell; the best cell boxed in red and starred."""
    cells = cells.filter(pl.col("window_start").is_not_null() & pl.col("window_width").is_not_null())
    if cells.is_empty() or cells[metric].drop_nulls().is_empty():
        return None
    # Every layer between the first and last start gets a column, so distances on the axis are distances in layers.
    present = cells["window_start"].to_list()
    starts = list(range(min(present), max(present) + 1))
    widths = sorted(set(cells["window_width"].to_list()))
    grid = np.full((len(widths), len(starts)), np.nan)
    for s, w, v in cells.select("window_start", "window_width", metric).iter_rows():
        if v is not None:
            grid[widths.index(w), starts.index(s)] = v
    fig = _figure(max(5.5, 0.38 * len(starts) + 2.5), max(3.0, 0.45 * len(widths) + 1.8))
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(grid), origin="lower", aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(starts)), [str(s) for s in starts], fontsize=8 if len(starts) > 20 else 10)
    ax.set_yticks(range(len(widths)), [str(w) for w in widths])
    ax.set_xlabel("first edited layer (layer_start)")
    ax.set_ylabel("window width (layers)")
    if grid.size <= 160:
        for (i, j), v in np.ndenumerate(grid):
            if not np.isnan(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                        color="black" if v > 0.6 else "white")
    if best is not None and best.get("window_start") is not None:
        j, i = starts.index(best["window_start"]), widths.index(best["window_width"])
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2.5,
                               label=f"best: {layers_label(best['window'])} = "
                                     f"{_fmt_ci(best['value'], best['ci_low'], best['ci_high'])}"))
        ax.plot([j + 0.32], [i + 0.3], marker="*", markersize=8, color="red", linestyle="none")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), frameon=False, fontsize=9)
    fig.colorbar(image, ax=ax, label=label(metric))
    ax.set_title(title, fontsize=10)
    fig.savefig(path, dpi=110)
    return path


def method_bars(methods: pl.DataFrame, metrics: tuple[str, ...], title: str, path: Path) -> Path | None:
    """One group of bars per method (its best trial), one bar per metric, error bars = bootstrap interval."""
    if methods.is_empty():
        return None
    protocols = methods["protocol"].to_list() if "protocol" in methods.columns else [None] * methods.height
    shown = len(set(protocols)) > 1
    names = [f"{m}\n{pr}\n({b})" if shown else f"{m}\n({b})"
             for m, pr, b in zip(methods["method"].to_list(), protocols, methods["basis"].to_list())]
    fig = _figure(max(6.0, 1.6 * len(names) + 2), 4.2)
    ax = fig.add_subplot()
    width = 0.8 / len(metrics)
    x = np.arange(len(names))
    for k, metric in enumerate(metrics):
        values = methods[metric].cast(pl.Float64).fill_null(np.nan).to_numpy()
        low = methods[f"{metric}_ci_low"].cast(pl.Float64).fill_null(np.nan).to_numpy()
        high = methods[f"{metric}_ci_high"].cast(pl.Float64).fill_null(np.nan).to_numpy()
        pos = x - 0.4 + width * (k + 0.5)
        ax.bar(pos, np.nan_to_num(values), width, label=label(metric))
        for at in pos[np.isnan(values)]:
            # A metric the trial does not have (no paraphrases in the data...) must not read as a zero bar.
            ax.text(at, 0.01, "n/a", ha="center", va="bottom", fontsize=7, color="grey", rotation=90)
        has = ~np.isnan(low) & ~np.isnan(high) & ~np.isnan(values)
        if has.any():
            err = np.vstack([values[has] - low[has], high[has] - values[has]])
            ax.errorbar(pos[has], values[has], yerr=np.clip(err, 0, None), fmt="none", ecolor="black", capsize=3,
                        linewidth=1)
    ax.set_xticks(x, names, fontsize=9)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("score")
    ax.legend(ncols=len(metrics), loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False, fontsize=9)
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
    ax.set_xlabel("edit seconds per edit (lower is cheaper)")
    ax.set_ylabel("objective (higher is better)")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title, fontsize=10)
    fig.savefig(path, dpi=110)
    return path
