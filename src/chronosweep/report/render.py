"""summary.md and summary.html from one list of blocks, so the two always say the same thing."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

import polars as pl

from chronosweep.evaluation import metrics as registry


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Para:
    # **bold** is the only markup.
    text: str


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Image:
    path: str  # relative to the report folder
    alt: str


@dataclass
class Bullets:
    items: list[str]


Block = Heading | Para | Table | Image | Bullets

HEADERS = {
    "multihop_accuracy": "multi-hop acc.", "edit_seconds_per_edit": "edit s/edit", "compute_hours": "compute",
    "compute_unit": "unit", "trainable_params": "trainable params", "trainable_fraction": "trainable %",
    "peak_rss_mb": "peak RSS MB", "peak_gpu_mb": "peak GPU MB", "objective_per_compute_hour": "objective per hour",
    "median_edit_seconds_per_edit": "median edit s/edit (all trials)", "sweep_compute_hours": "sweep compute (all trials)",
    "window_start": "layer_start", "window_width": "width", "tune.iteration": "Tune iteration",
    "cost_per_edit": "cost per edit", "cost_unit": "cost unit", "median_cost_per_edit": "median cost per edit (all trials)",
    "verdict": "vs runner-up", "concurrent_trials": "trials beside it", "load_average": "load avg",
    **{m: registry.label(m) for m in registry.names(kind="quality")},
}


def fmt(column: str, value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}" if column in ("trainable_params", "total_params") else str(value)
    if isinstance(value, float):
        if column == "trainable_fraction":
            return f"{100 * value:.3g}%"
        if column.startswith("peak_"):
            return f"{value:,.0f}"
        if column in ("objective", "runner_up_value"):
            # Four places, as the sweep's console prints it: the same trial reads the same in both.
            return f"{value:.4f}"
        if column in registry.names(kind="quality") or column in ("value", "ci_low", "ci_high", "diff", "diff_low",
                                                                  "diff_high"):
            return f"{value:.3f}"
        return f"{value:.3g}"
    return str(value)


def with_ci(value, low, high, n) -> str:
    if value is None:
        return "n/a"
    text = f"{value:.3f}"
    if low is not None and high is not None:
        text += f" [{low:.3f}, {high:.3f}]"
    if n is not None:
        text += f" n={n}"
    return text


def table(df: pl.DataFrame, ci_metrics: tuple[str, ...] = (), drop: tuple[str, ...] = ()) -> Table:
    """Rows as text: each interval metric's value, bounds and n collapse into one 'v [lo, hi] n=N' cell."""
    parts = {f"{m}{s}" for m in ci_metrics for s in ("_ci_low", "_ci_high", "_n")}
    columns = [c for c in df.columns if c not in parts and c not in drop]
    headers = [HEADERS.get(c, c) + (" (95% CI)" if c in ci_metrics else "") for c in columns]
    rows = []
    for r in df.iter_rows(named=True):
        rows.append([with_ci(r[c], r.get(f"{c}_ci_low"), r.get(f"{c}_ci_high"), r.get(f"{c}_n"))
                     if c in ci_metrics else fmt(c, r[c]) for c in columns])
    return Table(headers, rows)


# --- writers ------------------------------------------------------------------------------------------------------

def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, Para):
            out += [b.text, ""]
        elif isinstance(b, Bullets):
            out += [f"- {item}" for item in b.items] + [""]
        elif isinstance(b, Image):
            out += [f"![{b.alt}]({b.path})", ""]
        elif isinstance(b, Table):
            if not b.rows:
                out += ["(none)", ""]
                continue
            out.append("| " + " | ".join(_md_cell(h) for h in b.headers) + " |")
            out.append("|" + "|".join("---" for _ in b.headers) + "|")
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            out.append("")
    return "\n".join(out)


def _inline_html(text: str) -> str:
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(text))


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:0.9em}
th,td{border:1px solid #ccc;padding:0.25em 0.6em;text-align:left;vertical-align:top}
th{background:#f0f0f0}tr:nth-child(even) td{background:#fafafa}img{max-width:100%;margin:0.5em 0 1.5em}"""


def to_html(blocks: list[Block], title: str) -> str:
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
           f"<style>{_CSS}</style></head><body>"]
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{_inline_html(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            out.append(f"<p>{_inline_html(b.text)}</p>")
        elif isinstance(b, Bullets):
            out.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Image):
            out.append(f"<img src='{html.escape(b.path)}' alt='{html.escape(b.alt)}'>")
        elif isinstance(b, Table):
            if not b.rows:
                out.append("<p>(none)</p>")
                continue
            out.append("<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in b.headers)
                       + "</tr></thead><tbody>")
            out += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in b.rows]
            out.append("</tbody></table>")
    out.append("</body></html>")
    return "\n".join(out)
