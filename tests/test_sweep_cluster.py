"""The cluster files are what Ray and KubeRay accept, and the commands in them are ones chronosweep accepts."""

from __future__ import annotations

import shlex
from pathlib import Path

import ray
import yaml

from chronosweep.cli import build_parser
from chronosweep.sweep.spec import load_sweep
from chronosweep.trial.config import load_config

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"


def test_launcher_config_passes_rays_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((CLUSTER / "aws-gpu.yaml").read_text())
    validate_config(prepare_config(config))
    # Trials never land on the head (it runs the driver), and every node installs and prepares chronosweep.
    assert config["available_node_types"][config["head_node_type"]]["resources"] == {"CPU": 0}
    setup = "\n".join(config["setup_commands"])
    assert "pip install -q -e ~/chronosweep" in setup and "chronosweep model fetch" in setup
    assert any("--dashboard-host=127.0.0.1" in c for c in config["head_start_ray_commands"])


def test_runtime_env_is_a_valid_ray_runtime_env():
    from ray.runtime_env import RuntimeEnv

    env = RuntimeEnv(**yaml.safe_load((CLUSTER / "runtime_env.yaml").read_text()))
    assert "runs/" in env["excludes"]


def test_rayjob_manifest_runs_a_valid_sweep_command():
    job = yaml.safe_load((CLUSTER / "rayjob.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    major_minor = ".".join(ray.__version__.split(".")[:2])
    assert spec["rayClusterSpec"]["rayVersion"].startswith(major_minor)
    argv = shlex.split(spec["entrypoint"])
    assert argv[:3] == ["python", "-m", "chronosweep.cli"]
    args = build_parser().parse_args(argv[3:])
    assert args.command == "sweep" and args.address == "auto" and args.storage.startswith("s3://")
    # The sweep it names is shipped and valid with the entrypoint's overrides.
    sweep = load_sweep(ROOT / args.sweep, args.overrides)
    assert sweep.resources.gpus == 1
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert runtime_env["env_vars"] == yaml.safe_load((CLUSTER / "runtime_env.yaml").read_text())["env_vars"]
    workers = spec["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    assert workers["resources"]["limits"]["nvidia.com/gpu"] == "1"


def _readme_commands(tool: str) -> list[list[str]]:
    """Every `chronosweep ...` invocation in the README's shell blocks, joined over backslash continuations."""
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in text.split("```bash")[1:]:
        body = block.split("```")[0].replace("\\\n", " ")
        for line in body.splitlines():
            for part in line.split("&&"):
                argv = shlex.split(part.split("#")[0])
                if any(a.startswith("[") for a in argv):  # a usage synopsis, not a command
                    continue
                if tool in argv:
                    commands.append(argv[argv.index(tool) + 1:])
                elif argv and argv[0].endswith("/" + tool):
                    commands.append(argv[1:])
    return commands


def test_readme_chronosweep_commands_parse_and_name_shipped_files():
    commands = _readme_commands("chronosweep")
    assert len(commands) >= 6
    for argv in commands:
        args = build_parser().parse_args(argv)
        if args.command == "sweep" and getattr(args, "dry_run", False):
            from chronosweep.sweep.dryrun import load_for_dry_run

            # What --dry-run validates: model shapes offline (a 7B id needs no network).
            load_for_dry_run(str(ROOT / args.sweep), args.overrides)
        elif args.command == "sweep":
            load_sweep(ROOT / args.sweep, args.overrides)
        if args.command == "edit" and args.config:
            load_config(ROOT / args.config, args.overrides)
    # The first set-up command runs the small layer-window sweep and reports it.
    first = commands[0]
    assert first[:2] == ["sweep", "configs/sweeps/layers-multihop-small.yaml"]
    assert commands[1][0] == "report" and commands[1][1].endswith("layers-multihop-small")
