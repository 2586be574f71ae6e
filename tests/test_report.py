"""`chronosweep report` on hand-written run dirs: every number checked against a value computed here by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from chronosweep.core.errors import UserError
from chronosweep.report.build import ReportOptions, make_report
from chronosweep.report.stats import Bootstrap, bootstrap_intervals, pareto_mask

BOOT = Bootstrap(n_resamples=500, seed=7)


# --- builders -------------------------------------------------------------------------------------------------------

def predictions(rewrite=(), paraphrase=(), locality=(), multihop=()) -> list[dict]:
    """rewrite: one score per edit; paraphrase: a list of scores per edit; locality, multihop: one per probe."""
    rows = []
    for i, s in enumerate(rewrite):
        rows.append({"probe": "rewrite", "case_id": f"e{i}", "prompt": f"p{i}", "expected": ["x"], "pre": "a",
                     "post": "b", "correct": bool(s), "pre_correct": False, "score": float(s), "token_acc": 0.5})
    for i, scores in enumerate(paraphrase):
        for s in scores:
            rows.append({"probe": "paraphrase", "case_id": f"e{i}", "prompt": "q", "expected": ["x"],
                         "score": float(s), "correct": bool(s), "token_acc": None})
    for i, s in enumerate(locality):
        rows.append({"probe": "locality", "case_id": f"locality:{i}", "prompt": "l", "expected": ["y"],
                     "score": float(s), "correct": None, "token_acc": None})
    for i, s in enumerate(multihop):
        rows.append({"probe": "multihop", "case_id": f"mh{i}", "prompt": "m", "expected": ["z"], "score": float(s),
                     "correct": bool(s), "token_acc": None})
    rows.append({"probe": "hop", "case_id": "mh0", "prompt": "h", "expected": ["z"], "score": 1.0, "correct": True})
    return rows


def mean(values) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def write_run(run: Path, method: str = "lora", options: dict | None = None, preds: list[dict] | None = None,
              finished: bool = True, error: str | None = None, data: str = "dyknow", model: str = "smollm2-135m",
              extra_config: dict | None = None, **metrics) -> Path:
    """A run dir as chronosweep writes it; quality metrics default to what the predictions say."""
    run.mkdir(parents=True, exist_ok=True)
    config = {"model": model, "seed": 0, "method": method, "threads": None,
              "data": {"name": data, "limit": 20}, method: options or {}, **(extra_config or {})}
    (run / "config.yaml").write_text(json.dumps(config))  # JSON is valid YAML
    if error is not None:
        (run / "error.txt").write_text(f"{error}\n\nTraceback (most recent call last):\n  File x\n{error}\n")
        return run
    if not finished:
        return run
    preds = preds if preds is not None else predictions(rewrite=[1, 1], paraphrase=[[1], [0]], locality=[1, 1],
                                                        multihop=[1, 0])
    (run / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in preds))

    def of(probe):
        return [r["score"] for r in preds if r["probe"] == probe]

    para: dict[str, list[float]] = {}
    for r in preds:
        if r["probe"] == "paraphrase":
            para.setdefault(r["case_id"], []).append(r["score"])
    body = {"status": "ok", "method": method, "model": model, "dataset": data, "n_edits": len(of("rewrite")),
            "reliability": mean(of("rewrite")), "generalization": mean(mean(v) for v in para.values()),
            "locality": mean(of("locality")), "multihop_accuracy": mean(of("multihop")),
            "pre": {"reliability": 0.0}, "edit_seconds": 10.0, "eval_seconds": 5.0, "edit_seconds_per_edit": 5.0,
            "trainable_params": 1000, "total_params": 100000, "trainable_fraction": 0.01, "peak_rss_mb": 1234.0,
            "peak_gpu_mb": None, "device": "cpu", "n_gpus": 0, "threads": 2,
            "history": [{"epoch": 0, "loss": 1.0}], "config": config, "versions": {"torch": "2.13.0"},
            "edited_layers": _layers(options or {})}
    body.update(metrics)
    (run / "metrics.json").write_text(json.dumps(body, indent=2))
    return run


def _layers(options: dict) -> list[int]:
    """The layers a real run reports as edited, from the method options the builder was given."""
    if isinstance(options.get("layers"), list):
        return sorted(options["layers"])
    if isinstance(options.get("layer"), int):
        return [options["layer"]]
    if isinstance(options.get("layer_start"), int):
        return list(range(options["layer_start"], options["layer_start"] + options.get("layer_width", 1)))
    return []


def tune_trial(exp: Path, name: str, params: dict, **run_kwargs) -> Path:
    """A Ray Tune trial folder: params.json, result.json, and the chronosweep run dir at run/."""
    trial = exp / name
    trial.mkdir(parents=True)
    (trial / "params.json").write_text(json.dumps(params))
    (trial / "result.json").write_text(json.dumps({"trial_id": name[-5:], "training_iteration": 3}) + "\n")
    if run_kwargs:
        write_run(trial / "run", **run_kwargs)
    return trial


def report(tmp_path: Path, *experiments: Path, **options) -> tuple[pl.DataFrame, object]:
    options.setdefault("bootstrap", BOOT)
    options.setdefault("plots", False)
    options.setdefault("progress", False)
    result = make_report(list(experiments), tmp_path / "report", ReportOptions(**options))
    return result.trials, result.tables


def hand_percentile_ci(values: list[float], boot: Bootstrap) -> tuple[float, float]:
    """Percentile bootstrap written out longhand: the same draws (seed), a loop of means, sorted, interpolated."""
    n = len(values)
    idx = np.random.default_rng(boot.seed).integers(0, n, size=(boot.n_resamples, n))
    means = sorted(sum(values[j] for j in row) / n for row in idx.tolist())

    def pct(p):
        pos = p / 100 * (len(means) - 1)
        lo, hi = math.floor(pos), math.ceil(pos)
        return means[lo] + (means[hi] - means[lo]) * (pos - lo)

    tail = (1 - boot.confidence) / 2 * 100
    return pct(tail), pct(100 - tail)


def hand_wilson(successes: float, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson's score interval as textbooks write it: (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)."""
    p = successes / n
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - half) / (1 + z * z / n)), min(1.0, (centre + half) / (1 + z * z / n))


# --- statistics -----------------------------------------------------------------------------------------------------

def test_bootstrap_matches_longhand_percentile_bootstrap():
    values = [1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.5]
    iv = bootstrap_intervals({"a": np.array(values)}, BOOT)["a"]
    low, high = hand_percentile_ci(values, BOOT)
    assert iv.mean == pytest.approx(sum(values) / 7)
    assert (iv.low, iv.high) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))
    assert iv.low < iv.mean < iv.high
    assert iv.n == 7


def test_bootstrap_all_edits_agree_gives_zero_width():
    ivs = bootstrap_intervals({"ones": np.ones(9), "third": np.full(9, 0.3), "one": np.array([0.4])}, BOOT)
    assert (ivs["ones"].low, ivs["ones"].high) == (1.0, 1.0)
    assert (ivs["third"].low, ivs["third"].high) == (0.3, 0.3)
    assert (ivs["one"].low, ivs["one"].high, ivs["one"].n) == (0.4, 0.4, 1)


def test_pareto_mask_by_hand():
    # (cost, quality): A(1,.5) B(2,.7) C(2,.6) dominated by B, D(3,.7) dominated by B, E(4,.9), F(nan,1), G=B twice.
    cost = np.array([1, 2, 2, 3, 4, np.nan, 2])
    quality = np.array([0.5, 0.7, 0.6, 0.7, 0.9, 1.0, 0.7])
    assert pareto_mask(cost, quality).tolist() == [True, True, False, False, True, False, True]


# --- loading and per-trial numbers ------------------------------------------------------------------------------------

def test_plain_run_dirs_flattened_means_and_intervals(tmp_path):
    exp = tmp_path / "edits"
    preds = predictions(rewrite=[1, 0, 1, 1], paraphrase=[[1, 0], [0, 0], [1, 1], [1]],
                        locality=[0.5, 1.0, 0.25], multihop=[1, 0])
    write_run(exp / "a" / "deep" / "run1", options={"rank": 8, "layer_start": 3, "layer_width": 2}, preds=preds)
    df, tables = report(tmp_path, exp)
    assert df.height == 1
    row = df.row(0, named=True)
    assert row["status"] == "ok" and row["experiment"] == "edits" and row["trial"] == "a/deep/run1"
    assert row["run_dir"] == str(exp / "a" / "deep" / "run1")
    assert row["lora.rank"] == 8 and row["data.name"] == "dyknow" and row["data.limit"] == 20
    assert row["pre.reliability"] == 0.0 and row["versions.torch"] == "2.13.0" and "history" not in df.columns
    # Requested threads (null) differ from what ran (2): the run's value wins, the request is kept beside it.
    assert row["threads"] == 2 and row["config.threads"] is None
    by_hand = {"reliability": [1, 0, 1, 1], "generalization": [0.5, 0.0, 1.0, 1.0],
               "locality": [0.5, 1.0, 0.25], "multihop_accuracy": [1, 0]}
    for metric, units in by_hand.items():
        assert row[metric] == pytest.approx(sum(units) / len(units))
        # Shares get Wilson intervals, ROUGE locality the bootstrap (the registry's interval field).
        low, high = (hand_percentile_ci([float(u) for u in units], BOOT) if metric == "locality"
                     else hand_wilson(sum(units), len(units)))
        assert row[f"{metric}_ci_low"] == pytest.approx(low, abs=1e-12)
        assert row[f"{metric}_ci_high"] == pytest.approx(high, abs=1e-12)
        assert row[f"{metric}_ci_low"] <= row[metric] <= row[f"{metric}_ci_high"]
        assert row[f"{metric}_n"] == len(units)
    assert row["objective"] == pytest.approx((0.75 + 0.625 + 1.75 / 3) / 3)
    assert (row["window"], row["window_start"], row["window_width"]) == ("3-4", 3, 2)
    # CPU: (edit 10 s + eval 5 s) x 2 threads / 3600.
    assert row["compute_hours"] == pytest.approx(30 / 3600) and row["compute_unit"] == "CPU-hours"
    assert row["objective_per_compute_hour"] == pytest.approx(row["objective"] / (30 / 3600))
    on_disk = pl.read_parquet(tmp_path / "report" / "trials.parquet")
    assert on_disk.row(0, named=True)["reliability_ci_high"] == row["reliability_ci_high"]


def test_same_input_gives_the_same_intervals(tmp_path):
    exp = tmp_path / "edits"
    write_run(exp / "r", preds=predictions(rewrite=[1, 0, 0, 1, 1, 0, 1], locality=[0.1, 0.9, 0.4]))
    first, _ = report(tmp_path, exp)
    second, _ = report(tmp_path, exp)
    cols = [c for c in first.columns if c.endswith(("_ci_low", "_ci_high"))]
    assert first.select(cols).equals(second.select(cols))


def test_gpu_hours_use_gpus_not_threads(tmp_path):
    exp = tmp_path / "edits"
    write_run(exp / "gpu", edit_seconds=1800.0, eval_seconds=1800.0, n_gpus=2, threads=8, device="cuda")
    write_run(exp / "cpu", edit_seconds=900.0, eval_seconds=900.0, n_gpus=0, threads=4)
    df, _ = report(tmp_path, exp)
    rows = {r["trial"]: r for r in df.iter_rows(named=True)}
    assert (rows["gpu"]["compute_hours"], rows["gpu"]["compute_unit"]) == (pytest.approx(2.0), "GPU-hours")
    assert (rows["cpu"]["compute_hours"], rows["cpu"]["compute_unit"]) == (pytest.approx(2.0), "CPU-hours")


# --- tables ---------------------------------------------------------------------------------------------------------

def _window_sweep(exp: Path) -> dict[tuple[int, int], list[float]]:
    """LoRA over four windows (one window twice), plus one MEMIT and one ROME trial, Tune layout."""
    windows = {  # (start, width): multihop scores, reliability scores
        (0, 2): ([1, 0, 0, 0], [1, 1, 0, 1]),
        (2, 2): ([1, 1, 1, 0], [1, 1, 1, 1]),
        (0, 4): ([1, 1, 0, 0], [1, 0, 0, 0]),
        (2, 4): ([0, 0, 0, 0], [1, 1, 1, 0]),
    }
    for k, ((start, width), (mh, rel)) in enumerate(windows.items()):
        opts = {"layer_start": start, "layer_width": width, "rank": 8}
        tune_trial(exp, f"trainable_{k:05d}", {"lora.layer_start": start, "lora.layer_width": width},
                   method="lora", options=opts, preds=predictions(rewrite=rel, multihop=mh, locality=[1.0]))
    # A second trial in window (2, 4) with a lower objective: the cell keeps the better one.
    tune_trial(exp, "trainable_00009", {}, method="lora", options={"layer_start": 2, "layer_width": 4, "rank": 4},
               preds=predictions(rewrite=[0, 0, 0, 0], multihop=[1, 1, 1, 1], locality=[0.0]))
    tune_trial(exp, "trainable_00010", {}, method="memit", options={"layers": [3, 4, 5]},
               preds=predictions(rewrite=[1, 1], multihop=[0, 1], locality=[1.0]))
    tune_trial(exp, "trainable_00011", {}, method="rome", options={"layer": 7},
               preds=predictions(rewrite=[1, 0], multihop=[0, 0], locality=[1.0]))
    return {w: mh for w, (mh, _) in windows.items()}


def test_layer_windows_name_the_best_window_with_its_interval(tmp_path):
    exp = tmp_path / "sweep"
    _window_sweep(exp)
    df, tables = report(tmp_path, exp)
    assert df.filter(pl.col("status") == "ok").height == 7
    lora = tables.windows.filter(pl.col("method") == "lora")
    assert lora.height == 4
    cell = lora.filter((pl.col("window_start") == 2) & (pl.col("window_width") == 4)).row(0, named=True)
    # Two trials share the window; the cell shows the one with the better objective (reliability 0.75, locality 1).
    assert cell["trials"] == 2 and cell["trial"] == "trainable_00003" and cell["multihop_accuracy"] == 0.0
    best = tables.best_windows.filter((pl.col("method") == "lora") & (pl.col("metric") == "multihop_accuracy"))
    best = best.row(0, named=True)
    assert (best["window"], best["window_start"], best["window_width"]) == ("2-3", 2, 2)
    assert best["value"] == 0.75 and best["trial"] == "trainable_00001"
    low, high = hand_wilson(3, 4)
    assert (best["ci_low"], best["ci_high"]) == (pytest.approx(low), pytest.approx(high))
    # 3 of 4 against the runner-up window's 2 of 4 (0-3: [1, 1, 0, 0]) on the same cases: one discordant pair,
    # so not separated, and 4 cases is thin evidence.
    assert best["runner_up"] == "layers 0-3" and best["separated"] is False
    assert best["diff"] == pytest.approx(0.25) and best["test"] == "McNemar" and best["p_value"] == pytest.approx(1.0)
    rel = tables.best_windows.filter((pl.col("method") == "lora") & (pl.col("metric") == "reliability"))
    assert rel.row(0, named=True)["window"] == "2-3" and rel.row(0, named=True)["ci_high"] == 1.0
    memit = tables.windows.filter(pl.col("method") == "memit").row(0, named=True)
    rome = tables.windows.filter(pl.col("method") == "rome").row(0, named=True)
    assert (memit["window"], memit["window_start"], memit["window_width"]) == ("3-5", 3, 3)
    assert (rome["window"], rome["window_start"], rome["window_width"]) == ("7", 7, 1)
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert (f"no best window for multi-hop accuracy: layers 2-3 = 0.750 [{low:.3f}, {high:.3f}] n=4 is **not "
            "separated from layers 0-3**") in summary
    assert "the evidence is thin (fewer than 30 paired cases)" in summary
    assert "best window for multi-hop accuracy: **" not in summary


def test_best_trial_per_method_follows_the_objective(tmp_path):
    exp = tmp_path / "sweep"
    _window_sweep(exp)
    _, tables = report(tmp_path, exp)
    lora = tables.methods.filter(pl.col("method") == "lora").row(0, named=True)
    # Objective = mean(reliability, locality) here (no paraphrases): (2,2) has 1.0 and 1.0.
    assert lora["trial"] == "trainable_00001" and lora["trials"] == 5 and lora["basis"] == "best of 5 trials"
    assert lora["objective"] == pytest.approx(1.0)
    assert lora["multihop_accuracy"] == 0.75 and lora["multihop_accuracy_n"] == 4
    assert tables.methods.filter(pl.col("method") == "rome").row(0, named=True)["basis"] == "only trial"

    _, by_multihop = report(tmp_path, exp, objective="multihop_accuracy")
    lora = by_multihop.methods.filter(pl.col("method") == "lora").row(0, named=True)
    assert lora["trial"] == "trainable_00009" and lora["objective"] == 1.0
    low, high = hand_wilson(0, 4)
    assert (lora["reliability"], lora["reliability_ci_low"]) == (0.0, 0.0)
    assert lora["reliability_ci_high"] == pytest.approx(high)  # 0 of 4 is no proof of 0: [0, 0.49]


def test_pareto_front_and_cost_table(tmp_path):
    exp = tmp_path / "edits"
    # (edit seconds per edit, reliability); objective = reliability + locality(=1) + generalization(=1) means.
    points = {"a": (1.0, [1, 0]), "b": (2.0, [1, 1]), "c": (2.0, [0, 0]), "d": (3.0, [1, 1]), "e": (0.5, [0, 0])}
    for name, (cost, rel) in points.items():
        write_run(exp / name, preds=predictions(rewrite=rel, paraphrase=[[1], [1]], locality=[1.0]),
                  options={"rank": 8}, extra_config={"stop": [".", name]},
                  edit_seconds_per_edit=cost, trainable_params=int(cost * 100))
    df, tables = report(tmp_path, exp)
    front = tables.pareto["trial"].to_list()
    assert front == ["e", "a", "b"]  # cheapest first; c and d are beaten by b
    # The config shown: the method's own options, plus shared settings that differ between trials (a list here).
    assert tables.pareto["config"].to_list()[0] == "rank=8, stop=['.', 'e']"
    assert df.filter(pl.col("pareto"))["trial"].sort().to_list() == ["a", "b", "e"]
    cost = tables.cost.row(0, named=True)
    assert cost["trial"] == "b" and cost["edit_seconds_per_edit"] == 2.0 and cost["trainable_params"] == 200
    assert cost["trials"] == 5 and cost["sweep_compute_hours"] == pytest.approx(5 * 15 * 2 / 3600)
    assert cost["median_cost_per_edit"] == 2.0 and cost["cost_unit"] == "wall s (no CPU time recorded)"


def test_half_finished_experiment_reports_what_it_has_and_lists_failures(tmp_path):
    exp = tmp_path / "live"
    tune_trial(exp, "t_ok1", {}, preds=predictions(rewrite=[1, 1, 1]))
    tune_trial(exp, "t_ok2", {}, preds=predictions(rewrite=[1, 0, 0]))
    tune_trial(exp, "t_running", {"lora.rank": 4}, finished=False)
    tune_trial(exp, "t_failed", {}, error="ValueError: layer window 28..33 runs past the last layer")
    # Tune has not started it: no run dir yet, only the sampled parameters in the sweep's shape.
    pending = tune_trial(exp, "t_pending", {"params": {"lora.rank": 16, "memit.layers": "[3, 4]"}})
    died = tune_trial(exp, "t_died", {"lora": {"rank": 2}})
    (died / "error.txt").write_text("Failure # 1 (occurred at 2026-11-25)\nTraceback (most recent call last):\n"
                                    "  File 'x'\nray.exceptions.OutOfMemoryError: worker killed\n")
    df, tables = report(tmp_path, exp)
    status = dict(df.select("trial", "status").iter_rows())
    assert status == {"t_ok1": "ok", "t_ok2": "ok", "t_running": "running", "t_failed": "failed",
                      "t_pending": "running", "t_died": "failed"}
    pending_row = df.filter(pl.col("trial") == "t_pending").row(0, named=True)
    assert pending_row["lora.rank"] == 16 and pending_row["memit.layers"] == [3, 4]  # from Tune's params.json
    assert df.filter(pl.col("trial") == "t_died")["lora.rank"].item() == 2
    assert df.filter(pl.col("trial") == "t_ok1")["tune.iteration"].item() == 3
    errors = dict(tables.failures.select("trial", "error").iter_rows())
    assert errors == {"t_failed": "ValueError: layer window 28..33 runs past the last layer",
                      "t_died": "ray.exceptions.OutOfMemoryError: worker killed"}
    assert sorted(tables.running["trial"].to_list()) == ["t_pending", "t_running"]
    lora = tables.methods.row(0, named=True)
    assert lora["trials"] == 2 and lora["trial"] == "t_ok1" and lora["reliability"] == 1.0
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "Failed trials (2)" in summary and "runs past the last layer" in summary
    assert "2 ok, 2 failed, 2 running, 0 invalid" in summary
    assert str(pending / "run") in summary


def test_error_summaries_keep_the_message():
    from chronosweep.report.load import error_summary

    config_error = ("ConfigError: invalid config (2 problems):\n  - lora.rank: must be >= 1, got 0\n"
                    "  - lora.lr: must be > 0, got 0.0\n\nTraceback (most recent call last):\n  File 'x'\n")
    assert error_summary(config_error) == ("ConfigError: invalid config (2 problems): - lora.rank: must be >= 1, "
                                           "got 0 - lora.lr: must be > 0, got 0.0")
    ray = "Failure # 1 (occurred at x)\nTraceback (most recent call last):\n  File 'y'\nKeyError: 'rank'\n"
    assert error_summary(ray) == "KeyError: 'rank'"
    assert error_summary("\n \n") == "(empty error.txt)"


def test_nothing_finished_yet_still_writes_a_report(tmp_path):
    exp = tmp_path / "starting"
    write_run(exp / "a", finished=False)
    write_run(exp / "b", error="RuntimeError: no GPU")
    df, tables = report(tmp_path, exp, plots=True)
    assert sorted(df["status"].to_list()) == ["failed", "running"]
    assert tables.methods.is_empty() and tables.pareto.is_empty() and tables.windows.is_empty()
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "0 ok, 1 failed, 1 running, 0 invalid" in summary and "RuntimeError: no GPU" in summary
    assert list((tmp_path / "report" / "plots").glob("*.png")) == []


def test_bad_files_are_named_and_kept_out_of_the_numbers(tmp_path):
    exp = tmp_path / "edits"
    write_run(exp / "good", preds=predictions(rewrite=[1, 0]))
    bad = write_run(exp / "bad_metrics", reliability="high")
    broken = write_run(exp / "bad_predictions", preds=predictions(rewrite=[1, 1, 1]))
    with open(broken / "predictions.jsonl", "a") as fh:
        fh.write('{"probe": "rewrite", "case_id": "e9", "score": \n')
    df, tables = report(tmp_path, exp)
    assert dict(df.select("trial", "status").iter_rows())["bad_metrics"] == "invalid"
    assert any(str(bad / "metrics.json") in w and "'reliability'" in w for w in tables.warnings)
    line = len(predictions(rewrite=[1, 1, 1])) + 1
    assert any(f"{broken / 'predictions.jsonl'} line {line}: not valid JSON" in w for w in tables.warnings)
    rows = {r["trial"]: r for r in df.iter_rows(named=True)}
    assert rows["bad_predictions"]["status"] == "ok" and rows["bad_predictions"]["reliability_ci_low"] is None
    assert rows["good"]["reliability_ci_low"] is not None
    assert tables.methods.row(0, named=True)["trials"] == 2


def test_unknown_columns_fail_before_any_work(tmp_path):
    exp = tmp_path / "edits"
    write_run(exp / "r")
    with pytest.raises(UserError, match="--by nosuch: no such column"):
        report(tmp_path, exp, by=["nosuch"])
    with pytest.raises(UserError, match="--objective: 'data.name' is not a numeric column"):
        report(tmp_path, exp, objective="reliability+data.name")
    with pytest.raises(UserError, match="no such experiment folder"):
        report(tmp_path, tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no trials under"):
        report(tmp_path, tmp_path / "empty")


# --- command line ---------------------------------------------------------------------------------------------------

def run_cli(argv: list[str]) -> int:
    from chronosweep.cli import main

    return main(argv)


def test_cli_groups_by_column_and_writes_every_format(tmp_path, capsys):
    one, two = tmp_path / "sweep_a", tmp_path / "sweep_b"
    write_run(one / "r1", options={"layer_start": 1, "layer_width": 2}, preds=predictions(rewrite=[1, 1]))
    write_run(one / "r2", options={"layer_start": 2, "layer_width": 2}, preds=predictions(rewrite=[0, 1]))
    write_run(two / "r1", data="mquake", options={"layer_start": 1, "layer_width": 2},
              preds=predictions(rewrite=[0, 0], multihop=[1, 1]))
    write_run(two / "r2", method="rome", data="mquake", options={"layer": 3}, preds=predictions(rewrite=[1, 0]))
    write_run(two / "r3", error="RuntimeError: out of memory")
    out = tmp_path / "out"
    assert run_cli(["report", str(one), "--out", str(out), "--by", "nosuch"]) == 2
    assert "--by nosuch: no such column" in capsys.readouterr().err
    assert run_cli(["report", str(one), str(two), "--out", str(out), "--by", "data.name", "--format", "csv",
                    "json", "--bootstrap", "200"]) == 0
    printed = capsys.readouterr().out
    assert "5 trials: 4 ok, 1 failed, 0 running, 0 invalid" in printed
    methods = pl.read_csv(out / "methods.csv")
    assert methods.select("data.name", "method").rows() == [("dyknow", "lora"), ("mquake", "lora"),
                                                            ("mquake", "rome")]
    assert methods.filter(pl.col("data.name") == "dyknow")["trials"].item() == 2
    assert methods.filter(pl.col("data.name") == "mquake")["reliability"].to_list() == [0.0, 0.5]
    assert json.loads((out / "methods.json").read_text())[0]["trial"] == "r1"
    trials = pl.read_parquet(out / "trials.parquet")
    assert sorted(trials["experiment"].unique().to_list()) == ["sweep_a", "sweep_b"]
    assert pl.read_csv(out / "failures.csv")["error"].to_list() == ["RuntimeError: out of memory"]
    # One front per group; at equal cost the better objective wins: dyknow's r1 (1.0 over 0.5), mquake's ROME
    # trial (0.5 over 0.0).
    pareto = pl.read_csv(out / "pareto.csv")
    assert pareto.select("data.name", "experiment", "trial", "method").rows() == [
        ("dyknow", "sweep_a", "r1", "lora"), ("mquake", "sweep_b", "r2", "rome")]
    pngs = sorted(p.name for p in (out / "plots").glob("*.png"))
    # No multi-hop heatmap where no trial has multi-hop cases (dyknow here, and the ROME trial).
    assert pngs == ["dyknow-cost-quality.png", "dyknow-lora-windows.png", "dyknow-methods.png",
                    "mquake-cost-quality.png", "mquake-lora-windows.png", "mquake-methods.png",
                    "mquake-rome-windows.png"]
    for png in (out / "plots").glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    html = (out / "summary.html").read_text()
    assert "<img src='plots/dyknow-methods.png'" in html and "<strong>not separated from layers 2-3</strong>" in html
    md = (out / "summary.md").read_text()
    assert "![method bars](plots/mquake-methods.png)" in md


def test_report_imports_without_ray_and_registers_cheaply():
    import subprocess
    import sys

    code = ("import argparse, sys, chronosweep.report.command as c; c.register(argparse.ArgumentParser().add_subparsers()); "
            "heavy = [m for m in ('polars', 'numpy', 'matplotlib', 'ray') if m in sys.modules]; "
            "assert not heavy, heavy; "
            "import chronosweep.report.build, chronosweep.report.plots; assert 'ray' not in sys.modules, 'report pulled in ray'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_report_ranks_by_the_sweeps_own_objective_when_it_can(tmp_path):
    from chronosweep.report.command import sweep_objective

    def sweep(name, objective):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "sweep.yaml").write_text(yaml.safe_dump({"objective": objective}))
        return folder

    a = sweep("a", {"weights": {"multihop_accuracy": 1.0, "hop_accuracy": 1.0}})
    b = sweep("b", {"weights": {"multihop_accuracy": 1.0, "hop_accuracy": 1.0}, "mode": "max"})
    both, why = sweep_objective([a, b])
    assert why == "" and both.terms() == {"multihop_accuracy": 1.0, "hop_accuracy": 1.0} and both.mode == "max"
    assert sweep_objective([sweep("c", {"metric": "reliability"})])[0].terms() == {"reliability": 1.0}
    # Different objectives cannot rank one table: the report falls back to its default and says why.
    assert sweep_objective([a, sweep("d", {"metric": "reliability"})])[0] is None
    assert sweep_objective([a, sweep("b2", {"weights": {"multihop_accuracy": 2.0, "hop_accuracy": 2.0}})])[0] is None
    # One objective type serves sweep and report: weighted sums with costs and minimised objectives rank too.
    costed = sweep_objective([sweep("e", {"weights": {"reliability": 1.0, "edit_seconds": -0.1}})])[0]
    assert costed.value({"reliability": 0.5, "edit_seconds": 2.0}) == pytest.approx(0.3)
    assert sweep_objective([sweep("f", {"metric": "edit_seconds", "mode": "min"})])[0].mode == "min"
    assert sweep_objective([tmp_path / "not-a-sweep"])[0] is None


# --- intervals that hold at small n, winners only with a paired comparison ------------------------------------------

def test_wilson_against_textbook_values():
    from chronosweep.report.stats import clopper_pearson, mcnemar_p, wilson

    assert wilson(1.0, 3) == (pytest.approx(0.4385, abs=5e-4), 1.0)  # 3 of 3: not [1, 1]
    assert wilson(0.5, 10) == (pytest.approx(0.2366, abs=5e-4), pytest.approx(0.7634, abs=5e-4))
    assert wilson(0.0, 20)[1] == pytest.approx(0.1611, abs=5e-4)
    assert clopper_pearson(3, 3) == (pytest.approx(0.2924, abs=5e-4), 1.0)
    assert clopper_pearson(5, 10) == (pytest.approx(0.1871, abs=5e-4), pytest.approx(0.8129, abs=5e-4))
    assert mcnemar_p(10, 0) == pytest.approx(2 * 0.5 ** 10) and mcnemar_p(3, 3) == 1.0


def test_paired_comparison_mcnemar_and_bootstrap():
    from chronosweep.report.stats import paired_comparison

    ids = [f"c{i}" for i in range(120)]
    # A gets 12 cases B misses and misses none B gets: 12 discordant pairs all one way.
    a = {u: float(i < 60) for i, u in enumerate(ids)}
    b = {u: float(i < 48) for i, u in enumerate(ids)}
    c = paired_comparison(a, b, BOOT)
    assert c.method == "McNemar" and c.discordant == (12, 0) and c.separated and not c.thin
    assert c.diff == pytest.approx(0.1) and c.p_value == pytest.approx(2 * 0.5 ** 12)
    # Same shares, but the discordant pairs split 7:5: not separated.
    b2 = {u: float(i < 48 or 60 <= i < 65) for i, u in enumerate(ids)}
    b2.update({ids[i]: 0.0 for i in range(48, 60)})
    b2.update({ids[i]: 1.0 for i in range(48, 53)})
    c2 = paired_comparison(a, b2, BOOT)
    assert c2.discordant == (7, 5) and not c2.separated and c2.low < 0 < c2.high
    # Graded units: the bootstrap of the paired differences, over the shared ids only.
    g = paired_comparison({"x": 0.9, "y": 0.8, "z": 0.7, "only_a": 0.0}, {"x": 0.5, "y": 0.5, "z": 0.5}, BOOT)
    assert g.method == "paired bootstrap" and g.n == 3 and g.thin and g.diff == pytest.approx(0.3) and g.separated


def test_a_window_is_named_best_only_when_separated_and_thin_evidence_is_said(tmp_path):
    exp = tmp_path / "sweep"
    n = 60
    strong = [1] * 40 + [0] * 20  # 40 of 60
    weak = [1] * 20 + [0] * 40    # 20 of 60, the same cases plus none: 20 discordant pairs one way
    level = [1] * 19 + [0] + [1] * 1 + [0] * 39  # 20 of 60 too, near-identical to weak
    for k, (start, mh) in enumerate([(0, weak), (2, strong), (4, level)]):
        tune_trial(exp, f"trainable_{k:05d}", {}, method="lora", options={"layer_start": start, "layer_width": 2},
                   preds=predictions(rewrite=[1, 1, 1], multihop=mh, locality=[1.0]))
    _, tables = report(tmp_path, exp, objective="multihop_accuracy")
    best = tables.best_windows.filter(pl.col("metric") == "multihop_accuracy").row(0, named=True)
    assert best["window"] == "2-3" and best["separated"] is True and best["test"] == "McNemar"
    assert best["runner_up"] in ("layers 0-1", "layers 4-5") and best["paired_n"] == n
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "best window for multi-hop accuracy: **layers 2-3** = 0.667" in summary
    # Reliability is 1 in every window: a tie, said as one; three edits is thin evidence.
    rel = tables.best_windows.filter(pl.col("metric") == "reliability").row(0, named=True)
    assert rel["separated"] is False and rel["ties"] == 2
    assert "no best window for reliability" in summary and "the evidence is thin (fewer than 30 paired edits)" in summary
    # The best configuration of the method carries the same comparison, on the objective.
    lora = tables.best.row(0, named=True)
    assert lora["trial"] == "trainable_00001" and lora["verdict"].startswith("separated from")


def test_cost_is_cpu_seconds_and_different_concurrency_is_flagged(tmp_path):
    exp = tmp_path / "edits"
    # Alone, a trial's wall time looks cheap; its CPU seconds say what it used.
    write_run(exp / "alone", preds=predictions(rewrite=[1, 1]), edit_seconds=10.6, edit_seconds_per_edit=5.3,
              edit_cpu_seconds=30.0, eval_cpu_seconds=4.0, edit_cpu_seconds_per_edit=15.0, concurrent_trials=0)
    write_run(exp / "shared", preds=predictions(rewrite=[1, 1]), edit_seconds=30.0, edit_seconds_per_edit=15.0,
              edit_cpu_seconds=29.0, eval_cpu_seconds=4.0, edit_cpu_seconds_per_edit=14.5, concurrent_trials=1)
    df, tables = report(tmp_path, exp)
    rows = {r["trial"]: r for r in df.iter_rows(named=True)}
    assert rows["alone"]["cost_per_edit"] == 15.0 and rows["alone"]["cost_unit"] == "CPU s"
    assert rows["alone"]["compute_hours"] == pytest.approx(34.0 / 3600)
    # Same objective: the front keeps the one with fewer CPU seconds, not the one that ran alone.
    assert tables.pareto["trial"].to_list() == ["shared"]
    assert any("ran beside 0, 1 other trials" in note for note in tables.cost_notes)
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "compare cost per edit (CPU or GPU seconds), not wall seconds" in summary


def test_trials_from_different_hosts_are_flagged_in_the_cost_section(tmp_path):
    exp = tmp_path / "edits"
    amx = {"cpu": "Intel(R) Xeon(R) Processor", "cpu_features": ["avx2", "fma", "avx512f", "amx_bf16"],
           "logical_cpus": 2, "machine": "x86_64", "gpu": None}
    plain = {**amx, "cpu_features": ["avx2", "fma"]}
    write_run(exp / "a", preds=predictions(rewrite=[1, 1]), edit_cpu_seconds=30.0, host=amx)
    write_run(exp / "b", preds=predictions(rewrite=[1, 1]), edit_cpu_seconds=80.0, host=plain)
    _, tables = report(tmp_path, exp)
    notes = [n for n in tables.cost_notes if "different hosts" in n]
    assert len(notes) == 1
    assert "Intel(R) Xeon(R) Processor (AMX), 2 CPUs: 1 trial(s)" in notes[0]
    assert "Intel(R) Xeon(R) Processor (AVX2), 2 CPUs: 1 trial(s)" in notes[0]
    assert "ran on 2 different hosts" in (tmp_path / "report" / "summary.md").read_text()
    # One host: nothing to say.
    write_run(exp / "b", preds=predictions(rewrite=[1, 1]), edit_cpu_seconds=80.0, host=amx)
    _, tables = report(tmp_path, exp)
    assert not [n for n in tables.cost_notes if "different hosts" in n]
