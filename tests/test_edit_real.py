"""The demo trial, end to end, on the real default model (SmolLM2-135M) and ten real DyKnow edits."""

import json
import subprocess
import sys

import pytest

FIELDS = ("reliability", "generalization", "locality", "rewrite_acc", "rephrase_acc", "locality_acc", "edit_seconds",
          "eval_seconds", "trainable_params", "trainable_fraction", "peak_rss_mb", "peak_gpu_mb", "n_edits", "config")


@pytest.mark.slow
def test_edit_cli_on_default_model(tmp_path, data_root):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "chronosweep.cli", "edit", "--out", str(out), "--set", "data.limit=10",
           "--set", f"data.root={data_root}", "--set", "data.locality_limit=20"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert str(out / "metrics.json") in done.stdout

    metrics = json.loads((out / "metrics.json").read_text())
    for key in FIELDS:
        assert key in metrics, key
    assert metrics["n_edits"] == 10 and metrics["config"]["lora"]["targets"] == "mlp"
    # The unedited model knows none of the current holders' names as first words; the edit must teach them.
    assert metrics["pre"]["reliability"] <= 0.3
    assert metrics["reliability"] >= 0.7, metrics
    assert metrics["rewrite_acc"] > metrics["pre"]["rewrite_acc"]
    assert 0.0 <= metrics["locality"] <= 1.0
    assert 0 < metrics["trainable_fraction"] < 0.02
    # The machine, so its seconds are read against the right host.
    host = metrics["host"]
    assert host["cpu"] and host["logical_cpus"] >= 1 and host["gpu"] is None
    assert set(host["cpu_features"]) <= {"avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}

    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert sum(r["probe"] == "rewrite" for r in rows) == 10
    assert sum(r["probe"] == "locality" for r in rows) == 20
    rewrite = [r for r in rows if r["probe"] == "rewrite"]
    assert sum(r["correct"] for r in rewrite) / 10 == pytest.approx(metrics["reliability"])

    # The adapter is a standard PEFT directory.
    from peft import PeftConfig

    assert PeftConfig.from_pretrained(out / "adapter").peft_type == "LORA"

    # A finished run dir is not overwritten without --force, and the refusal comes before any work.
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "--force" in again.stderr
