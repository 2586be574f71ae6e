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

from chronosweep.evaluation import units as rules

# Bumped whenever a metric's definition changes, so results of different definitions are never pooled unknowingly.
# 3: locality split into drift and damage, Wilson intervals, leakage/confusion/multi-hop specificity.
# 4: teacher-forced token accuracies tokenise prompt and target as one text, exactly as EasyEdit does.
# 5: under protocol single a locality probe's answer scores and leakage average over every edit's evaluation.
SCORING_VERSION = 5

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
    # Generic rule: only rows whose fields have these values (hop rows with changed=True...).
    where: tuple[tuple[str, object], ...] = ()
    # Whether the unedited model has a value (default: it has a pre_field or a unit function).
    pre: bool | None = None
    # Count metrics: the number of units of this quality metric in the trial (filled in by scoring).
    units_of: str | None = None

    @property
    def has_units(self) -> bool:
        return self.unit is not None

    @property
    def has_pre(self) -> bool:
        return self.pre if self.pre is not None else (self.pre_field is not None or self.units is not None)

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
    if metric.has_units and metric.interval is None:
        raise ValueError(f"metric {metric.name!r}: a metric with units needs an interval (wilson or bootstrap)")
    if metric.units_of is not None and metric.units_of not in METRICS:
        raise ValueError(f"metric {metric.name!r} counts the units of {metric.units_of!r}, which is not registered")
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
# interval: "wilson" for shares (every unit a 0/1 outcome, or a mean of them within an edit: Wilson's variance is
# the largest a [0, 1] value with that mean can have, so it stays conservative), "bootstrap" for graded scores.

register(Metric("reliability", "reliability", "share of edit prompts whose greedy continuation starts with the new "
                "object or an alias", "quality", probe="rewrite", field="correct", pre_field="pre_correct",
                match="starts_with", unit="edit", interval="wilson", shown=_ALL))
register(Metric("generalization", "generalization", "the same over paraphrase prompts, averaged within each edit "
                "first (null when the data has none)", "quality", probe="paraphrase", field="correct",
                pre_field="pre_correct", match="starts_with", unit="edit", interval="wilson", shown=_ALL))
register(Metric("locality", "locality", "mean ROUGE-1 F1 between pre- and post-edit continuations of the locality "
                "prompts (the whole continuation: drift after an unchanged answer counts against it)", "quality",
                probe="locality", field="score", match="rouge1", unit="probe", interval="bootstrap", shown=_ALL))
register(Metric("locality_answer", "locality (answer)", "the same ROUGE-1 F1 over the continuations cut at the "
                "answer's end (first line, first sentence end): damage to the answer, not drift after it", "quality",
                probe="locality", field="answer_score", match="rouge1 of answer spans", unit="probe",
                interval="bootstrap", shown=_ALL))
register(Metric("locality_exact", "locality (same answer)", "share of locality prompts whose answer span is "
                "unchanged (equal after normalisation)", "quality", probe="locality", field="same_answer",
                match="equal answer spans", unit="probe", interval="wilson", shown=frozenset({"cli", "report"})))
register(Metric("neighborhood", "neighborhood", "mean ROUGE-1 F1 between pre- and post-edit answer spans of prompts "
                "about an edited subject whose answer the trial does not change (DyKnow: the subject's other, "
                "unedited elements; KnowEdit: Relation_Specificity; CounterFact: neighborhood prompts)", "quality",
                probe="neighborhood", field="answer_score", match="rouge1 of answer spans", unit="probe",
                interval="bootstrap", shown=frozenset({"cli", "report"})))
register(Metric("neighborhood_exact", "neighborhood (same answer)", "share of neighborhood prompts whose answer "
                "span is unchanged", "quality", probe="neighborhood", field="same_answer", match="equal answer spans",
                unit="probe", interval="wilson", shown=frozenset({"cli"})))
register(Metric("confusion", "confusion", "share of an edit's prompt and paraphrase probes answered with the new "
                "object of a different edit of the trial (one subject's edits overwriting each other), averaged "
                "over edits", "quality", direction="min", probe="rewrite", match="starts_with another edit's object",
                unit="edit", interval="wilson", units=rules.confusion, shown=frozenset({"cli", "report"})))
register(Metric("leakage", "leakage", "share of locality, neighborhood and unchanged single-hop probes whose "
                "post-edit continuation contains a new object of the trial that the pre-edit one did not", "quality",
                direction="min", probe="locality", match="contains a new object", unit="probe", interval="wilson",
                units=rules.leakage, pre=False, shown=_ALL))
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
                pre_field="pre_correct", match="contains", unit="case", interval="wilson", shown=_ALL))
register(Metric("multihop_specific", "multi-hop (specific)", "share of multi-hop cases (with unchanged hops) "
                "answered with the new answer while none of the case's unchanged single-hop probes is given that "
                "answer: propagation, not the answer leaking into every prompt", "quality", probe="multihop",
                match="contains, and not in an unchanged hop's answer span", unit="case", interval="wilson",
                units=rules.multihop_specific, shown=_ALL))
register(Metric("multihop_known", "multi-hop (known chains)", "multi-hop accuracy over the cases whose unchanged "
                "hops the unedited model answers correctly (their number: n_multihop_known)", "quality",
                probe="multihop", match="contains", unit="case", interval="wilson", units=rules.multihop_known,
                shown=frozenset({"cli", "report"})))
register(Metric("hop_accuracy", "single-hop accuracy", "share of post-edit single-hop probes answered with that "
                "hop's answer or an alias (a cloze: starts with it; a question: its answer span contains it)",
                "quality", probe="hop", field="correct", pre_field="pre_correct", match="starts_with / contains",
                unit="probe", interval="wilson", shown=_ALL))
register(Metric("hop_edited", "edited hop accuracy", "the same over the hops the edit rewrites", "quality",
                probe="hop", field="correct", pre_field="pre_correct", match="starts_with / contains", unit="probe",
                interval="wilson", where=(("changed", True),), shown=frozenset({"cli", "report"})))
register(Metric("hop_unchanged", "unchanged hop accuracy", "the same over the hops whose answers the edit keeps",
                "quality", probe="hop", field="correct", pre_field="pre_correct", match="starts_with / contains",
                unit="probe", interval="wilson", where=(("changed", False),), shown=frozenset({"cli", "report"})))

register(Metric("history_accuracy", "history accuracy", "share of history probes (\"In 2010, the President of "
                "Italy was\", at a year one past holder alone held the relation) answered with that year's holder",
                "quality", probe="history", field="correct", pre_field="pre_correct", match="starts_with",
                unit="probe", interval="wilson", shown=_ALL))
register(Metric("history_retention", "history retention", "history accuracy over the probes the unedited model "
                "answered correctly (their number: n_history_known): forgetting, not a small model's missing "
                "knowledge", "quality", probe="history", match="starts_with", unit="probe", interval="wilson",
                units=rules.history_retention, pre=False, shown=_ALL))
register(Metric("temporal_reliability", "temporal reliability", "share of an edit's \"As of YEAR\" and "
                "\"Currently\" probes answered with the new object, averaged within each edit", "quality",
                probe="temporal", field="correct", pre_field="pre_correct", match="starts_with", unit="edit",
                interval="wilson", shown=_ALL))
register(Metric("first_wave_retention", "first-wave retention", "edit streams: reliability of the first wave's "
                "edits at the end of the stream (null without a stream)", "quality", probe="rewrite",
                match="starts_with", unit="edit", interval="wilson", units=rules.first_wave_retention, pre=False,
                shown=frozenset({"cli", "report"})))

# --- cost: what the edit took -----------------------------------------------------------------------------------

_COST = [
    ("edit_seconds", "edit seconds", "wall time of the edit", {"cli", "sweep"}),
    ("edit_seconds_per_edit", "edit seconds per edit", "`edit_seconds / n_edits`", set()),
    ("edit_cpu_seconds", "edit CPU seconds", "process CPU time (user + system, all threads) of the edit: the work, "
     "whatever else shared the cores", {"cli", "sweep"}),
    ("edit_cpu_seconds_per_edit", "edit CPU seconds per edit", "`edit_cpu_seconds / n_edits`: the report's cost on "
     "CPU", set()),
    ("edit_gpu_seconds", "edit GPU seconds", "`edit_seconds x n_gpus` (null on CPU)", set()),
    ("edit_gpu_seconds_per_edit", "edit GPU seconds per edit", "`edit_gpu_seconds / n_edits`: the report's cost on "
     "GPU", set()),
    ("eval_seconds", "evaluation seconds", "wall time of the post-edit evaluation", {"cli"}),
    ("eval_cpu_seconds", "evaluation CPU seconds", "process CPU time of the post-edit evaluation", set()),
    ("eval_seconds_per_edit", "evaluation seconds per edit", "`eval_seconds / n_edits`", set()),
    ("pre_eval_seconds", "pre-edit evaluation seconds", "wall time of the unedited model's answers (about 0 when "
     "cached; a trial started beside the one measuring them counts its wait)", set()),
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
    ("n_neighborhood", "neighborhood probes", "neighborhood probes scored"),
    ("total_params", "parameters", "parameters of the base model"),
    ("n_gpus", "GPUs", "GPUs the trial ran on (0 on CPU)"),
    ("threads", "threads", "torch intra-op threads"),
    ("concurrent_trials", "concurrent trials", "other chronosweep trials that ran on the same node while this one did "
     "(from the records under the cache's activity/ folder)"),
    ("load_average", "load average", "the node's 1-minute load average when the trial finished (other users' work "
     "included)"),
    ("epochs_run", "epochs run", "training epochs the gradient methods ran (below their `epochs` when early stopping "
     "ended training; null for ROME/MEMIT)"),
]
for _name, _label, _meaning in _COUNTS:
    register(Metric(_name, _label, _meaning, "count", objective=False))
register(Metric("n_multihop_known", "known multi-hop cases", "cases multihop_known is computed over", "count",
                objective=False, units_of="multihop_known"))
register(Metric("n_history", "history probes", "history probes scored (past holders at a year)", "count",
                objective=False))
register(Metric("n_temporal", "temporal probes", "\"as of\"/\"currently\" probes of the current holder scored",
                "count", objective=False))
register(Metric("n_history_known", "known history probes", "history probes the unedited model answers correctly: "
                "what history_retention is computed over", "count", objective=False, units_of="history_retention"))
