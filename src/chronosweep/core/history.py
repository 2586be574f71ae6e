"""Time-qualified facts from an edit's history: the probes that check the past stays true, and the facts the
history-preserving option trains on (in core: evaluation builds the probes from it, editing the training facts).

An edit's history (EditRequest.history: DyKnow's ``NAME |S: start |E: end`` answers, a user's ``history`` list)
names every holder of the relation with its span. A past holder gives one evaluation probe ("In 2010, the
President of Italy was" -> Giorgio Napolitano) at a year it alone held the relation (years in which the office
changed hands are ambiguous and never asked); the current holder gives "As of YEAR ..." (the latest year it alone
held it) and "Currently ..." probes. The wording comes from per-relation templates kept as data
(history_templates.yaml). Training facts use the templates' other wording and the past holders' other years, so a
trial never trains on what it scores. Holders or edits that cannot give a probe are counted by reason.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

import yaml

from chronosweep.core.requests import EditRequest, Holding

_YEAR = re.compile(r"^\s*([+-]?)(\d{1,9})")


def normalize(name: str) -> str:
    """A holder's identity within one history: case, Unicode form and spacing do not make another holder."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", name).casefold()).strip()


def year_of(value: str | None) -> int | None:
    """The year of an ISO-like time ('+2015-02-03T00:00:00Z', '2015-02', '2015', '-0044'); None if unreadable."""
    if not value:
        return None
    m = _YEAR.match(str(value))
    if m is None:
        return None
    return -int(m.group(2)) if m.group(1) == "-" else int(m.group(2))


@dataclass(frozen=True)
class Templates:
    name: str
    match: str
    past: tuple[str, ...]
    current: tuple[str, ...]
    train_past: tuple[str, ...]
    train_current: tuple[str, ...]


@lru_cache(maxsize=1)
def templates() -> tuple[Templates, ...]:
    text = resources.files("chronosweep.core").joinpath("history_templates.yaml").read_text()
    out = []
    for g in yaml.safe_load(text)["groups"]:
        ev, tr = g["evaluation"], g["training"]
        out.append(Templates(g["name"], g["match"], tuple(ev["past"]), tuple(ev["current"]), tuple(tr["past"]),
                             tuple(tr["current"])))
    return tuple(out)


def templates_for(relation: str) -> Templates | None:
    for t in templates():
        if relation and re.search(t.match, relation, flags=re.IGNORECASE):
            return t
    return None


@dataclass(frozen=True)
class TimedFact:
    """One time-qualified fact: a prompt and the holder that completes it."""

    kind: str  # "history" (a past holder) or "temporal" (the current holder)
    case_id: str
    prompt: str
    holder: str
    year: int | None
    template: str


@dataclass
class HistoryPlan:
    evaluation: list[TimedFact] = field(default_factory=list)
    training: list[TimedFact] = field(default_factory=list)
    n_edits: int = 0
    # Edits with at least one past-holder probe.
    n_with_probes: int = 0
    # Edits without one, by reason; past holders that could not give a probe, by reason.
    skipped: Counter = field(default_factory=Counter)
    holders_skipped: Counter = field(default_factory=Counter)

    def coverage(self) -> dict:
        """metrics.json's history_coverage."""
        return {"edits": self.n_edits, "with_history_probes": self.n_with_probes,
                "share": self.n_with_probes / self.n_edits if self.n_edits else None,
                "history_probes": sum(f.kind == "history" for f in self.evaluation),
                "temporal_probes": sum(f.kind == "temporal" for f in self.evaluation),
                "edits_skipped": dict(self.skipped), "holders_skipped": dict(self.holders_skipped)}


def reference_year(requests: list[EditRequest]) -> int | None:
    """The latest year the data mentions: where an open span ("still holding") is taken to end."""
    years = [y for r in requests for h in r.history for y in (year_of(h.start), year_of(h.end)) if y is not None]
    years += [y for r in requests for y in (year_of(r.time_start), year_of(r.time_end)) if y is not None]
    return max(years) if years else None


def _years(h: Holding, current: bool, ref: int | None) -> range | str:
    """The years a holding certainly covers (whole or in part), or why none can be given."""
    start, end = year_of(h.start), year_of(h.end)
    if h.start and start is None or h.end and end is None:
        return "unreadable time"
    if end is None:
        if not current:
            return "past holder without an end"
        end = ref if ref is not None else start
    if start is None:
        if end is None:
            return "no time span"
        # A missing start: only the year it was last held is certain.
        start = end
    if end is None:
        return "no time span"
    if end < start:
        return "span ends before it starts"
    return range(start, max(end, start) + 1)


def _holders(r: EditRequest, ref: int | None):
    """(current holding or None, [(past holder name, its holdings)] most recent first, {name: years held})."""
    new = normalize(r.target_new)
    current = [h for h in r.history if normalize(h.holder) == new and h.end is None]
    extra: list[Holding] = []
    if not current and new not in {normalize(h.holder) for h in r.history}:
        # A history that leaves the new holder out: its span is the edit's own.
        current = extra = [Holding(r.target_new, r.time_start, r.time_end)]
    spans: dict[str, set[int]] = {}
    problems: dict[str, str] = {}
    by_name: dict[str, list[Holding]] = {}
    for h in [*r.history, *extra]:
        key = normalize(h.holder)
        by_name.setdefault(key, []).append(h)
        years = _years(h, h in current, ref)
        if isinstance(years, str):
            problems.setdefault(key, years)
        else:
            spans.setdefault(key, set()).update(years)
    past = [k for k in by_name if k != new]

    def last(k: str) -> int:
        ends = [year_of(h.end) or year_of(h.start) or -10**9 for h in by_name[k]]
        return max(ends)

    past.sort(key=last, reverse=True)
    return (current[0] if current else None), [(by_name[k][0].holder, k) for k in past], spans, problems


def _alone(key: str, spans: dict[str, set[int]]) -> list[int]:
    """Years only this holder held (a year of a change of hands belongs to two and is never asked)."""
    others = set().union(*(v for k, v in spans.items() if k != key)) if len(spans) > 1 else set()
    return sorted(spans.get(key, set()) - others)


def spread(years: list[int], k: int) -> list[int]:
    """k of the years, evenly spread from the first to the last (all of them when there are no more than k)."""
    if k <= 0:
        return []
    if len(years) <= k:
        return list(years)
    if k == 1:
        return [years[0]]
    return [years[round(i * (len(years) - 1) / (k - 1))] for i in range(k)]


def _fill(template: str, r: EditRequest, year: int | None) -> str:
    return template.format(year=year, subject=r.subject, relation=r.relation).rstrip()


def plan(requests: list[EditRequest], holders: int = 3, train_years: int = 2,
         ref: int | None = None) -> HistoryPlan:
    """Evaluation probes and training facts for these edits.

    holders: past holders probed per edit, most recent first (0: none at all). train_years: training years per
    past holder (besides the evaluation year, never it).
    """
    out = HistoryPlan(n_edits=len(requests))
    if holders <= 0:
        return out
    ref = ref if ref is not None else reference_year(requests)
    for r in requests:
        if not r.history:
            out.skipped["no history in the data"] += 1
            continue
        t = templates_for(r.relation)
        if t is None:
            out.skipped["no template for the relation (it has no name)"] += 1
            continue
        current, past, spans, problems = _holders(r, ref)
        probes = 0
        reasons: list[str] = []
        for name, key in past[:holders]:
            alone = _alone(key, spans) if key not in problems else []
            if not alone:
                reason = problems.get(key, "no year held alone (every year of the span is shared with another holder)")
                out.holders_skipped[reason] += 1
                reasons.append(reason)
                continue
            year = alone[len(alone) // 2]
            for tpl in t.past:
                out.evaluation.append(TimedFact("history", r.case_id, _fill(tpl, r, year), name, year, tpl))
            probes += 1
            others = [y for y in alone if y != year]
            for y in spread(others, train_years):
                for tpl in t.train_past:
                    out.training.append(TimedFact("history", r.case_id, _fill(tpl, r, y), name, y, tpl))
        if probes:
            out.n_with_probes += 1
        elif not past:
            out.skipped["no earlier holder in the history"] += 1
        else:
            out.skipped[f"no past holder gives a year ({Counter(reasons).most_common(1)[0][0]})"] += 1
        new_key = normalize(r.target_new)
        alone = _alone(new_key, spans) if new_key not in problems else []
        for tpl in t.current:
            if "{year}" in tpl:
                if alone:
                    out.evaluation.append(TimedFact("temporal", r.case_id, _fill(tpl, r, alone[-1]), r.target_new,
                                                    alone[-1], tpl))
            else:
                out.evaluation.append(TimedFact("temporal", r.case_id, _fill(tpl, r, None), r.target_new, None, tpl))
        start = year_of(current.start) if current is not None else None
        if start is not None:
            for tpl in t.train_current:
                out.training.append(TimedFact("temporal", r.case_id, _fill(tpl, r, start), r.target_new, start, tpl))
    return out
