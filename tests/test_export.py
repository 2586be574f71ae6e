"""`chronosweep export`: the exported directory is a plain Hugging Face model that answers as the edited run did."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from chronosweep.cli import main
from chronosweep.cli.export import EXPORT_RECORD, ExportError, export_run
from chronosweep.trial.run import run_trial
from tests.test_contract import _config, _write_edits
from tests.tiny_facts import one_thread  # noqa: F401 (autouse fixture)


def _run(method: str, model_dir: Path, tmp_path: Path, data_root: Path, extra=()) -> Path:
    edits = _write_edits(tmp_path / "edits.jsonl")
    cfg = _config(model_dir, method, [f"data.name={edits}", f"data.root={data_root}", "data.locality_limit=4",
                                      "eval.max_new_tokens=6", "threads=1", *extra])
    run_dir = tmp_path / f"run-{method}"
    run_trial(cfg, run_dir, progress=lambda _: None)
    return run_dir


def _plain_outputs(model_dir: Path, prompts: list[str], max_new_tokens: int) -> list[str]:
    """Greedy continuations from transformers alone, batched as the run's evaluation batches them."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from chronosweep.evaluation.generation import greedy_continuations

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return greedy_continuations(model, tok, prompts, max_new_tokens, 32, torch.device("cpu"))


@pytest.mark.parametrize("method", ["lora", "rome", "full"])
def test_exported_model_answers_as_the_edited_run(method, fact_llama_dir, tmp_path, data_root, monkeypatch):
    monkeypatch.setenv("CHRONOSWEEP_CACHE", str(tmp_path / "cache"))
    run_dir = _run(method, fact_llama_dir, tmp_path, data_root)
    out = tmp_path / "export"
    assert main(["export", str(run_dir), "--out", str(out)]) == 0
    for name in ("config.json", "model.safetensors", "tokenizer.json", EXPORT_RECORD):
        assert (out / name).exists(), name
    assert not (out / "adapter_config.json").exists()  # LoRA is merged, not shipped as an adapter
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert {r["probe"] for r in rows} >= {"rewrite", "paraphrase", "locality"}
    again = _plain_outputs(out, [r["prompt"] for r in rows], 6)
    assert again == [r["post"] for r in rows]
    # The edit is in the weights, and only in the modules the run says it edited.
    from safetensors.torch import load_file

    edited, base = load_file(str(out / "model.safetensors")), load_file(str(fact_llama_dir / "model.safetensors"))
    assert edited.keys() == base.keys()
    changed = {name for name in base if not torch.equal(base[name], edited[name])}
    modules = json.loads((run_dir / "metrics.json").read_text())["edited_modules"]
    assert changed and all(any(name.startswith(m + ".") for m in modules) for name in changed), (changed, modules)
    record = json.loads((out / EXPORT_RECORD).read_text())
    assert record["run"]["method"] == method and record["precision"] == "fp32"


def test_adapter_only_writes_a_peft_adapter_for_the_base_model(fact_llama_dir, tmp_path, data_root, monkeypatch):
    monkeypatch.setenv("CHRONOSWEEP_CACHE", str(tmp_path / "cache"))
    run_dir = _run("lora", fact_llama_dir, tmp_path, data_root)
    out = export_run(run_dir, tmp_path / "adapter", adapter_only=True, progress=lambda _: None)
    assert (out / "adapter_config.json").exists() and not (out / "model.safetensors").exists()
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(fact_llama_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, out)
    assert sum(p.numel() for n, p in model.named_parameters() if "lora_" in n) > 0


def test_runs_that_cannot_be_exported_say_why(fact_llama_dir, tmp_path, data_root, monkeypatch, capsys):
    monkeypatch.setenv("CHRONOSWEEP_CACHE", str(tmp_path / "cache"))
    lean = _run("rome", fact_llama_dir, tmp_path, data_root, ["save_artifacts=false"])
    assert main(["export", str(lean), "--out", str(tmp_path / "x")]) == 2
    assert "save_artifacts: false" in capsys.readouterr().err
    (tmp_path / "b").mkdir()
    rome = _run("rome", fact_llama_dir, tmp_path / "b", data_root)
    with pytest.raises(ExportError, match="has no adapter"):
        export_run(rome, tmp_path / "y", adapter_only=True)
    with pytest.raises(ExportError, match="not a finished run"):
        export_run(tmp_path / "b", tmp_path / "z")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    with pytest.raises(ExportError, match="not empty"):
        export_run(rome, tmp_path / "full")


def test_ptuning_exports_only_its_adapter(fact_llama_dir, tmp_path, data_root, monkeypatch):
    monkeypatch.setenv("CHRONOSWEEP_CACHE", str(tmp_path / "cache"))
    run_dir = _run("ptuning", fact_llama_dir, tmp_path, data_root)
    with pytest.raises(ExportError, match="--adapter-only"):
        export_run(run_dir, tmp_path / "m")
    out = export_run(run_dir, tmp_path / "a", adapter_only=True, progress=lambda _: None)
    assert json.loads((out / "adapter_config.json").read_text())["peft_type"] == "P_TUNING"
