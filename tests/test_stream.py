"""Edit streams (trial.stream over the sequential protocol): waves, and what stream.jsonl records after each wave."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from chronosweep.core.errors import UserError
from chronosweep.core.requests import EditRequest, EditSet, Holding, LocalityProbe
from chronosweep.core.typed import ConfigError
from chronosweep.editing.base import EditOutcome
from chronosweep.evaluation.config import EvalConfig
from chronosweep.evaluation.evaluate import Measurement
from chronosweep.evaluation.probes import build_probes
from chronosweep.trial import protocols, stream
from chronosweep.trial.config import load_config
from chronosweep.trial.run import run_trial
from tests.test_contract import SETTINGS
from tests.tiny_facts import FACTS, one_thread  # noqa: F401 (autouse fixture)

YEARS = ["2004", "2001", "2003", "2001", "2002", "2003"]


def _requests() -> list[EditRequest]:
    out = []
    for i, year in enumerate(YEARS):
        hist = (Holding(f"Old {i}", "1990", "1999"), Holding(f"New {i}", year, None))
        out.append(EditRequest(case_id=f"e{i}", subject=f"S{i}", prompt=f"The leader of S{i} is", target_new=f"New {i}",
                               target_true=f"Old {i}", relation="chairperson", time_start=year, history=hist))
    return out


class Forgetful:
    """A stand-in method on a dict 'model' (prompt -> answer): each wave writes its edits' answers, and the third
    wave overwrites the first edit applied (e1) and one past fact, as interference would."""

    def __init__(self, past_fact: str):
        self.calls = 0
        self.past_fact = past_fact

    def edit(self, model, tokenizer, requests, options, ctx):
        self.calls += 1
        for r in requests:
            model[r.prompt] = r.target_new
        if self.calls == 3:
            model["The leader of S1 is"] = "New 4"
            model[self.past_fact] = "New 3"
        return EditOutcome(model=model, trainable_params=0)


def _measure(model, probes, desc=""):
    prompts = list(dict.fromkeys(q for p in probes for q in (p.questions or (p.prompt,))))
    return Measurement({q: " " + model.get(q, "nobody") + "." for q in prompts}, [None] * len(probes),
                       [None] * len(probes))


def test_a_waves_retention_is_measured_on_its_own_probes_after_later_waves():
    reqs = _requests()
    probes = build_probes(EditSet("t", reqs, locality=[LocalityProbe("The sky is")]), EvalConfig())
    # The unedited model knows every past holder.
    model = {p.prompt: p.answers[0] for p in probes if p.kind == "history"}
    pre = _measure(model, probes)
    past_e3 = next(p.prompt for p in probes if p.kind == "history" and p.case_id == "e3")
    calls: list[set[str]] = []

    def measure(m, ps, desc):
        calls.append({p.case_id for p in ps if p.kind == "rewrite"})
        return _measure(m, ps)

    s = protocols.Setting(model=model, tokenizer=None, requests=reqs, probes=probes, pre=pre, implementation=Forgetful(past_e3),
                          options=None, ctx=SimpleNamespace(on_epoch=None), measure=measure, reseed=lambda: None,
                          progress=lambda _: None)
    result = protocols.run_sequential(s, order="time", wave="year")
    rec = result.extra["stream"]
    # Waves by year of time_start, in time order; file order within a year.
    assert [(r["label"], r["n_edits"], r["n_applied"]) for r in rec] == [
        ("2001", 2, 2), ("2002", 1, 3), ("2003", 2, 5), ("2004", 1, 6)]
    # Each checkpoint asks the edits applied so far, and no others.
    assert calls == [{"e1", "e3"}, {"e1", "e3", "e4"}, {"e1", "e3", "e4", "e2", "e5"}, {f"e{i}" for i in range(6)}]
    assert [r["reliability"] for r in rec] == [1.0, 1.0, 1.0, 1.0]
    # Wave 0 (e1, e3) loses e1 in the third wave, and stays at 0.5 after the fourth.
    assert [r["retention"] for r in rec] == [[], [1.0], [0.5, 1.0], [0.5, 1.0, 1.0]]
    assert [r["retention_first"] for r in rec] == [1.0, 1.0, 0.5, 0.5]
    assert rec[2]["retention_earlier"] == pytest.approx(2 / 3)
    # History retention over the applied edits' history probes: the past fact of e3 is lost in the third wave.
    assert [r["history_retention"] for r in rec] == [1.0, 1.0, pytest.approx(4 / 5), pytest.approx(5 / 6)]
    assert [r["n_history_known"] for r in rec] == [2, 3, 5, 6]
    # The final rows carry their wave; first_wave_retention reads the first wave's edit prompts at the end.
    metrics = protocols.metrics_of(result.rows)
    assert metrics["first_wave_retention"] == 0.5 and metrics["reliability"] == pytest.approx(5 / 6)
    assert {r["case_id"]: r["wave"] for r in result.rows if r["probe"] == "rewrite"} == {
        "e1": 0, "e3": 0, "e4": 1, "e2": 2, "e5": 2, "e0": 3}


def test_waves_of_n_edits():
    reqs = _requests()
    order, used = protocols.edit_order(reqs, "time")
    assert used == "time"
    plan = stream.waves(reqs, order, 4)
    assert [(label, [reqs[i].case_id for i in idx]) for label, idx in plan] == [
        ("edits 1-4", ["e1", "e3", "e4", "e2"]), ("edits 5-6", ["e5", "e0"])]


def test_stream_options_are_checked():
    with pytest.raises(ConfigError, match="needs protocol: sequential"):
        load_config(None, ["stream.wave=year"])
    with pytest.raises(ConfigError, match="'year' waves need stream.order: time_start"):
        load_config(None, ["protocol=sequential", "stream.wave=year", "stream.order=file"])
    undated = [EditRequest(case_id="u", subject="S", prompt="The leader of S is", target_new="X")]
    with pytest.raises(UserError, match="stream.order: time_start needs a readable time_start.*use stream.order: file"):
        protocols.edit_order(undated, "time", "stream.order")


def _timed(path: Path) -> Path:
    starts = ["2019", "2011", "2015", "2011"]
    rows = [{"subject": f[2], "prompt": f[0], "target_new": new, "target_true": "x", "time_start": t,
             "relation": "chairperson", "history": [{"holder": "Someone Else", "start": 1990, "end": 2000}]}
            for f, new, t in zip(FACTS, ["Tim Cook", "Paris", "Andy Jassy", "Berlin"], starts)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


STRATEGIES = ("single_adapter", "adapter_per_wave")


def _overrides(model_dir, data: Path, data_root) -> list[str]:
    # alpha 8 (scale 2, not the contract's 16): at lr 0.01 the larger scale spikes a wave's loss at its last epoch,
    # which the degenerate-edit check rightly flags (trial/health.py), and a degenerate trial has no stream row.
    return [f"model={model_dir}", "device=cpu", "method=lora", *SETTINGS["lora"], "lora.alpha=8", f"data.name={data}",
            f"data.root={data_root}", "data.locality_limit=3", "eval.max_new_tokens=3", "threads=1",
            "save_artifacts=false"]


@pytest.fixture(scope="module")
def stream_runs(fact_llama_dir, data_root, tmp_path_factory):
    """A 3-wave LoRA stream under each strategy, and one batch trial on the same edits."""
    root = tmp_path_factory.mktemp("streams")
    data = _timed(root / "e.jsonl")
    before = os.environ.get("CHRONOSWEEP_CACHE")
    os.environ["CHRONOSWEEP_CACHE"] = str(root / "cache")
    try:
        runs = {}
        for strategy in STRATEGIES:
            cfg = load_config(None, [*_overrides(fact_llama_dir, data, data_root), f"lora.stream_strategy={strategy}",
                                     "protocol=sequential", "stream.wave=year"])
            runs[strategy] = run_trial(cfg, root / "exp" / strategy, progress=lambda _: None)
        runs["batch"] = run_trial(load_config(None, _overrides(fact_llama_dir, data, data_root)), root / "batch",
                                  progress=lambda _: None)
    finally:
        if before is None:
            os.environ.pop("CHRONOSWEEP_CACHE", None)
        else:
            os.environ["CHRONOSWEEP_CACHE"] = before
    return root, runs


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_lora_stream_writes_stream_jsonl(strategy, stream_runs):
    root, runs = stream_runs
    m = runs[strategy]
    lines = [json.loads(x) for x in (root / "exp" / strategy / "stream.jsonl").read_text().splitlines()]
    assert [r["label"] for r in lines] == ["2011", "2015", "2019"] and m["stream_waves"] == 3
    assert [len(r["retention"]) for r in lines] == [0, 1, 2]
    for r in lines:
        assert 0 <= r["reliability"] <= 1 and 0 <= r["locality"] <= 1 and r["history_accuracy"] is not None
    # The end of the stream is the run's final evaluation.
    assert lines[-1]["retention_first"] == m["first_wave_retention"]
    assert lines[-1]["reliability_applied"] == m["reliability"]
    if strategy == "adapter_per_wave":
        # Three adapters, each merged before the next: their parameters add up.
        assert m["trainable_params"] == 3 * runs["batch"]["trainable_params"]
    else:
        assert m["trainable_params"] == runs["batch"]["trainable_params"]


def test_report_draws_the_stream_section(stream_runs):
    from chronosweep.report.build import ReportOptions, make_report

    root, _ = stream_runs
    result = make_report([root / "exp"], root / "report", ReportOptions(progress=False))
    summary = (root / "report" / "summary.md").read_text()
    assert "## Edit streams" in summary and "lora / single_adapter" in summary and "lora / adapter_per_wave" in summary
    stream_plots = [f for f in result.files if f.name.endswith("stream.png")]
    assert len(stream_plots) == 1 and stream_plots[0].stat().st_size > 10_000
    section = summary.split("## Edit streams", 1)[1].split("\n## ", 1)[0]
    assert "first_wave_retention" in section or "first-wave retention" in section


@pytest.mark.parametrize("sweep", ["stream.yaml", "stream-small.yaml"])
def test_shipped_stream_sweeps_have_an_objective_every_trial_can_score(sweep, stream_runs):
    """A sweep fails a trial whose objective term is null: history_retention is null when the unedited model knows
    none of the history probes (the tiny model here, SmolLM2 on the small sweep's edits)."""
    from chronosweep.sweep.spec import load_sweep

    _, runs = stream_runs
    spec = load_sweep(Path(__file__).resolve().parents[1] / "configs" / "sweeps" / sweep)
    for strategy in STRATEGIES:
        assert runs[strategy]["history_retention"] is None
        assert spec.objective.value(runs[strategy]) is not None
