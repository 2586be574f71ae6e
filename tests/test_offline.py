"""A model that is neither local nor reachable fails at once, a cached hub model loads without the hub, and a run
refused by validation leaves no --out folder behind."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest
import torch

from chronosweep.cli import main
from chronosweep.core.models import ModelError, hub_reachable, load, resolve


@pytest.fixture
def no_hub(monkeypatch, tmp_path):
    """The hub at a local port nobody listens on, an empty hub cache, and transformers' loaders watched."""
    import huggingface_hub.constants as hub
    import transformers

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(hub, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    calls: list[tuple] = []
    real = transformers.AutoConfig.from_pretrained.__func__

    def watched(cls, name, *args, **kwargs):
        calls.append((name, kwargs.get("local_files_only")))
        return real(cls, name, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", classmethod(watched))
    return calls


def test_an_unreachable_hub_is_found_out_once_and_the_error_is_immediate(no_hub):
    reachable, why = hub_reachable()
    assert not reachable and "127.0.0.1" in why
    with pytest.raises(ModelError, match="the Hugging Face hub cannot be reached .* and its cache holds no copy"):
        resolve("someorg/not-a-model")
    # Decided before transformers was asked anything: no retries against a hub that is not there.
    assert no_hub == []
    with pytest.raises(ModelError, match="no such local directory"):
        resolve("./no/such/model")


def test_a_cached_hub_model_is_read_without_the_hub(no_hub, tiny_model_dir, tmp_path):
    import huggingface_hub.constants as hub

    # The hub cache's layout: refs/main names a snapshot holding the files.
    repo = Path(hub.HF_HUB_CACHE) / "models--someorg--tiny"
    shutil.copytree(tiny_model_dir, repo / "snapshots" / ("a" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    info = resolve("someorg/tiny")
    assert info.offline and info.num_layers == 4 and no_hub == [("someorg/tiny", True)]
    model, _ = load(info, torch.device("cpu"), torch.float32)
    assert model.config.num_hidden_layers == 4


def test_a_run_refused_by_validation_leaves_no_out_folder(no_hub, tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["edit", "--out", str(out), "--set", "model=someorg/not-a-model"]) == 2
    assert "hub cannot be reached" in capsys.readouterr().err
    assert main(["edit", "--out", str(out), "--set", "lora.rank=0"]) == 2
    assert "lora.rank" in capsys.readouterr().err
    assert not out.exists()
