"""Full and freeze tuning train exactly the parameters they claim, and leave the rest bit-identical."""

from __future__ import annotations

import pytest
import torch

from chronosweep.editing.registry import get_method
from tests.trainkit import load_tiny, make_ctx, tiny_requests

# Weight decay moves every trained element, even embedding rows no edit uses, so "changed" means "trained".
TRAIN = ["epochs=2", "lr=1e-3", "batch_size=3", "weight_decay=0.1"]


def run(model_dir, method: str, overrides: list[str], shared: list[str] = ()):
    cfg, ctx = make_ctx(model_dir, [f"method={method}", *shared, *(f"{method}.{o}" for o in [*TRAIN, *overrides])])
    torch.manual_seed(0)
    model, tokenizer = load_tiny(ctx)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    outcome = get_method(method).edit(model, tokenizer, tiny_requests(), cfg.options, ctx)
    after = dict(outcome.model.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    changed_elements = sum(int((before[n] != after[n]).sum()) for n in before)
    return outcome, changed, changed_elements, model


def expected_names(model, layers, part: str) -> set[str]:
    names = {n for n, _ in model.named_parameters()}
    prefixes = tuple(f"model.layers.{i}.{part}" for i in layers)
    return {n for n in names if n.startswith(prefixes)}


@pytest.mark.parametrize("modules, part", [("mlp", "mlp."), ("all", "")])
def test_freeze_trains_only_its_window(tiny_model_dir, modules, part):
    outcome, changed, elements, model = run(tiny_model_dir, "freeze", ["layer_start=1", "layer_width=2", f"modules={modules}"])
    assert changed == expected_names(model, [1, 2], part)
    assert elements == outcome.trainable_params
    assert outcome.trainable_params == sum(p.numel() for n, p in model.named_parameters() if n in changed)
    assert outcome.history[-1]["loss"] < outcome.history[0]["loss"]


def test_full_trains_every_weight_and_counts_the_tied_head_once(tiny_model_dir):
    outcome, changed, elements, model = run(tiny_model_dir, "full", [])
    names = {n for n, _ in model.named_parameters()}
    assert changed == names and "model.embed_tokens.weight" in names
    assert model.lm_head.weight is model.model.embed_tokens.weight
    total = sum(p.numel() for p in model.parameters())
    assert elements == outcome.trainable_params == total
    assert outcome.history[-1]["loss"] < outcome.history[0]["loss"]


def test_full_with_a_window_trains_that_window_on_deepspeed(tiny_model_dir, tmp_path):
    outcome, changed, elements, model = run(tiny_model_dir, "full", ["layer_start=2", "layer_width=1"],
                                            shared=["engine=deepspeed", "deepspeed.zero_stage=2"])
    assert changed == expected_names(model, [2], "")
    assert elements == outcome.trainable_params
    outcome.save(tmp_path)
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "trained_params.safetensors")
    assert set(saved) == changed
    params = dict(model.named_parameters())
    assert all(torch.equal(saved[n], params[n].detach()) for n in saved)


@pytest.mark.parametrize("method", ["full", "freeze"])
def test_windows_past_the_last_layer_are_refused(tiny_model_dir, method):
    cfg, ctx = make_ctx(tiny_model_dir, [f"method={method}", f"{method}.layer_start=3", f"{method}.layer_width=2"])
    problems: list[str] = []
    cfg.options.check_model(method, ctx.info, problems)
    assert problems and "window 3..4 runs past the last layer (3)" in problems[0]
