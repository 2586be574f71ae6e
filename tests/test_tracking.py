"""MLflow tracking of a sweep: the sweep file's tracking section, and a real sweep logging to a local file store."""

from __future__ import annotations

import importlib.util

import pytest
import yaml

from chronosweep.core.typed import ConfigError
from chronosweep.sweep.runner import SweepOptions, run_sweep
from chronosweep.sweep.spec import load_sweep
from chronosweep.sweep.tracking import flatten


def _sweep(tmp_path, model, data_root, tracking) -> object:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({
        "base": {"model": str(model), "data": {"root": str(data_root), "limit": 2, "locality_limit": 2},
                 "eval": {"max_new_tokens": 3},
                 "lora": {"epochs": 3, "batch_size": 4, "rank": 2, "layer_start": 0, "layer_width": 2}},
        "space": {"lora.rank": [2, 4]},
        "search": "grid",
        "tracking": tracking,
    }))
    return path


def test_tracking_section_is_validated(tiny_model_dir, data_root, tmp_path, monkeypatch):
    path = _sweep(tmp_path, tiny_model_dir, data_root, {"mlflow": {"uri": str(tmp_path / "mlruns"), "colour": 1}})
    with pytest.raises(ConfigError, match=r"tracking\.mlflow\.colour"):
        load_sweep(path)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    path = _sweep(tmp_path, tiny_model_dir, data_root, {"mlflow": {}})
    with pytest.raises(ConfigError, match=r"chronosweep\[mlflow\]"):
        load_sweep(path)


def test_flatten_gives_dotted_keys():
    assert flatten({"a": 1, "b": {"c": 2, "d": {"e": None}}, "f": {}}) == {"a": 1, "b.c": 2, "b.d.e": None, "f": {}}


@pytest.mark.ray
def test_a_sweep_logs_config_epochs_and_metrics_to_a_file_store(tiny_model_dir, data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("CHRONOSWEEP_CACHE", str(tmp_path / "cache"))
    store = tmp_path / "mlruns"
    path = _sweep(tmp_path, tiny_model_dir, data_root, {"mlflow": {"uri": str(store), "tags": {"team": "edits"}}})
    summary = run_sweep(load_sweep(path), SweepOptions(name="tracked", storage=str(tmp_path / "sweeps"), num_cpus=2))
    assert summary.counts.get("ok") == 2

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store.as_uri())
    experiment = client.get_experiment_by_name("tracked")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2
    ranks = set()
    for run in runs:
        params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
        # The whole trial config, defaults filled in, as dotted keys.
        assert params["method"] == "lora" and params["model"] == str(tiny_model_dir)
        assert params["data.limit"] == "2" and params["lora.layer_width"] == "2" and "eval.batch_size" in params
        ranks.add(params["lora.rank"])
        assert 0.0 <= metrics["reliability"] <= 1.0 and metrics["n_edits"] == 2
        losses = client.get_metric_history(run.info.run_id, "loss")
        # One loss per epoch, then the final report repeats the last epoch's.
        assert sorted({m.step for m in losses}) == [1, 2, 3, 4]
        assert tags["team"] == "edits" and tags["chronosweep.sweep"] == "tracked" and tags["chronosweep.status"] == "ok"
        assert tags["chronosweep.run_dir"].endswith("/run") and run.info.status == "FINISHED"
    assert ranks == {"2", "4"}
