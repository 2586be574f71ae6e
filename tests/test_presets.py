"""Per-model presets (trial.presets, configs/presets/): which applies, what overrides it, what a run records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chronosweep.core.models import ModelInfo, resolve
from chronosweep.core.typed import ConfigError, build
from chronosweep.editing.registry import METHODS
from chronosweep.trial import presets
from chronosweep.trial.config import load_config
from chronosweep.trial.run import plan, run_trial
from tests.test_contract import SETTINGS, _write_edits
from tests.tiny_facts import one_thread  # noqa: F401 (autouse fixture)

ROOT = Path(__file__).resolve().parents[1]
SMOLLM2 = resolve("smollm2-135m", fetch=False)  # its shape is known without the weights


def _info(name: str, model_type="llama", layers=32, hidden=4096, mlp: int | None = 11008) -> ModelInfo:
    return ModelInfo(name, name, model_type, layers, hidden, mlp, "test")


def test_the_repository_path_is_the_shipped_presets():
    assert (ROOT / "configs" / "presets").resolve() == presets.SHIPPED
    names = {p.name for p in presets.all_presets()}
    for method in ("rome", "memit", "rome-preserve", "memit-preserve"):
        for model in ("smollm2-135m", "llama-2-7b", "mistral-7b", "llama-3-8b", "gpt-j-6b"):
            assert f"{method}/{model}" in names


@pytest.mark.parametrize("preset", presets.all_presets(), ids=lambda p: p.name)
def test_every_shipped_preset_fits_the_models_it_names(preset):
    """Its options build, fit a model of its shape, cite a source, and it is what auto picks for its models."""
    assert preset.method in METHODS and preset.source
    info = SMOLLM2 if "smollm2" in preset.name else _info(
        preset.match["names"][0], preset.match["model_type"], preset.match["num_layers"], preset.match["hidden_size"],
        preset.match.get("intermediate_size"))
    problems: list[str] = []
    options = build(METHODS[preset.method].options, {**preset.options}, preset.method, problems)
    # Offline: the 7B presets name Wikipedia statistics, which need the datasets package.
    problems = [p for p in problems if "datasets" not in p]
    options.check_model(preset.method, info, problems)
    assert problems == []
    for name in preset.match["names"]:
        chosen, how = presets.choose(preset.method, name, info)
        assert chosen.name == preset.name and how == "name"
    other = _info("/models/local-copy", info.model_type, info.num_layers, info.hidden_size, info.intermediate_size)
    assert presets.choose(preset.method, "/models/local-copy", other)[0].name == preset.name


def test_auto_picks_by_name_then_shape_and_keeps_models_apart():
    assert presets.choose("rome", "smollm2-135m", SMOLLM2)[0].name == "rome/smollm2-135m"
    # Same shape, other names: a fine-tune of LLaMA-2-7B in a local folder gets LLaMA-2-7B's values ...
    assert presets.choose("memit", "/ckpt/my-llama", _info("/ckpt/my-llama")) == (
        presets.find_named("memit/llama-2-7b"), "shape")
    # ... while Llama-3-8B and Mistral-7B, which share a shape, are told apart by architecture.
    assert presets.choose("memit", "x", _info("x", mlp=14336))[0].name == "memit/llama-3-8b"
    assert presets.choose("memit", "x", _info("x", "mistral", mlp=14336))[0].name == "memit/mistral-7b"
    assert presets.choose("rome", "tiny", _info("tiny", layers=4, hidden=64, mlp=128)) == (None, None)
    assert presets.choose("lora", "smollm2-135m", SMOLLM2) == (None, None)


def test_the_preset_fills_in_what_the_config_leaves_open():
    cfg = load_config(None, ["method=rome", "rome.v_num_grad_steps=10"])
    plan(cfg)
    applied = cfg.applied_preset
    assert applied["name"] == "rome/smollm2-135m" and applied["matched_by"] == "name"
    # EasyEdit's LLaMA setting (the reference's), except what the config set.
    assert cfg.options.layer == 5 and cfg.options.mom2_adjustment is False and cfg.options.v_num_grad_steps == 10
    assert applied["overridden"] == ["v_num_grad_steps"] and "v_num_grad_steps" not in applied["options"]
    assert applied["options"]["mom2_adjustment"] is False
    # config.yaml holds the resolved values, so the run reproduces without the preset.
    assert cfg.to_dict()["rome"]["mom2_adjustment"] is False
    assert cfg.to_dict()["preset"] == "auto" and "applied_preset" not in cfg.to_dict()

    none = load_config(None, ["method=rome", "preset=none"])
    plan(none)
    assert none.applied_preset is None and none.options.mom2_adjustment is True  # the paper's default
    variant = load_config(None, ["method=memit-preserve"])
    plan(variant)
    assert variant.applied_preset["name"] == "memit-preserve/smollm2-135m"
    assert variant.options.mom2_update_weight == 500 and variant.options.context_templates == [[11, 1]]


def test_extends_and_bad_files(tmp_path, monkeypatch):
    folder = tmp_path / "mine" / "rome"
    folder.mkdir(parents=True)
    (folder / "base.yaml").write_text("method: rome\nsource: a test\nmatch: {names: [nothing]}\n"
                                      "options: {layer: 2, kl_factor: 0.5}\n")
    (folder / "child.yaml").write_text("method: rome\nsource: a test\nextends: rome/base\nmatch: {names: [x]}\n"
                                       "options: {kl_factor: 0.25}\n")
    (folder / "loop.yaml").write_text("method: rome\nsource: t\nextends: rome/loop\noptions: {}\n")
    monkeypatch.setenv("CHRONOSWEEP_PRESETS", str(tmp_path / "mine"))
    assert presets.find_named("rome/child").options == {"layer": 2, "kl_factor": 0.25}
    with pytest.raises(presets.PresetError, match="cycle"):
        presets.find_named("rome/loop")
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: rome\nmatch: {names: [x], colour: red}\noptions: {layer: 3}\nlayer: 4\n")
    with pytest.raises(presets.PresetError) as err:
        presets.find_named(str(bad))
    text = str(err.value)
    assert str(bad) in text and "layer: unknown key" in text and "match:" in text and "source: required" in text


def test_a_preset_value_the_options_refuse_names_the_preset(tmp_path, fact_llama_dir):
    path = tmp_path / "wrong.yaml"
    path.write_text("method: rome\nsource: a test\noptions: {layer: 9, clamp_norm_factor: -1}\n")
    cfg = load_config(None, [f"model={fact_llama_dir}", "method=rome", f"preset={path}"])
    with pytest.raises(ConfigError) as err:
        plan(cfg)
    assert any("clamp_norm_factor" in p and str(path) in p for p in err.value.problems), err.value.problems
    other = tmp_path / "memit.yaml"
    other.write_text("method: memit\nsource: a test\noptions: {}\n")
    with pytest.raises(ConfigError, match="a preset of memit, not of rome"):
        plan(load_config(None, [f"model={fact_llama_dir}", "method=rome", f"preset={other}"]))


def test_a_run_records_the_preset_it_used(tmp_path, fact_llama_dir, data_root, monkeypatch):
    monkeypatch.setenv("CHRONOSWEEP_CACHE", str(tmp_path / "cache"))
    mine = tmp_path / "presets" / "rome"
    mine.mkdir(parents=True)
    (mine / "tiny.yaml").write_text("method: rome\nsource: made for the tiny test model\n"
                                    "match: {model_type: llama, num_layers: 4, hidden_size: 64}\n"
                                    "options: {layer: 2, v_num_grad_steps: 3}\n")
    monkeypatch.setenv("CHRONOSWEEP_PRESETS", str(tmp_path / "presets"))
    edits = _write_edits(tmp_path / "edits.jsonl")
    settings = [s for s in SETTINGS["rome"] if not s.startswith(("rome.layer", "rome.v_num_grad_steps"))]
    cfg = load_config(None, [f"model={fact_llama_dir}", "device=cpu", "method=rome", *settings, "rome.layer=1",
                             f"data.name={edits}", f"data.root={data_root}", "data.locality_limit=4",
                             "eval.max_new_tokens=4", "threads=1", "save_artifacts=false"])
    metrics = run_trial(cfg, tmp_path / "run", progress=lambda _: None)
    preset = metrics["preset"]
    assert preset["name"] == "rome/tiny" and preset["matched_by"] == "shape"
    assert preset["options"] == {"v_num_grad_steps": 3} and preset["overridden"] == ["layer"]
    assert metrics["edited_layers"] == [1] and all(h["steps"] <= 3 for h in metrics["history"])
    on_disk = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert on_disk["preset"] == preset and on_disk["config"]["rome"]["v_num_grad_steps"] == 3


def test_sweep_validation_checks_the_preset_values(tmp_path, monkeypatch):
    """A sweep trial runs with the model's preset: its validation builds the same options."""
    from chronosweep.sweep.spec import parse_sweep

    mine = tmp_path / "presets" / "rome"
    mine.mkdir(parents=True)
    (mine / "smollm2-135m.yaml").write_text("method: rome\nsource: a test\nmatch: {names: [smollm2-135m]}\n"
                                            "options: {layer: 31}\n")
    monkeypatch.setenv("CHRONOSWEEP_PRESETS", str(tmp_path / "presets"))
    raw = {"base": {"model": "smollm2-135m", "method": "rome"}, "space": {"rome.kl_factor": [0.1, 0.2]},
           "search": "grid"}
    with pytest.raises(ConfigError, match="rome.layer: layer 31 does not exist"):
        parse_sweep(raw, "sweep.yaml", resolve_model=lambda name: SMOLLM2)
    raw["base"]["rome"] = {"layer": 5}  # the sweep's own value wins
    assert parse_sweep(raw, "sweep.yaml", resolve_model=lambda name: SMOLLM2).num_trials == 2
