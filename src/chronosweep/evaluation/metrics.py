"""The metric registry: every number a run reports, declared once.

An entry says what the metric reads (probe kind, the field of a prediction row, the match rule behind it),
what one unit of resampling is (an edit, a probe, a multi-hop case), which interval it gets, which way is
better, whether a sweep may optimise it, where it is shown, and its label. Scoring (evaluation.scoring) computes
the quality metrics from it; sweep objectives, trials.csv, the report's tables and plots, the CLI summary and the
metric table of docs/run-dir.md all read it. Importing it costs nothing (no torch, no rouge).

Adding a metric: one ``register`` call here, plus a unit function (``units=``) when the generic rule "rows of
probe kind K, field F, averaged within each unit" does not express it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

# Bumped whenever a metric's definition changes, so results of different definitions are never pooled unknowingly.
SCORING_VERSION = 2

Unit = Literal["edit", "probe", "case"]
Interval = Literal["wilson", "bootstrap"]
Kind = Literal["quality", "cost", "count"]
Shown = Literal["cli", "sweep", "report"]


@dataclass(frozen=True)
class Metric:
    name: str
    label: str
    # One sentence for docs/run-dir.md.
    meaning: str
    kind: Kind
    direction: Literal["max", "min"] = "max"
    # May be a term of a sweep or report objective.
    objective: bool = True
    # Quality metrics: the probe kind whose prediction rows they read, the row field (post-edit) and the field
    # holding the same test on the unedited model (None: no pre-edit value), and the match rule in words.
    probe: str | None = None
    field: str | None = None
    pre_field: str | None = None
    match: str | None = None
    unit: Unit | None = None
    interval: Interval | None = None
    # Where the metric appears by default: `chronosweep edit`'s summary, the sweep's table, the report's headline tables.
    shown: frozenset = frozenset()
    # A unit function replacing the generic rule: (prediction rows, "post" | "pre") -> {unit id: value}.
    units: Callable[[list[dict], str], dict[str, float]] | None = None

    @property
    def has_units(self) -> bool:
        return self.unit is not None

    def better(self, a: float, b: float) -> bool:
        return a > b if self.direction == "max" else a < b


METRICS: dict[str, Metric] = {}


def register(metric: Metric) -> Metric:
    if metric.name in METRICS:
        raise ValueError(f"metric {metric.name!r} is registered twice")
    if metric.kind == "quality" and metric.unit is None:
        raise ValueError(f"quality metric {metric.name!r} needs a unit of resampling")
    if metric.unit is not None and metric.units is None and (metric.probe is None or metric.field is None):
        raise ValueError(f"metric {metric.name!r}: the generic unit rule needs probe and field")
    METRICS[metric.name] = metric
    return metric


def get(name: str) -> Metric:
    try:
        return METRICS[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r} (known: {', '.join(METRICS)})") from None


def names(*, kind: Kind | None = None, shown: Shown | None = None, objective: bool | None = None,
          with_units: bool | None = None) -> tuple[str, ...]:
    """Registered metric names in registration order, filtered."""
    out = []
    for m in METRICS.values():
        if kind is not None and m.kind != kind:
            continue
        if shown is not None and shown not in m.shown:
            continue
        if objective is not None and m.objective != objective:
            continue
        if with_units is not None and m.has_units != with_units:
            continue
        out.append(m.name)
    return tuple(out)


def label(name: str) -> str:
    m = METRICS.get(name)
    return m.label if m is not None else name.replace("_", " ")


_ALL = frozenset({"cli", "sweep", "report"})

# --- quality: what the edit did ---------------------------------------------------------------------------------

register(Metric("reliability", "reliability", "share of edit prompts whose greedy continuation starts with the new "
                "object or an alias", "quality", probe="rewrite", field="correct", pre_field="pre_correct",
                match="starts_with", unit="edit", interval="bootstrap", shown=_ALL))
register(Metric("generalization", "generalization", "the same over paraphrase prompts, averaged within each edit "
                "first (null when the data has none)", "quality", probe="paraphrase", field="correct",
                pre_field="pre_correct", match="starts_with", unit="edit", interval="bootstrap", shown=_ALL))
register(Metric("locality", "locality", "mean ROUGE-1 F1 between pre- and post-edit continuations of the locality "
                "prompts", "quality", probe="locality", field="score", match="rouge1", unit="probe",
                interval="bootstrap", shown=_ALL))
register(Metric("rewrite_acc", "rewrite token accuracy", "teacher-forced token accuracy of the new object after the "
                "edit prompt (EasyEdit's rewrite_acc)", "quality", probe="rewrite", field="token_acc",
                pre_field="pre_token_acc", match="token_acc", unit="edit", interval="bootstrap",
                shown=frozenset({"cli"})))
register(Metric("rephrase_acc", "rephrase token accuracy", "the same after each paraphrase (EasyEdit's "
                "rephrase_acc)", "quality", probe="paraphrase", field="token_acc", pre_field="pre_token_acc",
                match="token_acc", unit="probe", interval="bootstrap", shown=frozenset({"cli"})))
register(Metric("locality_acc", "locality token accuracy", "share of locality answer tokens where the post-edit top "
                "token equals the pre-edit one (EasyEdit's locality)", "quality", probe="locality", field="token_acc",
                match="token_agreement", unit="probe", interval="bootstrap", shown=frozenset({"cli"})))
register(Metric("multihop_accuracy", "multi-hop accuracy", "share of multi-hop cases with any question answered "
                "with the new answer or an alias (MQuAKE's rule)", "quality", probe="multihop", field="correct",
                pre_field="pre_correct", match="contains", unit="case", interval="bootstrap", shown=_ALL))
register(Metric("hop_accuracy", "single-hop accuracy", "share of post-edit single-hop clozes answered with that "
                "hop's answer or an alias", "quality", probe="hop", field="correct", pre_field="pre_correct",
                match="starts_with", unit="probe", interval="bootstrap", shown=frozenset({"cli", "sweep"})))

# --- cost: what the edit took -----------------------------------------------------------------------------------

_COST = [
    ("edit_seconds", "edit seconds", "wall time of the edit", {"cli", "sweep"}),
    ("edit_seconds_per_edit", "edit seconds per edit", "`edit_seconds / n_edits`", set()),
    ("eval_seconds", "evaluation seconds", "wall time of the post-edit evaluation", {"cli"}),
    ("eval_seconds_per_edit", "evaluation seconds per edit", "`eval_seconds / n_edits`", set()),
    ("pre_eval_seconds", "pre-edit evaluation seconds", "wall time of the unedited model's answers (0 when cached)",
     set()),
    ("load_seconds", "load seconds", "wall time of loading the model", set()),
    ("total_seconds", "total seconds", "wall time of the whole run", set()),
    ("trainable_params", "trainable parameters", "parameter values the method changes (trained weights; for "
     "ROME/MEMIT the rewritten matrices)", {"cli"}),
    ("trainable_fraction", "trainable fraction", "`trainable_params / total_params`", set()),
    ("peak_rss_mb", "peak RSS (MB)", "peak resident memory of the process", {"cli"}),
    ("peak_gpu_mb", "peak GPU memory (MB)", "peak CUDA memory (null on CPU)", set()),
]
for _name, _label, _meaning, _shown in _COST:
    register(Metric(_name, _label, _meaning, "cost", direction="min", shown=frozenset(_shown)))

# --- counts: what the numbers rest on (not objectives) -------------------------------------------------------------

_COUNTS = [
    ("n_edits", "edits", "edits applied in this trial"),
    ("n_modification", "modification edits", "edits with an old object"),
    ("n_injection", "injection edits", "edits without an old object"),
    ("n_multihop_cases", "multi-hop cases", "multi-hop cases scored"),
    ("n_hops", "single hops", "single-hop clozes scored"),
    ("n_locality", "locality probes", "locality probes scored"),
    ("total_params", "parameters", "parameters of the base model"),
    ("n_gpus", "GPUs", "GPUs the trial ran on (0 on CPU)"),
    ("threads", "threads", "torch intra-op threads"),
    ("epochs_run", "epochs run", "training epochs the gradient methods ran (below their `epochs` when early stopping "
     "ended training; null for ROME/MEMIT)"),
]
for _name, _label, _meaning in _COUNTS:
    register(Metric(_name, _label, _meaning, "count", objective=False))
