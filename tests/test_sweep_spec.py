"""Sweep-file validation, search spaces (conditions, windows, grids) and objectives, without Ray."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml

from chronosweep.core.models import ModelInfo
from chronosweep.core.typed import ConfigError
from chronosweep.sweep.space import PREFIX
from chronosweep.sweep.spec import load_sweep, parse_sweep

ROOT = Path(__file__).resolve().parents[1]


def fake_model(name: str = "m", layers: int = 8) -> ModelInfo:
    return ModelInfo(name, f"/nowhere/{name}", "llama", layers, 64, 128, fingerprint=f"{name}-{layers}")


def resolver(layers: int = 8):
    return lambda name: fake_model(name, layers)


def sweep(raw: dict, layers: int = 8):
    return parse_sweep(raw, "test.yaml", resolver(layers))


BASE = {"model": "m", "lora": {"epochs": 1, "layer_start": 0, "layer_width": 2}}


def test_all_problems_reported_at_once_with_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({
        "base": {"model": "m", "lora": {"rank": 0}, "bogus": 1},
        "space": {
            "lora.lr": {"type": "log-float", "low": 0, "high": 1e-2},
            "lora.rank": {"type": "int", "low": 8, "high": 4},
            "lora.dropout": {"type": "gaussian"},
            "lora.window": {"type": "window", "widths": []},
        },
        "search": "optuna",
        "sampler": "annealing",
        "objective": {"metric": "accuracy"},
        "resources": {"cpus": 0, "gpus": 1.5},
        "max_failures": -1,
    }))
    with pytest.raises(ConfigError) as err:
        load_sweep(path, resolve_model=resolver())
    text = str(err.value)
    assert str(path) in text
    for fragment in ("base.lora.rank", "base.bogus", "space.lora.lr.low", "space.lora.rank: high (4) is below low (8)",
                     "space.lora.dropout.type", "space.lora.window.widths", "num_samples: required",
                     "sampler: unknown Optuna sampler 'annealing'", "objective: unknown metric 'accuracy'",
                     "resources.cpus", "resources.gpus", "max_failures"):
        assert fragment in text, fragment
    assert len(err.value.problems) >= 12


def test_set_overrides_apply_to_the_sweep_file(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"base": BASE, "space": {"lora.rank": [2, 4]}, "search": "grid"}))
    spec = load_sweep(path, ["base.data.limit=3", "max_concurrent_trials=2"], resolve_model=resolver())
    assert spec.base_raw["data"]["limit"] == 3
    assert spec.file.max_concurrent_trials == 2
    assert spec.num_trials == 2


def test_values_are_checked_by_building_the_trial_configs():
    # rank 0 is a valid int range end for the space parser but not a valid lora.rank.
    with pytest.raises(ConfigError) as err:
        sweep({"base": BASE, "space": {"lora.rank": {"type": "int", "low": 0, "high": 4}}, "num_samples": 2})
    assert "space.lora.rank: lora.rank: must be >= 1, got 0 (with lora.rank=0" in str(err.value)


def test_fixed_window_in_base_that_does_not_fit_is_reported_by_the_method_check():
    with pytest.raises(ConfigError) as err:
        sweep({"base": {**BASE, "lora": {"layer_start": 6, "layer_width": 4}}, "space": {"lora.rank": [2, 4]},
               "search": "grid"})
    assert "runs past the last layer (7)" in str(err.value)


def test_grid_over_windows_only_holds_windows_that_fit():
    spec = sweep({"base": BASE, "space": {"lora.window": {"type": "window", "widths": [3, 6, 9], "start_step": 2}},
                  "search": "grid"}, layers=8)
    points = [spec.space.decode(p) for p in spec.space.grid()]
    windows = sorted((p["lora.layer_start"], p["lora.layer_width"]) for p in points)
    # width 3: starts 0, 2, 4 (6 would end at layer 8); width 6: start 0, 2; width 9 never fits 8 layers.
    assert windows == [(0, 3), (0, 6), (2, 3), (2, 6), (4, 3)]
    assert spec.num_trials == 5


def test_window_that_never_fits_is_an_error():
    with pytest.raises(ConfigError) as err:
        sweep({"base": BASE, "space": {"lora.window": {"type": "window", "widths": [12]}}, "num_samples": 3})
    assert "space.lora.window: no window of widths [12]" in str(err.value)


def test_grid_applies_method_and_when_conditions():
    spec = sweep({
        "base": {**BASE, "ptuning": {"epochs": 1}},
        "space": {
            "lora.rank": [2, 4],
            "method": ["lora", "ptuning"],
            "ptuning.num_virtual_tokens": [5, 10, 20],
            "lora.targets": {"type": "categorical", "values": ["mlp", "attn"], "when": {"lora.rank": 4}},
        },
        "search": "grid",
    })
    points = [spec.space.decode(p) for p in spec.space.grid()]
    lora = [p for p in points if p["method"] == "lora"]
    ptuning = [p for p in points if p["method"] == "ptuning"]
    # lora: rank 2 (no targets) + rank 4 x 2 targets; ptuning: 3 token counts, no lora keys.
    assert len(lora) == 3 and len(ptuning) == 3
    assert all("ptuning.num_virtual_tokens" not in p for p in lora)
    assert all(not any(k.startswith("lora.") for k in p) for p in ptuning)
    assert sorted(p.get("lora.targets", "-") for p in lora if p["lora.rank"] == 4) == ["attn", "mlp"]
    assert all("lora.targets" not in p for p in lora if p["lora.rank"] == 2)
    # method is ordered before the parameters that depend on it, whatever the file order.
    assert spec.space.keys().index("method") < spec.space.keys().index("lora.rank")


def test_optuna_define_by_run_samples_only_active_parameters_and_fitting_windows():
    spec = sweep({
        "base": {**BASE, "ptuning": {"epochs": 1}},
        "space": {
            "method": ["lora", "ptuning"],
            "lora.window": {"type": "window", "widths": [2, 5]},
            "lora.lr": {"type": "log-float", "low": 1e-4, "high": 1e-2},
            "ptuning.num_virtual_tokens": {"type": "int", "low": 4, "high": 16, "step": 4},
        },
        "num_samples": 30,
    }, layers=8)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=1, n_startup_trials=5))
    seen = set()
    for _ in range(30):
        trial = study.ask()
        spec.space.define_by_run(trial)
        names = {k[len(PREFIX):]: v for k, v in trial.params.items()}
        values = spec.space.decode(names)
        seen.add(values["method"])
        if values["method"] == "lora":
            assert set(values) == {"method", "lora.layer_start", "lora.layer_width", "lora.lr"}
            assert values["lora.layer_start"] + values["lora.layer_width"] <= 8
            assert 1e-4 <= values["lora.lr"] <= 1e-2
        else:
            assert set(values) == {"method", "ptuning.num_virtual_tokens"}
            assert values["ptuning.num_virtual_tokens"] in (4, 8, 12, 16)
        study.tell(trial, 1.0)
    assert seen == {"lora", "ptuning"}


def test_list_valued_categories_round_trip_through_optuna():
    spec = sweep({"base": {**BASE, "method": "memit"}, "space": {"memit.layers": [[1, 2], [2, 3, 4]]},
                  "search": "grid"})
    decoded = sorted(spec.space.decode(p)["memit.layers"] for p in spec.space.grid())
    assert decoded == [[1, 2], [2, 3, 4]]
    study = optuna.create_study()
    trial = study.ask()
    spec.space.define_by_run(trial)
    value = spec.space.decode({k[len(PREFIX):]: v for k, v in trial.params.items()})["memit.layers"]
    assert value in ([1, 2], [2, 3, 4])


def test_parameter_of_a_method_that_never_runs_is_an_error():
    with pytest.raises(ConfigError) as err:
        sweep({"base": BASE, "space": {"ptuning.num_virtual_tokens": [5, 10]}, "num_samples": 2})
    assert "space.ptuning.num_virtual_tokens: never active" in str(err.value)


def test_condition_cycles_and_unknown_condition_keys_are_reported():
    with pytest.raises(ConfigError) as err:
        sweep({"base": BASE, "space": {
            "lora.rank": {"type": "categorical", "values": [2, 4], "when": {"lora.alpha": 8}},
            "lora.alpha": {"type": "categorical", "values": [8, 16], "when": {"lora.rank": 2}},
            "lora.dropout": {"type": "categorical", "values": [0.0, 0.1], "when": {"lora.nothing": 1}},
        }, "num_samples": 2})
    text = str(err.value)
    assert "conditions form a cycle" in text
    assert "space.lora.dropout.when.lora.nothing" in text


def test_grid_refuses_continuous_ranges_and_num_samples():
    with pytest.raises(ConfigError) as err:
        sweep({"base": BASE, "space": {"lora.lr": {"type": "float", "low": 1e-4, "high": 1e-3}}, "search": "grid",
               "num_samples": 4})
    text = str(err.value)
    assert "space.lora.lr: a grid cannot enumerate a continuous range" in text
    assert "num_samples: a grid runs every combination once" in text


def test_stepped_float_grid():
    spec = sweep({"base": BASE, "space": {"lora.dropout": {"type": "float", "low": 0.0, "high": 0.2, "step": 0.1}},
                  "search": "grid"})
    assert [spec.space.decode(p)["lora.dropout"] for p in spec.space.grid()] == [0.0, 0.1, 0.2]


def test_sampler_by_name_and_its_options_are_checked():
    spec = sweep({"base": BASE, "space": {"lora.rank": [2, 4]}, "num_samples": 2, "sampler": "random"})
    assert spec.file.sampler == "random"
    with pytest.raises(ConfigError) as err:
        sweep({"base": BASE, "space": {"lora.rank": [2, 4]}, "num_samples": 2, "sampler": "tpe",
               "sampler_options": {"n_startup_trials": 2, "warp_speed": 9}})
    assert "sampler_options.warp_speed" in str(err.value)
    assert len(err.value.problems) == 1


def test_weighted_objective_and_null_metrics():
    spec = sweep({"base": BASE, "space": {"lora.rank": [2]}, "search": "grid",
                  "objective": {"weights": {"reliability": 1, "locality": 0.5, "edit_seconds": -0.01}}})
    objective = spec.objective
    assert objective.value({"reliability": 0.8, "locality": 0.6, "edit_seconds": 10}) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="multihop_accuracy"):
        sweep({"base": BASE, "space": {"lora.rank": [2]}, "search": "grid",
               "objective": {"metric": "multihop_accuracy"}}).objective.value({"multihop_accuracy": None})
    with pytest.raises(ConfigError, match="give either metric or weights"):
        sweep({"base": BASE, "space": {"lora.rank": [2]}, "search": "grid",
               "objective": {"metric": "reliability", "weights": {"locality": 1}}})


def test_model_in_the_space_fits_windows_per_model():
    sizes = {"small": 4, "big": 12}
    spec = parse_sweep({"base": {"model": "small"}, "search": "grid", "space": {
        "model": ["small", "big"], "lora.window": {"type": "window", "widths": [4]}}}, "t.yaml",
        lambda name: fake_model(name, sizes[name]))
    points = [spec.space.decode(p) for p in spec.space.grid()]
    assert sum(p["model"] == "small" for p in points) == 1
    assert sum(p["model"] == "big" for p in points) == 9


SHIPPED = sorted((ROOT / "configs" / "sweeps").glob("*.yaml"))


def test_sweeps_are_shipped():
    names = {p.name for p in SHIPPED}
    for stem in ("methods", "layers-multihop", "rank-targets", "injection-vs-modification", "local-edits"):
        assert {f"{stem}.yaml", f"{stem}-small.yaml"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_sweeps_validate_against_the_default_model(path):
    # The default model's shape is known without fetching it (chronosweep.core.models.BUILTIN).
    spec = load_sweep(path)
    assert spec.num_trials >= 2
    assert spec.space.infos["smollm2-135m"].num_layers == 30


def test_cli_reports_problems_without_a_traceback_and_checks(tmp_path, capsys, data_root):
    from chronosweep.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"base": {"lora": {"rank": -1}}, "space": {"lora.rank": [2]}, "search": "grid",
                                   "num_samples": 3}))
    assert main(["sweep", str(bad), "--name", "x", "--storage", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "base.lora.rank" in err and "num_samples" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()

    path = ROOT / "configs" / "sweeps" / "rank-targets-small.yaml"
    assert main(["sweep", str(path), "--check", "--set", f"base.data.root={data_root}"]) == 0
    assert "sweep ok: 6 trial(s), search grid" in capsys.readouterr().out
    assert main(["sweep", str(path), "--name", "x", "--num-cpus", "2", "--address", "auto"]) == 2


def test_an_empty_grid_space_is_an_error_not_one_run_of_the_base():
    with pytest.raises(ConfigError, match="space: empty; a grid search needs at least one parameter"):
        sweep({"base": BASE, "space": {}, "search": "grid"})
    with pytest.raises(ConfigError, match="space: empty"):
        sweep({"base": BASE, "search": "grid"})
