"""One test matrix over every registered method x {tiny LLaMA, tiny GPT-2}: what every method promises.

- check_model refuses layers the model does not have;
- trainable_params is the number of parameter values that actually changed, and edited_modules / edited_layers
  name exactly where they are;
- every history row carries the keys the registry documents;
- a run writes every run-dir file, and what it saves reloads into the same edited model;
- the method's shipped trial config validates.
Plus pinned metrics per method on the tiny fact model, so a silent change in any method's behaviour fails a test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from chronosweep.core.models import load, resolve
from chronosweep.editing import base as edit_base
from chronosweep.editing.base import EditContext
from chronosweep.editing.registry import METHODS
from chronosweep.trial.config import load_config
from chronosweep.trial.run import run_trial
from tests.tiny_facts import FACTS, one_thread  # noqa: F401 (autouse fixture)
from tests.trainkit import tiny_requests

ROOT = Path(__file__).resolve().parents[1]
ARCHS = ["fact_llama_dir", "fact_gpt2_dir"]

# Small, fast settings per method; weight decay makes every trained value move, so "changed" means "trained".
SETTINGS = {
    "lora": ["lora.layer_start=1", "lora.layer_width=2", "lora.rank=4", "lora.epochs=3", "lora.lr=1e-2",
             "lora.weight_decay=0.1", "lora.batch_size=3"],
    # The KL on sampled retain texts with early stopping (lora-local's defaults until 2026-12-02, whose pinned values
    # per host are below), cut down for the tiny model; its key-statistics penalty has tests of its own
    # (test_local_edits.py).
    "lora-local": ["lora-local.layer_start=1", "lora-local.layer_width=2", "lora-local.rank=4", "lora-local.epochs=3",
                   "lora-local.lr=1e-2", "lora-local.weight_decay=0.1", "lora-local.batch_size=3",
                   "lora-local.kl_weight=4", "lora-local.key_weight=0",
                   "lora-local.retain_sampled=4", "lora-local.retain_sampled_tokens=6", "lora-local.prefix_tokens=4"],
    "ptuning": ["ptuning.num_virtual_tokens=4", "ptuning.encoder_hidden_size=16", "ptuning.epochs=3",
                "ptuning.weight_decay=0.1", "ptuning.batch_size=3"],
    "full": ["full.layer_start=2", "full.layer_width=1", "full.epochs=2", "full.lr=1e-3", "full.weight_decay=0.1",
             "full.batch_size=3"],
    "freeze": ["freeze.layer_start=1", "freeze.layer_width=2", "freeze.epochs=2", "freeze.lr=1e-3",
               "freeze.weight_decay=0.1", "freeze.batch_size=3"],
    "rome": ["rome.layer=1", "rome.stats_samples=1024", "rome.context_templates=[[5,2],[10,2]]",
             "rome.v_num_grad_steps=8"],
    "rome-preserve": ["rome-preserve.layer=1", "rome-preserve.stats_samples=1024",
                      "rome-preserve.context_templates=[[11,1]]", "rome-preserve.v_num_grad_steps=8"],
    "memit": ["memit.layers=[1,2]", "memit.stats_samples=1024", "memit.context_templates=[[10,2]]",
              "memit.mom2_update_weight=500", "memit.v_num_grad_steps=8"],
    "memit-preserve": ["memit-preserve.layers=[1,2]", "memit-preserve.stats_samples=1024",
                       "memit-preserve.context_templates=[[11,1]]", "memit-preserve.mom2_update_weight=500",
                       "memit-preserve.v_num_grad_steps=8"],
}
# An option naming a layer the 4-layer tiny models lack; None: the method takes no layers.
BAD_LAYERS = {"lora": "lora.layer_start=3", "lora-local": "lora-local.layer_start=3", "ptuning": None,
              "full": "full.layer_start=4", "freeze": "freeze.layer_start=9",
              "rome": "rome.layer=4", "rome-preserve": "rome-preserve.layer=4", "memit": "memit.layers=[2,7]",
              "memit-preserve": "memit-preserve.layers=[2,7]"}
ARTIFACT = {"lora": "adapter", "lora-local": "adapter", "ptuning": "adapter", "full": "trained_params.safetensors",
            "freeze": "trained_params.safetensors", "rome": "trained_params.safetensors",
            "rome-preserve": "trained_params.safetensors", "memit": "trained_params.safetensors",
            "memit-preserve": "trained_params.safetensors"}


def test_the_matrix_covers_every_registered_method():
    assert set(SETTINGS) == set(METHODS) == set(BAD_LAYERS) == set(ARTIFACT)


def _config(model_dir: Path, method: str, extra=()):
    return load_config(None, [f"model={model_dir}", "device=cpu", f"method={method}", *SETTINGS[method], *extra])


@pytest.mark.parametrize("method", list(METHODS))
def test_check_model_refuses_layers_the_model_lacks(method, fact_llama_dir):
    info = resolve(str(fact_llama_dir))
    problems: list[str] = []
    _config(fact_llama_dir, method).options.check_model(method, info, problems)
    assert problems == []
    if BAD_LAYERS[method] is None:
        return
    bad = _config(fact_llama_dir, method, [BAD_LAYERS[method]])
    bad.options.check_model(method, info, problems)
    key = BAD_LAYERS[method].split("=")[0]
    assert len(problems) == 1 and problems[0].startswith(key.split(".")[0]), problems
    assert f"{info.num_layers} layers" in problems[0] or f"0..{info.num_layers - 1}" in problems[0], problems


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", list(METHODS))
def test_trainable_params_are_the_values_that_changed(method, arch, request, tmp_path, monkeypatch):
    model_dir = request.getfixturevalue(arch)
    cfg = _config(model_dir, method)
    info = resolve(str(model_dir))
    model, tok = load(info, torch.device("cpu"), torch.float32)
    spec = METHODS[method]
    impl = spec.load()
    snap: dict[str, torch.Tensor] = {}
    if spec.family == "gradient":
        # Adapters exist only once the method has made them: snapshot where training starts.
        module = __import__(impl.__class__.__module__, fromlist=["train_on_edits"])
        real = module.train_on_edits

        def spy(m, *args, **kwargs):
            snap.update(_snapshot(m))
            return real(m, *args, **kwargs)

        monkeypatch.setattr(module, "train_on_edits", spy)
    else:
        snap.update(_snapshot(model))
    ctx = EditContext(runtime=cfg.runtime(), info=info, device=torch.device("cpu"), dtype=torch.float32,
                      run_dir=None, cache_dir=tmp_path / "cache")
    torch.manual_seed(0)
    outcome = impl.edit(model, tok, tiny_requests(4), cfg.options, ctx)
    # P-tuning hands back its PeftModel inside a generation wrapper (VirtualPromptLM.peft_model).
    after = {n.removeprefix("peft_model."): p for n, p in outcome.model.named_parameters()}
    assert snap and set(snap) <= set(after)
    changed = {n: int((snap[n] != after[n]).sum()) for n in snap if not torch.equal(snap[n], after[n])}
    assert sum(changed.values()) == outcome.trainable_params > 0, changed
    modules, layers = edit_base.edited(changed, info)
    assert modules == outcome.edited_modules and layers == outcome.edited_layers
    if spec.algorithm in ("lora", "freeze", "rome", "memit", "full"):
        assert outcome.edited_layers, "a windowed method names the layers it edited"
    # Every history row carries the documented keys.
    assert outcome.history and all(set(spec.history_keys) <= set(row) for row in outcome.history)


def _write_edits(path: Path) -> Path:
    rows = [{"subject": s, "prompt": p, "target_new": o, "target_true": "x", "paraphrases": [f"In short, {p.lower()}"]}
            for i, (s, p, o) in enumerate((f[2], f[0], n) for f, n in zip(FACTS, ["Tim Cook", "Paris", "Andy Jassy",
                                                                               "Berlin"]))]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _reload(method: str, model_dir: Path, run_dir: Path):
    """The edited model, rebuilt from the base model and what the run saved."""
    info = resolve(str(model_dir))
    model, tok = load(info, torch.device("cpu"), torch.float32)
    artifact = run_dir / ARTIFACT[method]
    if METHODS[method].algorithm == "lora":
        from peft import PeftModel

        return PeftModel.from_pretrained(model, artifact), tok
    if method == "ptuning":
        from peft import PeftModel

        from chronosweep.editing.methods.ptuning.method import VirtualPromptLM

        return VirtualPromptLM(PeftModel.from_pretrained(model, artifact)), tok
    from safetensors.torch import load_file

    missing, unexpected = model.load_state_dict(load_file(artifact), strict=False)
    assert not unexpected
    return model, tok


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", list(METHODS))
def test_a_run_writes_every_file_and_its_artifact_reloads(method, arch, request, tmp_path, data_root, monkeypatch):
    monkeypatch.setenv("CHRONOSWEEP_CACHE", str(tmp_path / "cache"))
    model_dir = request.getfixturevalue(arch)
    edits = _write_edits(tmp_path / "edits.jsonl")
    cfg = _config(model_dir, method, [f"data.name={edits}", f"data.root={data_root}", "data.locality_limit=4",
                                      "eval.max_new_tokens=4", "threads=1"])
    run_dir = tmp_path / "run"
    metrics = run_trial(cfg, run_dir, progress=lambda _: None)
    for name in ("config.yaml", "metrics.json", "predictions.jsonl", "history.jsonl", ARTIFACT[method]):
        assert (run_dir / name).exists(), name
    assert json.loads((run_dir / "metrics.json").read_text())["edited_modules"] == metrics["edited_modules"]
    assert metrics["scoring_version"] >= 2 and metrics["n_edits"] == 4
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    assert history == metrics["history"]
    # What was saved reproduces the edited model: greedy continuations equal the run's post-edit outputs.
    model, tok = _reload(method, model_dir, run_dir)
    from chronosweep.evaluation.generation import greedy_continuations

    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    probes = [r for r in rows if r["probe"] in ("rewrite", "paraphrase")]
    again = greedy_continuations(model, tok, [r["prompt"] for r in probes], 4, 8, torch.device("cpu"))
    assert again == [r["post"] for r in probes]


def test_every_method_has_a_shipped_trial_config_that_validates():
    seen = set()
    for path in sorted((ROOT / "configs" / "trials").glob("*.yaml")):
        cfg = load_config(path)
        seen.add(cfg.method)
    assert seen == set(METHODS)


# --- pinned behaviour ------------------------------------------------------------------------------------------

# Measured on the tiny fact LLaMA (tests/tiny_facts.py) with SETTINGS and the four edits of _write_edits, one
# thread, fp32. A change in any method's behaviour moves these; update them only for an intended change.
# Issue 11 made `rome` and `memit` the published algorithms (KL term at the subject token, ROME's/MEMIT's context
# templates, no preserve constraints) and re-pinned them; the values they had before are chronosweep's variants',
# which rome-preserve and memit-preserve reproduce unchanged.
# One set per kind of host: the fixture model is trained from scratch, and the last bits of MKL's and ATen's fp32
# kernels differ between CPUs (AVX2 / AVX-512 / AMX code paths), which the tiny training amplifies into other
# argmaxes (the same code gave lora rewrite_acc 1.0 on one host and 0.75 on another). Each set reproduces exactly,
# run after run, on its host. A host whose features match a set's `features` must match that set; any other host
# must match one of them.
PINNED_SETS = [
    {"host": "the hosts of the sessions up to 2026-12-01 and their CI (features not recorded)", "features": None,
     "values": {
         "lora": {"rewrite_acc": 1.0, "rephrase_acc": 0.375, "locality_acc": 0.117, "final_loss": 0.6722},
         # Its locality KL keeps what plain LoRA loses on the same edits (0.398 against 0.117 locality_acc).
         "lora-local": {"rewrite_acc": 1.0, "rephrase_acc": 0.25, "locality_acc": 0.398, "final_loss": 0.3246},
         "ptuning": {"rewrite_acc": 0.5, "rephrase_acc": 0.25, "locality_acc": 0.4607, "final_loss": 1.2907},
         "full": {"rewrite_acc": 0.375, "rephrase_acc": 0.25, "locality_acc": 1.0, "final_loss": 2.3141},
         "freeze": {"rewrite_acc": 0.375, "rephrase_acc": 0.25, "locality_acc": 1.0, "final_loss": 1.942},
         "rome": {"rewrite_acc": 0.125, "rephrase_acc": 0.125, "locality_acc": 0.167, "final_loss": 6.0804},
         "rome-preserve": {"rewrite_acc": 0.25, "rephrase_acc": 0.125, "locality_acc": 0.0, "final_loss": 5.4328},
         "memit": {"rewrite_acc": 0.0, "rephrase_acc": 0.0, "locality_acc": 0.153, "final_loss": 8.542},
         "memit-preserve": {"rewrite_acc": 0.375, "rephrase_acc": 0.0, "locality_acc": 0.067, "final_loss": 8.3852},
     }},
    {"host": "Intel Xeon with AMX, 2 CPUs (2026-12-02)",
     "features": ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"),
     "values": {
         "lora": {"rewrite_acc": 0.75, "rephrase_acc": 0.5, "locality_acc": 0.117, "final_loss": 0.5095},
         # The locality KL again: 0.498 against plain LoRA's 0.117.
         "lora-local": {"rewrite_acc": 1.0, "rephrase_acc": 0.25, "locality_acc": 0.498, "final_loss": 0.4260},
         "ptuning": {"rewrite_acc": 0.5, "rephrase_acc": 0.25, "locality_acc": 0.4295, "final_loss": 1.2891},
         "full": {"rewrite_acc": 0.375, "rephrase_acc": 0.25, "locality_acc": 1.0, "final_loss": 2.3176},
         "freeze": {"rewrite_acc": 0.375, "rephrase_acc": 0.25, "locality_acc": 1.0, "final_loss": 1.9487},
         "rome": {"rewrite_acc": 0.125, "rephrase_acc": 0.125, "locality_acc": 0.242, "final_loss": 6.1192},
         "rome-preserve": {"rewrite_acc": 0.125, "rephrase_acc": 0.125, "locality_acc": 0.0, "final_loss": 5.6515},
         "memit": {"rewrite_acc": 0.125, "rephrase_acc": 0.0, "locality_acc": 0.103, "final_loss": 8.5235},
         "memit-preserve": {"rewrite_acc": 0.375, "rephrase_acc": 0.0, "locality_acc": 0.081, "final_loss": 8.3654},
     }},
]
PINNED_KEYS = ("rewrite_acc", "rephrase_acc", "locality_acc", "final_loss")


@pytest.mark.parametrize("method", list(METHODS))
def test_pinned_metrics_on_the_tiny_fact_model(method, fact_llama_dir, tmp_path, data_root, monkeypatch):
    monkeypatch.setenv("CHRONOSWEEP_CACHE", str(tmp_path / "cache"))
    edits = _write_edits(tmp_path / "edits.jsonl")
    cfg = _config(fact_llama_dir, method, [f"data.name={edits}", f"data.root={data_root}", "data.locality_limit=4",
                                           "eval.max_new_tokens=4", "threads=1", "save_artifacts=false"])
    metrics = run_trial(cfg, tmp_path / "run", progress=lambda _: None)
    rows = metrics["history"]
    losses = [r["loss"] for r in rows if "loss" in r]
    got = {k: metrics[k] for k in PINNED_KEYS[:3]}
    got["final_loss"] = losses[-1] if losses else None
    print(method, json.dumps(got))
    from chronosweep.trial.host import host

    features = tuple(host()["cpu_features"])
    own = [p for p in PINNED_SETS if p["features"] == features]
    candidates = own or PINNED_SETS

    def off(values: dict) -> list[str]:
        return [f"{k} {got[k]} != {w}" for k, w in values.items() if got[k] != pytest.approx(w, abs=0.02)]

    misses = {p["host"]: off(p["values"][method]) for p in candidates}
    assert any(not m for m in misses.values()), (method, got, misses)
