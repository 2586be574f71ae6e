"""History probes from time spans (core.history), the JSONL `history` field, and the history metrics."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from chronosweep.core import history
from chronosweep.core.requests import EditRequest, EditSet, Holding
from chronosweep.data import DataError, load_edits
from chronosweep.data.config import DataConfig
from chronosweep.data.dyknow import holdings, parse_answer
from chronosweep.evaluation.config import EvalConfig
from chronosweep.evaluation.probes import build_probes
from chronosweep.evaluation.scoring import aggregate, unit_values


def _edit(hist, relation="President of Italy", new="Sergio Mattarella", start="+2015-02-03T00:00:00Z", **kw):
    return EditRequest(case_id="e:1", subject="Italy", prompt="The President of Italy is", target_new=new,
                       target_true="Giorgio Napolitano", relation=relation, time_start=start, history=tuple(hist), **kw)


ITALY = [Holding("Carlo Azeglio Ciampi", "+1999-05-18T00:00:00Z", "+2006-05-15T00:00:00Z"),
         Holding("Giorgio Napolitano", "+2006-05-15T00:00:00Z", "+2015-01-14T00:00:00Z"),
         Holding("Sergio Mattarella", "+2015-02-03T00:00:00Z", None)]


def test_past_holders_are_asked_at_a_year_they_alone_held_the_office():
    p = history.plan([_edit(ITALY)], ref=2023)
    past = [f for f in p.evaluation if f.kind == "history"]
    # Most recent first, the middle of the years each held alone; 2006 (a change of hands) is never asked.
    assert [(f.holder, f.prompt) for f in past] == [
        ("Giorgio Napolitano", "In 2011, the President of Italy was"),
        ("Carlo Azeglio Ciampi", "In 2002, the President of Italy was")]
    current = [f for f in p.evaluation if f.kind == "temporal"]
    assert [f.prompt for f in current] == ["As of 2023, the President of Italy is", "Currently, the President of Italy is"]
    assert {f.holder for f in current} == {"Sergio Mattarella"}
    assert p.n_with_probes == 1 and not p.skipped


def test_open_and_missing_ends():
    hist = [Holding("A", None, "+2001-00-00T00:00:00Z"),        # missing start: only its last year is certain
            Holding("B", "+2003-00-00T00:00:00Z", "+2008-00-00T00:00:00Z"),
            Holding("C", "+1990-00-00T00:00:00Z", None),        # open end, but not the current holder
            Holding("Sergio Mattarella", "+2008-00-00T00:00:00Z", None)]  # open end: current, up to the data's year
    p = history.plan([_edit(hist, start="+2008-00-00T00:00:00Z")], ref=2010)
    asked = {f.holder: f.year for f in p.evaluation if f.kind == "history"}
    assert asked == {"B": 2005, "A": 2001}
    assert p.holders_skipped == {"past holder without an end": 1}
    assert {f.year for f in p.evaluation if f.kind == "temporal"} == {2010, None}
    # The current holder's span is open: with the data ending in 2008, no year is its alone.
    p = history.plan([_edit(hist, start="+2008-00-00T00:00:00Z")], ref=2008)
    assert [f.prompt for f in p.evaluation if f.kind == "temporal"] == ["Currently, the President of Italy is"]


def test_points_in_time_and_reversed_spans():
    # |P: a point in time is a span of one instant
    name, tags = parse_answer("Jane Doe |P: +2012-06-01T00:00:00Z")
    assert holdings([(name, tags)]) == (Holding("Jane Doe", "+2012-06-01T00:00:00Z", "+2012-06-01T00:00:00Z"),)
    hist = [Holding("Jane Doe", "+2012-06-01T00:00:00Z", "+2012-06-01T00:00:00Z"),
            Holding("Sergio Mattarella", "+2013-01-01T00:00:00Z", None)]
    assert [f.year for f in history.plan([_edit(hist)], ref=2020).evaluation if f.kind == "history"] == [2012]
    # A span that ends before it starts is counted with that reason.
    bad = [Holding("Jane Doe", "+2012-06-01T00:00:00Z", "+2010-01-01T00:00:00Z"), ITALY[2]]
    assert history.plan([_edit(bad)], ref=2020).holders_skipped == {"span ends before it starts": 1}


def test_skipped_edits_are_counted_with_the_reason():
    # Jane Doe's only year is shared with the next holder: she cannot be asked.
    hist_shared = [Holding("Jane Doe", "+2013-01-01T00:00:00Z", "+2013-06-01T00:00:00Z"),
                   Holding("Sergio Mattarella", "+2013-06-01T00:00:00Z", None)]
    p = history.plan([_edit(hist_shared), _edit([]), _edit([ITALY[2]])], ref=2020)
    assert p.n_with_probes == 0
    assert p.skipped == {"no past holder gives a year (no year held alone (every year of the span is shared with "
                         "another holder))": 1, "no history in the data": 1, "no earlier holder in the history": 1}
    cov = p.coverage()
    assert cov["edits"] == 3 and cov["with_history_probes"] == 0 and cov["share"] == 0


def test_templates_are_per_relation_data():
    assert history.templates_for("athletes_byPayment").past == ("In {year}, {subject} played for",)
    assert history.templates_for("Prime Minister of Italy").name == "office of a country"
    assert history.templates_for("chairperson").name == "any other relation of a subject"
    for t in history.templates():
        assert not set(t.past + t.current) & set(t.train_past + t.train_current), t.name


def test_dyknow_gives_history_probes_for_most_modification_edits(data_root):
    edits = load_edits(DataConfig(name="dyknow", root=str(data_root), limit=None, locality="none"))
    mods = [r for r in edits.requests if r.kind == "modification"]
    p = history.plan(mods)
    assert p.n_with_probes / len(mods) >= 0.8, p.coverage()
    assert p.n_with_probes + sum(p.skipped.values()) == len(mods)
    probes = build_probes(EditSet("dyknow", mods), EvalConfig())
    assert sum(pr.kind == "history" for pr in probes) == sum(f.kind == "history" for f in p.evaluation) > len(mods)
    assert {pr.kind for pr in probes} >= {"history", "temporal"}
    assert not any(pr.kind in ("history", "temporal") for pr in build_probes(EditSet("d", mods), EvalConfig(history_holders=0)))


def test_jsonl_history_gives_the_same_probes(tmp_path, data_root):
    rec = {"case_id": "it", "subject": "Italy", "prompt": "The President of Italy is", "target_new": "Sergio Mattarella",
           "target_true": "Giorgio Napolitano", "relation": "President of Italy", "time_start": 2015,
           "history": [{"holder": "Carlo Azeglio Ciampi", "start": 1999, "end": "2006-05-15"},
                       {"holder": "Giorgio Napolitano", "start": "2006-05-15", "end": 2015}]}
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps(rec) + "\n")
    edits = load_edits(DataConfig(name=str(path), root=str(data_root), locality="none"))
    assert edits.requests[0].history[0] == Holding("Carlo Azeglio Ciampi", "1999", "2006-05-15")
    p = history.plan(edits.requests)
    # The current holder is not in the list: its span is the edit's own (time_start 2015, open end).
    assert [(f.holder, f.year) for f in p.evaluation if f.kind == "history"] == [("Giorgio Napolitano", 2011),
                                                                                 ("Carlo Azeglio Ciampi", 2002)]
    # It writes back unchanged.
    from chronosweep.data import write_jsonl
    out = write_jsonl(edits.requests, tmp_path / "back.jsonl")
    back = load_edits(DataConfig(name=str(out), root=str(data_root), locality="none")).requests
    assert [replace(r, source="") for r in back] == [replace(r, source="") for r in edits.requests]


def test_bad_history_entries_name_the_record_and_field(tmp_path, data_root):
    rec = {"subject": "Italy", "prompt": "The President of Italy is", "target_new": "Sergio Mattarella",
           "history": [{"holder": "A", "start": "last spring"}, {"start": 1999}, "B"]}
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(rec) + "\n")
    with pytest.raises(DataError) as err:
        load_edits(DataConfig(name=str(path), root=str(data_root), locality="none"))
    text = str(err.value)
    assert "line 1" in text and "'history[0].start'" in text and "last spring" in text
    assert "'history[1].holder': missing" in text and "'history[2]'" in text


def _row(probe, cid, correct, pre_correct, **kw):
    return {"probe": probe, "case_id": cid, "correct": correct, "pre_correct": pre_correct, **kw}


def test_history_metrics_from_rows():
    rows = [_row("history", "a", True, True), _row("history", "a", False, True), _row("history", "b", True, False),
            _row("history", "b", False, False), _row("temporal", "a", True, False), _row("temporal", "a", False, False),
            _row("temporal", "b", True, True)]
    units = unit_values(rows, "post")
    m = aggregate(units, "post")
    assert m["history_accuracy"] == pytest.approx(2 / 4)
    # Only the two probes the unedited model knew count, one of them forgotten.
    assert m["history_retention"] == pytest.approx(1 / 2) and m["n_history_known"] == 2
    assert m["temporal_reliability"] == pytest.approx((0.5 + 1.0) / 2)
    pre = aggregate(unit_values(rows, "pre"), "pre")
    assert pre["history_accuracy"] == pytest.approx(2 / 4) and "history_retention" not in pre


def test_dyknow_edit_writes_the_history_metrics(fact_llama_dir, tmp_path, data_root, monkeypatch):
    """`chronosweep edit --set data.name=dyknow` on a tiny model: the three history metrics and their coverage."""
    from chronosweep.trial.config import load_config
    from chronosweep.trial.run import run_trial

    monkeypatch.setenv("CHRONOSWEEP_CACHE", str(tmp_path / "cache"))
    cfg = load_config(None, [f"model={fact_llama_dir}", "device=cpu", "method=lora", "lora.layer_start=1",
                             "lora.layer_width=2", "lora.rank=4", "lora.epochs=2", "data.name=dyknow", "data.limit=3",
                             f"data.root={data_root}", "data.locality_limit=3", "eval.max_new_tokens=3", "threads=1",
                             "save_artifacts=false"])
    m = run_trial(cfg, tmp_path / "run", progress=lambda _: None)
    assert m["n_history"] > 0 and m["n_temporal"] > 0
    for key in ("history_accuracy", "temporal_reliability"):
        assert 0.0 <= m[key] <= 1.0
    assert "history_retention" in m and m["n_history_known"] >= 0
    assert m["history_coverage"]["edits"] == 3
    rows = [json.loads(line) for line in Path(tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    hist = [r for r in rows if r["probe"] == "history"]
    assert len(hist) == m["n_history"] and all(isinstance(r["year"], int) for r in hist)


def test_training_facts_are_never_the_evaluation_probes(data_root):
    """The history-preserving option trains other wording and other years than the probes that are scored."""
    edits = load_edits(DataConfig(name="dyknow", root=str(data_root), limit=None))
    p = history.plan(edits.requests, holders=3, train_years=2)
    assert len(p.training) > len(p.evaluation)
    scored = {pr.prompt for pr in build_probes(edits, EvalConfig())}
    assert not {f.prompt for f in p.training} & scored
    asked = {(f.case_id, f.holder, f.year) for f in p.evaluation if f.kind == "history"}
    assert not {(f.case_id, f.holder, f.year) for f in p.training if f.kind == "history"} & asked
    # Every edit's current holder is trained as a time-qualified fact too.
    assert {f.holder for f in p.training if f.kind == "temporal"} <= {r.target_new for r in edits.requests}


def test_history_preserving_lora_trains_facts_it_never_scores(fact_llama_dir, tmp_path, data_root, monkeypatch):
    from chronosweep.editing import history_training
    from chronosweep.trial.config import load_config
    from chronosweep.trial.run import run_trial

    monkeypatch.setenv("CHRONOSWEEP_CACHE", str(tmp_path / "cache"))
    trained: list[str] = []
    real = history_training.HistoryFacts.take

    def spy(self, requests):
        out = real(self, requests)
        trained.extend(self.facts[i].prompt for i in out)
        return out

    monkeypatch.setattr(history_training.HistoryFacts, "take", spy)
    cfg = load_config(None, [f"model={fact_llama_dir}", "device=cpu", "method=lora", "lora.layer_start=1",
                             "lora.layer_width=2", "lora.rank=4", "lora.epochs=2", "lora.history_weight=0.5",
                             "data.name=dyknow", "data.limit=4", f"data.root={data_root}", "data.locality_limit=3",
                             "eval.max_new_tokens=3", "threads=1", "save_artifacts=false"])
    m = run_trial(cfg, tmp_path / "run", progress=lambda _: None)
    assert trained and all("history_loss" in h for h in m["history"])
    rows = [json.loads(line) for line in Path(tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert {r["probe"] for r in rows} >= {"history", "temporal"}
    assert not set(trained) & {r["prompt"] for r in rows}
    # What the run says it trained (training_prompts.json, which run_trial checks against every probe) holds them.
    recorded = json.loads((tmp_path / "run" / "training_prompts.json").read_text())["examples"]
    assert set(trained) <= {e["prompt"] for e in recorded if e["source"] == "history"}
    assert m["training"]["disjoint_from_eval"] is True
    assert m["config"]["lora"]["history_weight"] == 0.5


def test_training_years_spread_over_the_span():
    assert history.spread([2001, 2002, 2003, 2004, 2005], 2) == [2001, 2005]
    assert history.spread([2001, 2002, 2003, 2004, 2005], 3) == [2001, 2003, 2005]
    assert history.spread([2001, 2002], 5) == [2001, 2002] and history.spread([2001], 0) == []
    p = history.plan([_edit(ITALY)], train_years=3, ref=2023)
    napolitano = sorted(f.year for f in p.training if f.holder == "Giorgio Napolitano" and f.kind == "history")
    # 2007-2014 held alone, 2011 asked by the evaluation probe: three of the other seven.
    assert napolitano == [2007, 2010, 2014] and 2011 not in napolitano
