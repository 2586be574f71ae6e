"""The cluster configs turn on Ray's token authentication, and a head started the way cluster/aws-gpu.yaml starts
one refuses anonymous jobs and runs authenticated ones.

The head runs the config's own commands, as written, in a private HOME (so the token it makes stays in this
test): ``head_setup_commands`` makes the token, ``head_start_ray_commands`` starts Ray with it, with only what a
single machine cannot have changed (no autoscaler config; free ports instead of 6379; a private temp dir;
--block so the test owns the process). The client side follows docs/cluster.md: fetch the head's token file
(here a copy instead of `ray rsync-down`), point RAY_AUTH_TOKEN_PATH at it, submit.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.test_sweep_job import _dashboard_answers, _end_tree, free_port

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
BIN = Path(sys.executable).parent


def launcher_config() -> dict:
    return yaml.safe_load((CLUSTER / "aws-gpu.yaml").read_text())


def test_both_cluster_configs_require_a_token_and_keep_the_job_port_private():
    config = launcher_config()
    setup = "\n".join(config["head_setup_commands"])
    assert "ray get-auth-token --generate" in setup and "chmod 600 ~/.ray/auth_token" in setup
    assert config["cluster_synced_files"] == ["~/.ray/auth_token"]  # workers get the head's token
    for command in (config["head_start_ray_commands"][-1], config["worker_start_ray_commands"][-1]):
        assert "export RAY_AUTH_MODE=token" in command
    head = config["head_start_ray_commands"][-1]
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in head

    job = yaml.safe_load((CLUSTER / "rayjob.yaml").read_text())["spec"]["rayClusterSpec"]
    assert job["authOptions"] == {"mode": "token"}
    assert job["headGroupSpec"]["serviceType"] == "ClusterIP"


def _head_command(home: Path, temp: Path, dashboard: int) -> str:
    """aws-gpu.yaml's head start command with a single machine's substitutions, and nothing else changed."""
    command = launcher_config()["head_start_ray_commands"][-1]
    command = re.sub(r"\s--autoscaling-config=\S+", "", command)
    ports = {flag: free_port() for flag in (
        "--ray-client-server-port", "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
        "--runtime-env-agent-port", "--metrics-export-port", "--node-manager-port", "--object-manager-port")}
    command = command.replace("--port=6379", f"--port={free_port()}")
    extra = " ".join(f"{flag}={port}" for flag, port in ports.items())
    return f"{command} --dashboard-port={dashboard} {extra} --num-cpus=1 --temp-dir={temp} --block"


@pytest.mark.ray
def test_a_head_started_as_the_launcher_config_says_refuses_anonymous_jobs(tmp_path):
    config = launcher_config()
    # The node's HOME: the venv the config names is this test's own environment. The whole venv, not only its
    # bin/: a job's `python` finds its site-packages through the pyvenv.cfg beside bin/.
    home = tmp_path / "head-home"
    home.mkdir()
    (home / "venv").symlink_to(BIN.parent)
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    node_env = dict(base, HOME=str(home))
    for command in config["head_setup_commands"]:
        done = subprocess.run(["bash", "-c", command], env=node_env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout == ""  # the token never lands in the launcher's log
    token_file = home / ".ray" / "auth_token"
    assert token_file.stat().st_mode & 0o777 == 0o600 and len(token_file.read_text().strip()) >= 32

    # Short: Ray's unix socket paths under the temp dir must stay below 108 characters.
    temp = Path(tempfile.mkdtemp(prefix="csauth-", dir="/tmp"))
    dashboard = free_port()
    log = tmp_path / "head.log"
    with open(log, "w") as out:
        head = subprocess.Popen(["bash", "-c", _head_command(home, temp, dashboard)], env=node_env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 180
        while not _dashboard_answers(url):
            assert head.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the Ray head did not come up"
            time.sleep(1)

        # Anyone who reaches the port, without the token: the job API answers 401 and `ray job submit` fails.
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{url}/api/jobs/", timeout=10)
        assert refused.value.code == 401
        stranger = tmp_path / "stranger-home"
        stranger.mkdir()
        cases = {"no token": dict(base, HOME=str(stranger)),
                 "a wrong token": dict(base, HOME=str(stranger), RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="0" * 64)}
        for what, env in cases.items():
            anonymous = subprocess.run([str(BIN / "ray"), "job", "submit", "--address", url, "--",
                                        "python", "-c", "print('should not run')"],
                                       env=env, capture_output=True, text=True, timeout=120)
            out = anonymous.stdout + anonymous.stderr
            assert anonymous.returncode != 0 and "should not run" not in anonymous.stdout, (what, out[-2000:])
            assert re.search(r"401|[Uu]nauthori[sz]ed|authenticat", out), (what, out[-2000:])

        # docs/cluster.md: fetch the head's token file, point the CLI at it, submit.
        client = tmp_path / "client-home"
        (client / ".ray").mkdir(parents=True)
        shutil.copy(token_file, client / ".ray" / "chronosweep-aws.token")  # what `ray rsync-down` does
        env = dict(base, HOME=str(client), RAY_AUTH_MODE="token",
                   RAY_AUTH_TOKEN_PATH=str(client / ".ray" / "chronosweep-aws.token"))
        job = subprocess.run([str(BIN / "ray"), "job", "submit", "--address", url, "--",
                              "python", "-c", "import chronosweep; print('authenticated job ran')"],
                             env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert job.returncode == 0, (job.stdout + job.stderr)[-3000:]
        assert "authenticated job ran" in job.stdout and "succeeded" in job.stdout
    finally:
        _end_tree(head)
        shutil.rmtree(temp, ignore_errors=True)
