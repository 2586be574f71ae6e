"""The key-statistics penalty: MEMIT's lambda*C regulariser, for the gradient methods.

MEMIT keeps an update from moving a layer's output on ordinary inputs by weighing it against C = E[k k^T], the
second moment of that layer's inputs over a corpus: an update dW changes the output on an input k by dW k, whose
mean square over the corpus is tr(dW C dW^T). The term here is that, for every trained linear module of the
decoder, relative to the size of the module's own output, tr(W C W^T), so a wide and a narrow module weigh alike;
it is the mean over the modules. With LoRA, dW = s B A and the term costs O(r d^2) per module and step, with no
forward pass; the locality KL needs one over its retain prompts in every step. Full and freeze tuning keep a copy of
the weights they train (dW = W - W0).

C is estimated once per (model, corpus, size, module) on the unedited model and cached beside ROME/MEMIT's key
statistics (editing.stats), whose corpus it shares.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch

from chronosweep.core.models import file_lock
from chronosweep.editing.base import module_path
from chronosweep.editing.stats import accumulate_moments, atomic_save, corpus_tokens, drop_stale_temps, read_cached, stats_dir


@dataclass
class _Term:
    name: str
    mom2: torch.Tensor  # (in, in)
    norm: float  # tr(W C W^T) of the unedited weight
    lora: tuple | None  # (A weight (r, in), B weight (out, r), scaling), or None for a plain trained weight
    weight: torch.Tensor | None = None  # a plain trained weight
    start: torch.Tensor | None = None  # its unedited copy


def _lora_layers(model):
    """(name, module) of the peft LoRA layers with an active adapter."""
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:  # pragma: no cover - peft is a dependency
        return []
    out = []
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer) and getattr(module, "active_adapters", None):
            adapter = module.active_adapters[0]
            if adapter in module.lora_A:
                out.append((name, module, adapter))
    return out


def _plain_trained(model):
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and m.weight.requires_grad and not name.split(".")[-1].startswith("lora_")]


def _clean(name: str) -> str:
    """The module's path in the unwrapped model (without peft's prefix)."""
    return module_path(f"{name}.weight")


def input_moments(model, tokenizer, modules: dict[str, torch.nn.Module], *, corpus: str, samples: int,
                  fingerprint: str, cache_dir: Path, device) -> dict[str, torch.Tensor]:
    """E[x x^T] of each module's input over the corpus (cached per module), in one pass that stops once every missing
    module has read its input."""
    folder = stats_dir(cache_dir, fingerprint, corpus, samples)
    paths = {name: folder / f"input-{_clean(name)}.pt" for name in modules}
    out: dict[str, torch.Tensor] = {}
    for name, path in paths.items():
        blob = read_cached(path) if path.exists() else None
        if isinstance(blob, dict) and isinstance(blob.get("mom2"), torch.Tensor):
            out[name] = blob["mom2"]
    missing = [n for n in modules if n not in out]
    if not missing:
        return out
    with file_lock(folder / "inputs.lock"):
        for name in missing:
            drop_stale_temps(paths[name])
        tokens = corpus_tokens(model, tokenizer, corpus, samples, folder, device)
        moments = accumulate_moments(model, {n: modules[n] for n in missing}, tokens, device,
                                     desc="key statistics (trained modules)", whole=True)
        for name in missing:
            out[name] = moments[name]
            atomic_save({"mom2": out[name], "count": len(tokens), "module": _clean(name), "corpus": corpus,
                         "fingerprint": fingerprint}, paths[name])
    return out


class KeyPenalty:
    """tr(dW C dW^T) / tr(W C W^T), averaged over the trained linear modules."""

    def __init__(self, model, tokenizer, *, corpus: str, samples: int, fingerprint: str, cache_dir: Path, device):
        loras = _lora_layers(model)
        plain = [] if loras else _plain_trained(model)
        if not loras and not plain:
            raise ValueError("key_weight: the method trains no linear module of the decoder (P-tuning trains a "
                             "prompt encoder); set key_weight to 0")
        wrapped = {name: m for name, m, _ in loras} if loras else dict(plain)
        was_training = model.training
        model.eval()
        try:
            # With the adapter off (LoRA), or before the first step (full, freeze): the unedited model's inputs.
            disable = model.disable_adapter() if loras and hasattr(model, "disable_adapter") else contextlib.nullcontext()
            with disable:
                moments = input_moments(model, tokenizer, wrapped, corpus=corpus, samples=samples,
                                        fingerprint=fingerprint, cache_dir=cache_dir, device=device)
        finally:
            model.train(was_training)
        adapters = {n: a for n, _, a in loras}
        self.terms: list[_Term] = []
        for name, module in wrapped.items():
            c = moments[name].to(device)
            if loras:
                adapter = adapters[name]
                w = module.get_base_layer().weight
                lora = (module.lora_A[adapter].weight, module.lora_B[adapter].weight, module.scaling[adapter])
                term = _Term(name, c, 0.0, lora)
            else:
                w = module.weight
                term = _Term(name, c, 0.0, None, weight=w, start=w.detach().clone())
            with torch.no_grad():
                wd = w.detach().float()
                term.norm = float(((wd @ c) * wd).sum())
            self.terms.append(term)

    @property
    def modules(self) -> list[str]:
        return [_clean(t.name) for t in self.terms]

    def __call__(self) -> torch.Tensor:
        total = 0.0
        for t in self.terms:
            if t.lora is not None:
                a, b, scale = t.lora
                inner = a @ t.mom2 @ a.T  # (r, r)
                change = scale * scale * ((b @ inner) * b).sum()
            else:
                d = t.weight - t.start
                change = ((d @ t.mom2) * d).sum()
            total = total + change / t.norm
        return total / len(self.terms)
