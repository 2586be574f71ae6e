"""Degenerate edits are named and never ranked; a failed trial is one console line.

The rules (trial/health.py) are checked on hand-made rows; then a real sweep on the tiny fact model holds a
healthy trial, one whose learning rate breaks the model, and one that fails, and the console, trials.csv,
best.yaml and the report are read back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from chronosweep.trial import health
from tests.test_report import BOOT, predictions, write_run

ROOT = Path(__file__).resolve().parents[1]


def rows(post: list[str], pre: list[str] | None = None, cases: list[str] | None = None) -> list[dict]:
    pre = pre or [f"before {i}" for i in range(len(post))]
    cases = cases or [f"e{i}" for i in range(len(post))]
    return [{"probe": "rewrite", "case_id": c, "prompt": f"p{i}", "pre": b, "post": a}
            for i, (c, b, a) in enumerate(zip(cases, pre, post))]


def test_rising_loss_is_degenerate_and_falling_or_flat_is_not():
    up = [{"epoch": 1, "loss": 2.59}, {"epoch": 2, "loss": 21.4}, {"epoch": 3, "loss": 10.8}]
    verdict = health.assess(up, rows([f"answer {i}" for i in range(10)]))
    assert verdict["status"] == "degenerate"
    assert verdict["degenerate_reason"] == "training loss rose from 2.59 (first epoch) to 10.8 (last epoch)"
    assert verdict["health"]["loss_first"] == 2.59 and verdict["health"]["loss_last"] == 10.8
    for history in ([{"epoch": 1, "loss": 3.0}, {"epoch": 2, "loss": 9.0}, {"epoch": 3, "loss": 1.0}],
                    [{"epoch": 1, "loss": 3.0}, {"epoch": 2, "loss": 3.0}],
                    [{"epoch": 1, "loss": 3.0}],  # one epoch: nothing to compare
                    [{"edit": 0, "loss": 0.1}, {"edit": 1, "loss": 5.0}]):  # ROME's per-edit rows are not epochs
        assert health.assess(history, rows([f"answer {i}" for i in range(10)]))["status"] == "ok", history


def test_collapsed_outputs_are_degenerate_unless_the_model_was_so_before():
    empty = health.assess([], rows([""] * 10))
    assert empty["status"] == "degenerate" and empty["degenerate_reason"].startswith("100% of post-edit outputs")
    same = health.assess([], rows(["Paris"] * 9 + ["Rome"]))
    assert same["status"] == "degenerate" and same["health"]["collapsed_share"] == 0.9
    # Just under the threshold: 8 of 10 identical plus one empty is 90%, 8 alone is not.
    assert health.assess([], rows(["Paris"] * 8 + ["Rome", "Oslo"]))["status"] == "ok"
    assert health.assess([], rows(["Paris"] * 8 + ["Rome", ""]))["status"] == "degenerate"
    # Every paraphrase of one successful edit may give the same answer: one question is not a collapse.
    assert health.assess([], rows(["Sergio Mattarella"] * 4, cases=["e0"] * 4))["status"] == "ok"
    # The unedited model already answered everything alike (a random tiny model): the edit is not blamed.
    assert health.assess([], rows([""] * 10, pre=["is is is"] * 10))["status"] == "ok"
    assert health.COLLAPSED_SHARE == 0.9 and health.LOSS_RISE == 1.0  # the documented thresholds


@pytest.mark.ray
def test_sweep_names_a_degenerate_trial_and_prints_one_line_for_a_failed_one(fact_llama_dir, data_root, tmp_path):
    from chronosweep.report.build import ReportOptions, make_report

    sweep = tmp_path / "health.yaml"
    sweep.write_text(yaml.safe_dump({
        "base": {"model": str(fact_llama_dir), "data": {"root": str(data_root), "limit": 4, "locality_limit": 6},
                 "eval": {"max_new_tokens": 3},
                 "lora": {"epochs": 4, "batch_size": 4, "rank": 2, "layer_start": 0, "layer_width": 2}},
        # lr 0.002 trains; 1e4 breaks the model without a non-finite loss; cuda fails inside the trial.
        "space": {"lora.lr": [0.002, 10000.0],
                  "device": {"type": "categorical", "values": ["cpu", "cuda"], "when": {"lora.lr": 0.002}}},
        "search": "grid", "max_concurrent_trials": 1, "objective": {"metric": "reliability"},
    }))
    storage = tmp_path / "sweeps"
    run = subprocess.run([sys.executable, "-m", "chronosweep.cli", "sweep", str(sweep), "--name", "health",
                          "--storage", str(storage), "--num-cpus", "1"], cwd=ROOT, capture_output=True, text=True,
                         timeout=900, env={**os.environ, "CHRONOSWEEP_CACHE": str(tmp_path / "cache")})
    console = run.stdout + run.stderr
    assert run.returncode == 0, console[-4000:]
    experiment = storage / "health"
    table = pl.read_csv(experiment / "trials.csv")
    by_status = {r["status"]: r for r in table.iter_rows(named=True)}
    assert sorted(by_status) == ["degenerate", "failed", "ok"]
    bad, failed, good = by_status["degenerate"], by_status["failed"], by_status["ok"]
    assert bad["lora.lr"] == 10000.0 and "post-edit outputs are empty or one identical string" in bad["degenerate_reason"]
    assert good["degenerate_reason"] is None and good["device"] == "cpu" and failed["device"] == "cuda"
    metrics = json.loads((experiment / bad["trial"] / "run" / "metrics.json").read_text())
    assert metrics["status"] == "degenerate" and metrics["degenerate_reason"] == bad["degenerate_reason"]

    # Never best: best.yaml is the healthy trial's config even if the broken one scored higher.
    assert yaml.safe_load((experiment / "best.yaml").read_text())["lora"]["lr"] == 0.002
    assert f"{bad['trial']} DEGENERATE (never ranked)" in console
    assert f"{bad['trial']} is degenerate, never ranked" in console
    assert f"best (max objective): {good['trial']}" in console

    # The failed trial: exactly one console line, with the error and where its traceback is; no Ray dump.
    failed_lines = [line for line in console.splitlines() if "FAILED" in line]
    assert failed_lines == [f"{failed['trial']} FAILED  lora.lr=0.002 device=cuda: UserError: device: cuda was asked "
                            f"for but torch sees no CUDA device  (traceback: "
                            f"{experiment / failed['trial'] / 'run' / 'error.txt'})"]
    assert "Traceback" not in console and "errored after" not in console and "/tmp/ray" not in console
    assert "Traceback (most recent call last)" in (experiment / failed["trial"] / "run" / "error.txt").read_text()

    result = make_report([experiment], tmp_path / "report", ReportOptions(bootstrap=BOOT, plots=False,
                                                                          progress=False))
    assert result.tables.degenerate["trial"].to_list() == [bad["trial"]]
    assert result.tables.methods["trial"].to_list() == [good["trial"]]
    assert result.tables.pareto["trial"].to_list() == [good["trial"]]  # the broken trial competes with no one
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "Degenerate trials (1)" in summary and "1 ok, 1 degenerate, 1 failed" in summary


def test_report_never_names_a_tie_at_zero_best(tmp_path):
    from chronosweep.report.build import ReportOptions, make_report

    zero = predictions(rewrite=[0, 0], paraphrase=[[0], [0]], locality=[0, 0], multihop=[0, 0])
    for start in (0, 2):
        write_run(tmp_path / "exp" / f"w{start}", options={"layer_start": start, "layer_width": 2}, preds=zero)
    result = make_report([tmp_path / "exp"], tmp_path / "report", ReportOptions(bootstrap=BOOT, plots=False,
                                                                                progress=False))
    tables = result.tables
    assert tables.best_windows.filter(pl.col("metric") == "reliability").is_empty()
    assert any("no window scored above 0 on reliability (2 windows at 0)" in line for line in tables.no_best_window)
    assert tables.methods["basis"].to_list() == ["no best: 2 trials tie at objective 0"]
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "best window for reliability" not in summary and "no window scored above 0 on reliability" in summary

    # A window that scores is named as before.
    write_run(tmp_path / "exp" / "w1", options={"layer_start": 1, "layer_width": 2},
              preds=predictions(rewrite=[1, 0], paraphrase=[[0], [0]], locality=[0, 0], multihop=[0, 0]))
    result = make_report([tmp_path / "exp"], tmp_path / "report2", ReportOptions(bootstrap=BOOT, plots=False,
                                                                                 progress=False))
    picked = result.tables.best_windows.filter(pl.col("metric") == "reliability").row(0, named=True)
    assert picked["window"] == "1-2" and picked["value"] == 0.5
    assert result.tables.methods["basis"].to_list() == ["best of 3 trials"]


def test_each_protocol_step_is_judged_on_its_own_losses():
    from chronosweep.trial.health import loss_verdict

    # Two edits trained one at a time: the second starts lower than the first ended, and each one's loss falls.
    steps = [{"epoch": 1, "loss": 3.0, "protocol_step": 0}, {"epoch": 2, "loss": 0.5, "protocol_step": 0},
             {"epoch": 3, "loss": 0.2, "protocol_step": 1}, {"epoch": 4, "loss": 0.1, "protocol_step": 1}]
    assert loss_verdict(steps)[1] is None
    # Across steps 0.1 < 3.0 would hide it: step 1's own loss rose.
    steps[3]["loss"] = 0.9
    facts, reason = loss_verdict(steps)
    assert reason is not None and "protocol step 1" in reason and facts["protocol_step"] == 1
