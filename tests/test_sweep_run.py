"""Sweeps on the tiny random model with a real local Ray: Optuna with a conditional space, a grid over layer
windows with a failing trial, resume after the driver is killed, and name clashes.

The tiny model's metrics mean nothing; these tests check structure, statuses, counts and resume behaviour.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import psutil
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


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the driver and everything it started (Ray puts some workers in their own process groups)."""
    try:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    for p in tree:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait(timeout=30)
    psutil.wait_procs(tree, timeout=30)


@pytest.mark.ray
def test_resume_after_the_driver_is_killed(tiny_model_dir, data_root, tmp_path, cache):
    path = write(tmp_path / "resume.yaml", {
        "base": base(tiny_model_dir, data_root,
                     lora={"epochs": 3, "batch_size": 4, "rank": 2, "layer_start": 0, "layer_width": 2}),
        "space": {"lora.window": {"type": "window", "widths": [2]}},
        "search": "grid", "max_concurrent_trials": 1,
        "objective": {"metric": "locality"},
    })
    storage = tmp_path / "sweeps"
    experiment = storage / "resume"
    cmd = [sys.executable, "-m", "chronosweep.cli", "sweep", str(path), "--name", "resume", "--storage", str(storage),
           "--num-cpus", "1"]
    log = open(tmp_path / "driver.log", "w")
    driver = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                              env=dict(os.environ))
    try:
        deadline = time.monotonic() + 180
        while not glob.glob(str(experiment / "trial_*" / "run" / "metrics.json")):
            assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no trial finished in time"
            time.sleep(0.2)
    finally:
        _kill_tree(driver)
        log.close()
    done = {p: p.read_text() for p in experiment.glob("trial_*/run/metrics.json")}
    stamps = {p: p.stat().st_mtime_ns for p in done}
    assert 1 <= len(done) < 3

    summary = run_sweep(load_sweep(path), SweepOptions(name="resume", storage=str(storage), resume=True, num_cpus=2))
    assert summary.frame.height == 3
    assert summary.counts == {"ok": 3}
    assert len(list(experiment.glob("trial_*"))) == 3
    for p, text in done.items():
        # Completed before the kill: not edited again (same file, same start time).
        assert p.read_text() == text and p.stat().st_mtime_ns == stamps[p]
    windows = sorted(zip(summary.frame["lora.layer_start"], summary.frame["lora.layer_width"]))
    assert windows == [(0, 2), (1, 2), (2, 2)]
    # The README's re-runnable form: a finished sweep is only re-tabulated, no trial runs again.
    finished = {p: p.stat().st_mtime_ns for p in experiment.glob("trial_*/run/metrics.json")}
    again = run_sweep(load_sweep(path), SweepOptions(name="resume", storage=str(storage), allow_resume=True, num_cpus=1))
    assert again.counts == {"ok": 3}
    assert {p: p.stat().st_mtime_ns for p in experiment.glob("trial_*/run/metrics.json")} == finished
    assert signal.SIGKILL  # the driver above died by SIGKILL, not a graceful Ctrl-C


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
