"""Sweeps on the tiny random model with a real local Ray: Optuna with a conditional space, a grid over layer
windows with a failing trial, and name clashes (resume after a killed driver: tests/test_reliability.py).

The tiny model's metrics mean nothing; these tests check structure, statuses, counts and resume behaviour.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import yaml

from chronosweep.core.errors import UserError
from chronosweep.sweep.runner import SweepExists, SweepOptions, run_sweep
from chronosweep.sweep.spec import load_sweep

ROOT = Path(__file__).resolve().parents[1]


def base(model: Path, data_root: Path, **sections) -> dict:
    return {
        "model": str(model),
        "data": {"root": str(data_root), "limit": 2, "locality_limit": 2},
        "eval": {"max_new_tokens": 3},
        "lora": {"epochs": 2, "batch_size": 4, "rank": 2, "layer_start": 0, "layer_width": 2},
        **sections,
    }


def write(path: Path, sweep: dict) -> Path:
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    # Trials inherit the driver's environment (embedded Ray): keep their caches out of the user's.
    monkeypatch.setenv("CHRONOSWEEP_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def run_dirs(experiment: Path) -> dict[str, Path]:
    return {p.parent.parent.name: p.parent for p in experiment.glob("trial_*/run/config.yaml")}


@pytest.mark.ray
def test_optuna_sweep_with_conditional_space_and_early_stopping(tiny_model_dir, data_root, tmp_path, cache):
    path = write(tmp_path / "optuna.yaml", {
        "base": base(tiny_model_dir, data_root, ptuning={"epochs": 2, "batch_size": 4, "encoder_hidden_size": 8}),
        "space": {
            "method": ["lora", "ptuning"],
            "lora.rank": {"type": "int", "low": 2, "high": 8, "log": True},
            "lora.window": {"type": "window", "widths": [1, 2]},
            "ptuning.num_virtual_tokens": {"type": "int", "low": 1, "high": 4},
        },
        "search": "optuna", "sampler": "random", "seed": 3, "num_samples": 4, "max_concurrent_trials": 2,
        "objective": {"weights": {"reliability": 1.0, "locality": 1.0}},
        "early_stopping": {"grace_period": 1, "reduction_factor": 2},
    })
    summary = run_sweep(load_sweep(path), SweepOptions(name="opt", storage=str(tmp_path / "sweeps"), num_cpus=2))
    experiment = tmp_path / "sweeps" / "opt"
    frame = summary.frame
    assert frame.height == 4
    assert set(frame["status"]) <= {"ok", "stopped"} and summary.counts.get("ok", 0) >= 1
    assert set(frame["method"]) == {"lora", "ptuning"}
    for row in frame.iter_rows(named=True):
        if row["method"] == "lora":
            assert row["lora.layer_start"] + row["lora.layer_width"] <= 4  # the tiny model has 4 layers
            assert 2 <= row["lora.rank"] <= 8 and row["ptuning.num_virtual_tokens"] is None
        else:
            assert row["lora.rank"] is None and 1 <= row["ptuning.num_virtual_tokens"] <= 4
        if row["status"] != "ok":
            continue
        # The run dir is exactly what `chronosweep edit` writes, with the sampled values in its config.
        run = experiment / row["trial"] / "run"
        metrics = json.loads((run / "metrics.json").read_text())
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert metrics["method"] == config["method"] == row["method"]
        assert config["threads"] == 1  # one CPU per trial
        if row["method"] == "lora":
            assert config["lora"]["rank"] == row["lora.rank"]
            assert (run / "adapter").is_dir()
        else:
            assert config["ptuning"]["num_virtual_tokens"] == row["ptuning.num_virtual_tokens"]
        assert row["objective"] == pytest.approx(metrics["reliability"] + metrics["locality"])
        # One report per epoch (ASHA's rungs), then the final one.
        progress = pl.read_csv(experiment / row["trial"] / "progress.csv")
        assert progress["training_iteration"].to_list() == [1, 2, 3]
        assert progress["epoch"].to_list() == [1, 2, 2]
    assert pl.read_csv(experiment / "trials.csv").height == 4
    assert yaml.safe_load((experiment / "best.yaml").read_text())["method"] == \
        frame.filter(pl.col("trial") == summary.best_trial)["method"][0]
    assert yaml.safe_load((experiment / "sweep.yaml").read_text())["num_samples"] == 4


@pytest.mark.ray
def test_grid_over_layer_windows_goes_on_after_a_failing_trial(tiny_model_dir, data_root, tmp_path, cache, capsys):
    path = write(tmp_path / "grid.yaml", {
        "base": base(tiny_model_dir, data_root),
        "space": {
            "lora.window": {"type": "window", "widths": [1, 3]},
            # Asking for CUDA on a machine without it fails inside the trial, after validation: a bad combination.
            "device": {"type": "categorical", "values": ["cpu", "cuda"], "when": {"lora.layer_start": 3}},
        },
        "search": "grid", "max_concurrent_trials": 2,
        "objective": {"metric": "locality"},
    })
    spec = load_sweep(path)
    assert spec.num_trials == 7
    summary = run_sweep(spec, SweepOptions(name="grid", storage=str(tmp_path / "sweeps"), num_cpus=2))
    frame = summary.frame
    experiment = tmp_path / "sweeps" / "grid"
    assert frame.height == 7
    failed = frame.filter(pl.col("status") == "failed")
    ok = frame.filter(pl.col("status") == "ok")
    assert failed.height == 1 and ok.height == 6
    assert failed["device"][0] == "cuda" and "CUDA" in failed["error"][0]
    assert (experiment / failed["trial"][0] / "run" / "error.txt").exists()
    windows = sorted(zip(ok["lora.layer_start"], ok["lora.layer_width"]))
    assert windows == [(0, 1), (0, 3), (1, 1), (1, 3), (2, 1), (3, 1)]
    for trial in ok["trial"]:
        assert (experiment / trial / "run" / "metrics.json").exists()
    out = capsys.readouterr().out
    assert "7 trials: 1 failed, 6 ok" in out and "best (max objective)" in out


def test_a_sweep_name_is_never_reused_without_resume(tiny_model_dir, data_root, tmp_path):
    path = write(tmp_path / "s.yaml", {"base": base(tiny_model_dir, data_root),
                                       "space": {"lora.rank": [2, 4]}, "search": "grid"})
    spec = load_sweep(path)
    (tmp_path / "sweeps" / "taken").mkdir(parents=True)
    with pytest.raises(SweepExists, match="--resume"):
        run_sweep(spec, SweepOptions(name="taken", storage=str(tmp_path / "sweeps")))
    with pytest.raises(UserError, match="no sweep at"):
        run_sweep(spec, SweepOptions(name="absent", storage=str(tmp_path / "sweeps"), resume=True))
    with pytest.raises(UserError, match="--name"):
        run_sweep(spec, SweepOptions(name="../escape", storage=str(tmp_path / "sweeps")))
    (tmp_path / "sweeps" / "taken" / "sweep.yaml").write_text(yaml.safe_dump({**spec.raw, "space": {"lora.rank": [8]}}))
    with pytest.raises(UserError, match="changed: space.lora.rank"):
        run_sweep(spec, SweepOptions(name="taken", storage=str(tmp_path / "sweeps"), resume=True))
    # --resume-if-exists resumes an existing sweep under the same checks.
    with pytest.raises(UserError, match="changed: space.lora.rank"):
        run_sweep(spec, SweepOptions(name="taken", storage=str(tmp_path / "sweeps"), allow_resume=True))


# Resume after a killed driver: tests/test_reliability.py (the fault matrix of docs/reliability.md).


@pytest.mark.ray
def test_trial_with_several_workers_trains_through_ray_train(tiny_model_dir, data_root, tmp_path, cache):
    # The multi-GPU path (a TorchTrainer inside the Tune trial, DeepSpeed across its ranks) run on CPU workers.
    path = write(tmp_path / "workers.yaml", {
        "base": base(tiny_model_dir, data_root),
        "space": {"lora.rank": [2]},
        "search": "grid",
        "resources": {"cpus": 2, "workers": 2},
        "objective": {"metric": "locality"},
    })
    summary = run_sweep(load_sweep(path), SweepOptions(name="workers", storage=str(tmp_path / "sweeps"), num_cpus=3))
    assert summary.counts == {"ok": 1}
    trial = tmp_path / "sweeps" / "workers" / summary.frame["trial"][0]
    config = yaml.safe_load((trial / "run" / "config.yaml").read_text())
    assert config["engine"] == "deepspeed" and config["threads"] == 1
    assert (trial / "run" / "metrics.json").exists() and (trial / "train").is_dir()
    # Rank 0's per-epoch reports reach Tune through Ray Train, then the final one.
    progress = pl.read_csv(trial / "progress.csv")
    assert progress["epoch"].to_list() == [1, 2, 2]
