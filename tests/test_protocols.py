"""The edit protocols (trial.protocols) on the tiny fact model: exact restoration, what each checkpoint scores,
and that `single` gives what one process per edit gives, without reloading the model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from chronosweep.core.models import load, resolve
from chronosweep.core.typed import ConfigError
from chronosweep.editing.base import EditContext
from chronosweep.editing.registry import METHODS
from chronosweep.trial import protocols
from chronosweep.trial.config import load_config
from chronosweep.trial.run import run_trial
from tests.test_contract import SETTINGS, _write_edits
from tests.tiny_facts import FACTS, greedy, one_thread  # noqa: F401 (autouse fixture)
from tests.trainkit import tiny_requests


def _config(model_dir: Path, method: str, edits: Path, data_root: Path, extra=()):
    return load_config(None, [f"model={model_dir}", "device=cpu", f"method={method}", *SETTINGS[method],
                              f"data.name={edits}", f"data.root={data_root}", "data.locality_limit=4",
                              "eval.max_new_tokens=4", "threads=1", "save_artifacts=false", *extra])


def _state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("method", list(METHODS))
def test_restoring_after_each_edit_is_bit_identical(method, fact_llama_dir, tmp_path):
    """Two edits, each followed by a restore: every parameter, module and hook is as it was, and the model answers
    as before; the edit did change the model it was evaluated on."""
    info = resolve(str(fact_llama_dir))
    model, tok = load(info, torch.device("cpu"), torch.float32)
    cfg = load_config(None, [f"model={fact_llama_dir}", f"method={method}", *SETTINGS[method]])
    ctx = EditContext(runtime=cfg.runtime(), info=info, device=torch.device("cpu"), dtype=torch.float32,
                      run_dir=None, cache_dir=tmp_path / "cache")
    impl = METHODS[method].load()
    before = _state(model)
    modules = [n for n, _ in model.named_modules()]
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    prompt = FACTS[0][0]
    answer = greedy(model, tok, prompt)
    restorer = protocols.Restorer(model, impl, cfg.options, ctx)
    for req in tiny_requests(2):
        torch.manual_seed(0)
        outcome = impl.edit(model, tok, [req], cfg.options, ctx)
        edited = {n.removeprefix("peft_model.").replace("base_model.model.", "").replace(".base_layer", ""): p
                  for n, p in outcome.model.named_parameters()}
        moved = [n for n in before if n in edited and not torch.equal(edited[n], before[n])]
        assert moved or METHODS[method].family == "gradient" and outcome.detach is not None
        back = restorer.restore(outcome)
        assert back is model
        after = _state(model)
        assert after.keys() == before.keys()
        assert all(torch.equal(after[n], before[n]) for n in before), [n for n in before if not torch.equal(after[n], before[n])]
        assert [n for n, _ in model.named_modules()] == modules
        assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
        assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
        assert greedy(model, tok, prompt) == answer


def test_a_parameter_changed_outside_the_declared_ones_is_an_error(fact_llama_dir, tmp_path):
    info = resolve(str(fact_llama_dir))
    model, tok = load(info, torch.device("cpu"), torch.float32)
    cfg = load_config(None, [f"model={fact_llama_dir}", "method=rome", *SETTINGS["rome"]])
    ctx = EditContext(runtime=cfg.runtime(), info=info, device=torch.device("cpu"), dtype=torch.float32,
                      run_dir=None, cache_dir=tmp_path / "cache")
    impl = METHODS["rome"].load()
    restorer = protocols.Restorer(model, impl, cfg.options, ctx)
    outcome = impl.edit(model, tok, tiny_requests(1), cfg.options, ctx)
    with torch.no_grad():
        model.model.norm.weight.mul_(1.5)  # a change rome does not declare
    with pytest.raises(protocols.RestoreError, match="model.norm.weight"):
        restorer.restore(outcome)


@pytest.mark.parametrize("method", ["rome", "rome-preserve", "lora"])
def test_single_equals_one_trial_per_edit(method, fact_llama_dir, tmp_path, data_root, monkeypatch):
    """What the literature emulates with one process per edit (data.offset=i, data.limit=1), single gives in one
    trial: the same post-edit answers and token accuracies for every edit."""
    monkeypatch.setenv("CHRONOSWEEP_CACHE", str(tmp_path / "cache"))
    edits = _write_edits(tmp_path / "edits.jsonl")
    single = run_trial(_config(fact_llama_dir, method, edits, data_root, ["protocol=single"]), tmp_path / "single",
                       progress=lambda _: None)
    rows = [json.loads(line) for line in (tmp_path / "single" / "predictions.jsonl").read_text().splitlines()]
    assert single["protocol"] == "single" and single["n_evaluations"] == 4
    locality = []
    for i in range(4):
        one = run_trial(_config(fact_llama_dir, method, edits, data_root, ["data.limit=1", f"data.offset={i}"]),
                        tmp_path / f"one{i}", progress=lambda _: None)
        assert one["protocol"] == "batch"
        theirs = [json.loads(line) for line in (tmp_path / f"one{i}" / "predictions.jsonl").read_text().splitlines()]
        ours = [r for r in rows if r["case_id"] == theirs[0]["case_id"]]
        mine = [(r["probe"], r["post"], r["token_acc"]) for r in ours]
        assert mine == [(r["probe"], r["post"], r["token_acc"]) for r in theirs if r["probe"] != "locality"]
        locality.append({r["prompt"]: (r["token_acc"], r["answer_score"]) for r in theirs if r["probe"] == "locality"})
    # Locality: every edit's agreement with the unedited model, averaged over the edits. (A one-edit run picks its
    # locality facts avoiding only its own subject, so compare the probes both runs have.)
    ours = [r for r in rows if r["probe"] == "locality"]
    compared = 0
    for row in ours:
        for i, loc in enumerate(locality):
            if row["prompt"] in loc:
                assert (row["token_acc_all"][i], row["answer_score_all"][i]) == pytest.approx(loc[row["prompt"]])
                compared += 1
        assert row["token_acc"] == pytest.approx(sum(row["token_acc_all"]) / 4)
        assert row["answer_score"] == pytest.approx(sum(row["answer_score_all"]) / 4)
    assert compared >= len(ours)
    assert single["locality_acc"] == pytest.approx(sum(r["token_acc"] for r in ours) / len(ours))


def test_single_loads_the_model_once(fact_llama_dir, tmp_path, data_root, monkeypatch):
    import chronosweep.core.models as models

    monkeypatch.setenv("CHRONOSWEEP_CACHE", str(tmp_path / "cache"))
    calls = []
    real = models.load
    monkeypatch.setattr(models, "load", lambda *a, **k: calls.append(a) or real(*a, **k))
    edits = _write_edits(tmp_path / "edits.jsonl")
    run_trial(_config(fact_llama_dir, "memit", edits, data_root, ["protocol=single"]), tmp_path / "run",
              progress=lambda _: None)
    assert len(calls) == 1


def _timed_edits(path: Path) -> Path:
    starts = ["+2019-05-01T00:00:00Z", "+2011-01-01T00:00:00Z", "+2015-02-03T00:00:00Z", "+2011-01-01T00:00:00Z"]
    rows = [{"subject": f[2], "prompt": f[0], "target_new": new, "target_true": "x", "time_start": t,
             "paraphrases": [f"In short, {f[0].lower()}"]}
            for f, new, t in zip(FACTS, ["Tim Cook", "Paris", "Andy Jassy", "Berlin"], starts)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_sequential_checkpoints_score_only_the_applied_edits(fact_llama_dir, tmp_path, data_root, monkeypatch):
    monkeypatch.setenv("CHRONOSWEEP_CACHE", str(tmp_path / "cache"))
    measured: list[list[tuple[str, str]]] = []
    real = protocols.run_sequential

    def spy(s, **kwargs):
        inner = s.measure
        s.measure = lambda m, ps, desc: measured.append([(p.kind, p.case_id) for p in ps]) or inner(m, ps, desc)
        return real(s, **kwargs)

    monkeypatch.setattr(protocols, "run_sequential", spy)
    edits = _timed_edits(tmp_path / "edits.jsonl")
    cfg = _config(fact_llama_dir, "rome-preserve", edits, data_root, ["protocol=sequential", "eval_every=1"])
    metrics = run_trial(cfg, tmp_path / "run", progress=lambda _: None)
    # time_start order; the two edits of 2011 keep their file order.
    order = ["edits:2", "edits:4", "edits:3", "edits:1"]
    assert metrics["edit_order"] == "time" and metrics["applied_order"] == order
    assert [c["n_applied"] for c in metrics["checkpoints"]] == [1, 2, 3, 4]
    for k, probes in enumerate(measured, 1):
        scored = {cid for kind, cid in probes if kind in ("rewrite", "paraphrase")}
        assert scored == set(order[:k]), (k, scored)
        assert sum(kind == "locality" for kind, _ in probes) == 4
    final = metrics["checkpoints"][-1]
    assert all(final[k] == metrics[k] for k in ("rewrite_acc", "rephrase_acc", "locality_acc", "reliability"))
    assert "immediate" in metrics and 0 <= metrics["immediate"]["rewrite_acc"] <= 1
    # The history numbers the steps in the applied order.
    assert [h["protocol_step"] for h in metrics["history"]] == [0, 1, 2, 3]
    assert [h["case_id"] for h in metrics["history"]] == order


def test_edit_order_time_needs_every_time_start(fact_llama_dir, tmp_path, data_root):
    edits = _write_edits(tmp_path / "edits.jsonl")  # no time_start
    cfg = _config(fact_llama_dir, "rome", edits, data_root, ["protocol=sequential", "edit_order=time"])
    with pytest.raises(Exception, match="edit_order: time needs a readable time_start"):
        run_trial(cfg, tmp_path / "run", progress=lambda _: None)
    assert protocols.edit_order(tiny_requests(3), "auto") == ([0, 1, 2], "file")


def test_protocol_options_are_checked():
    with pytest.raises(ConfigError, match="protocol: must be one of"):
        load_config(None, ["protocol=one-by-one"])
    with pytest.raises(ConfigError, match="eval_every: must be >= 1"):
        load_config(None, ["protocol=sequential", "eval_every=0"])


def test_protocol_is_recorded_and_reported(fact_llama_dir, tmp_path, data_root, monkeypatch):
    from chronosweep.report.load import load_trials
    from chronosweep.report.tables import build_tables

    monkeypatch.setenv("CHRONOSWEEP_CACHE", str(tmp_path / "cache"))
    edits = _write_edits(tmp_path / "edits.jsonl")
    for protocol in ("batch", "single"):
        for method in ("rome", "rome-preserve"):
            m = run_trial(_config(fact_llama_dir, method, edits, data_root, [f"protocol={protocol}"]),
                          tmp_path / "exp" / f"{method}-{protocol}", progress=lambda _: None)
            assert m["protocol"] == protocol and m["config"]["protocol"] == protocol
            assert m["algorithm"] == "rome" and m["variant"] == (None if method == "rome" else "preserve")
    loaded = load_trials([tmp_path / "exp"], progress=False)
    from chronosweep.evaluation.objective import Objective
    from chronosweep.report.tables import add_derived

    df = add_derived(loaded.trials, Objective(metric="rewrite_acc")).with_columns(pareto=False)
    tables = build_tables(df, [], loaded.config_columns)
    assert tables.key == ["method", "protocol"]
    assert sorted(tables.methods.select("method", "protocol").rows()) == [
        ("rome", "batch"), ("rome", "single"), ("rome-preserve", "batch"), ("rome-preserve", "single")]


@pytest.mark.ray
def test_a_sweep_runs_every_protocol(fact_llama_dir, data_root, tmp_path, monkeypatch):
    """protocol is a sweep parameter like any other: each trial records it, trials.csv has it."""
    import polars as pl
    import yaml

    from chronosweep.sweep.runner import SweepOptions, run_sweep
    from chronosweep.sweep.spec import load_sweep

    monkeypatch.setenv("CHRONOSWEEP_CACHE", str(tmp_path / "cache"))
    edits = _write_edits(tmp_path / "edits.jsonl")
    settings = {"rome": {"layer": 1, "context_templates": [[11, 1]], "v_num_grad_steps": 4},
                "memit-preserve": {"layers": [1, 2], "context_templates": [[11, 1]], "v_num_grad_steps": 4,
                                   "stats_samples": 1024, "mom2_update_weight": 500}}
    sweep = {"base": {"model": str(fact_llama_dir), "data": {"name": str(edits), "root": str(data_root),
                                                             "locality_limit": 2},
                      "eval": {"max_new_tokens": 3}, "eval_every": 2, "save_artifacts": False, **settings},
             "space": {"method": ["rome", "memit-preserve"], "protocol": ["batch", "single", "sequential"]},
             "search": "grid", "max_concurrent_trials": 2, "objective": {"metric": "rewrite_acc"}}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    summary = run_sweep(load_sweep(path), SweepOptions(name="protocols", storage=str(tmp_path / "sweeps"), num_cpus=2))
    frame = summary.frame
    assert frame.height == 6 and frame.filter(pl.col("status") == "ok").height == 6
    assert sorted(frame.select("method", "protocol").rows()) == sorted(
        (m, p) for m in ("rome", "memit-preserve") for p in ("batch", "single", "sequential"))
    csv = pl.read_csv(tmp_path / "sweeps" / "protocols" / "trials.csv")
    assert set(csv["protocol"]) == {"batch", "single", "sequential"}
    assert set(csv["variant"].fill_null("published")) == {"published", "preserve"}
    seq = csv.filter(pl.col("protocol") == "sequential")
    assert seq["immediate_rewrite_acc"].null_count() == 0 and set(seq["edit_order"]) == {"file"}
