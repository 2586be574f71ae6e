"""The cluster path end to end: a local Ray head, `ray job submit --working-dir .`, a two-trial sweep joining it
with --address auto, results read back from the storage folder.

The head is started by this test with `ray start --head --block` in a private temp dir and its own ports, and
stopped by ending that process tree by pid. `ray stop` is not used: it ends every Ray process on the machine,
including other people's sweeps and test runs.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import psutil
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Head:
    address: str
    env: dict
    log: Path


def _dashboard_answers(url: str) -> bool:
    try:
        urllib.request.urlopen(f"{url}/api/version", timeout=2)
        return True
    except urllib.error.HTTPError:
        return True  # 401 under token auth: the server is up
    except OSError:
        return False


def _end_tree(proc: subprocess.Popen) -> None:
    try:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in tree:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(tree, timeout=20)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=10)


@pytest.fixture
def ray_head(tmp_path):
    # Short: Ray's unix socket paths under the temp dir must stay below 108 characters.
    temp = Path(tempfile.mkdtemp(prefix="csray-", dir="/tmp"))
    dashboard = free_port()
    # Ray 2.60 starts a head with token auth on and does not make the token: the test brings its own, so it needs
    # nothing in ~/.ray.
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", RAY_AUTH_MODE="token",
               RAY_AUTH_TOKEN=secrets.token_hex(32), CHRONOSWEEP_CACHE=str(tmp_path / "cache"))
    env.pop("RAY_ADDRESS", None)
    ports = {flag: free_port() for flag in (
        "--port", "--ray-client-server-port", "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
        "--runtime-env-agent-port", "--metrics-export-port", "--node-manager-port", "--object-manager-port")}
    cmd = [str(BIN / "ray"), "start", "--head", "--block", "--num-cpus", "2", "--temp-dir", str(temp),
           "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
           *[str(x) for flag, port in ports.items() for x in (flag, port)]]
    log = tmp_path / "head.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{dashboard}"
        deadline = time.monotonic() + 120
        while not _dashboard_answers(url):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the Ray head did not come up"
            time.sleep(1)
        yield Head(address=url, env=env, log=log)
    finally:
        _end_tree(proc)
        shutil.rmtree(temp, ignore_errors=True)


def ray_cli(head: Head, *args: str, check: bool = True) -> str:
    run = subprocess.run([str(BIN / "ray"), *args], env=head.env, cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    if check:
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    return run.stdout + run.stderr


@pytest.mark.ray
def test_sweep_submitted_as_a_ray_job(ray_head, tiny_model_dir, data_root, tmp_path):
    sweep = tmp_path / "job.yaml"
    sweep.write_text(yaml.safe_dump({
        "base": {
            # Absolute paths: the job runs in a copy of the working dir that Ray unpacks elsewhere.
            "model": str(tiny_model_dir),
            "data": {"root": str(data_root), "limit": 2, "locality_limit": 2},
            "eval": {"max_new_tokens": 3},
            "lora": {"epochs": 1, "batch_size": 4, "layer_start": 0, "layer_width": 2},
        },
        "space": {"lora.rank": [2, 4]},
        "search": "grid",
        "objective": {"metric": "locality"},
    }))
    storage = tmp_path / "sweeps"
    job = "chronosweep-test-job"
    ray_cli(ray_head, "job", "submit", "--address", ray_head.address, "--working-dir", ".", "--submission-id", job,
            "--runtime-env", "cluster/runtime_env.yaml", "--no-wait", "--",
            "python", "-m", "chronosweep.cli", "sweep", str(sweep), "--name", "via-job",
            "--storage", str(storage), "--address", "auto")
    deadline = time.monotonic() + 300
    status = ""
    while time.monotonic() < deadline:
        # "Job '...' succeeded" (or failed, stopped) once it is over; pending/running before.
        status = ray_cli(ray_head, "job", "status", job, "--address", ray_head.address).lower()
        if any(f"' {word}" in status for word in ("succeeded", "failed", "stopped")):
            break
        time.sleep(3)
    logs = ray_cli(ray_head, "job", "logs", job, "--address", ray_head.address, check=False)
    assert f"job '{job}' succeeded" in status, status[-1000:] + logs[-4000:]
    assert "2 trials: 2 ok" in logs

    experiment = storage / "via-job"
    trials = pl.read_csv(experiment / "trials.csv")
    assert trials.height == 2 and set(trials["status"]) == {"ok"}
    assert sorted(trials["lora.rank"]) == [2, 4]
    for trial in trials["trial"]:
        run = experiment / trial / "run"
        assert (run / "metrics.json").exists() and (run / "predictions.jsonl").exists()
        assert yaml.safe_load((run / "config.yaml").read_text())["model"] == str(tiny_model_dir)
    assert (experiment / "best.yaml").exists()
