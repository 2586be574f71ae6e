"""The one interface every editing method implements, and what it is handed and returns."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from chronosweep.core.archs import arch_for
from chronosweep.core.models import ModelInfo
from chronosweep.core.requests import EditRequest
from chronosweep.editing.runtime import Runtime


@dataclass
class EditContext:
    runtime: Runtime
    info: ModelInfo
    device: torch.device
    dtype: torch.dtype
    # Where the method may write artifacts (adapter, prompt encoder); None when nothing is kept.
    run_dir: Path | None
    # Long-lived cache shared across trials (ROME/MEMIT statistics, converted models).
    cache_dir: Path
    # Called after each training epoch with that epoch's metrics (Ray Tune reports these for ASHA).
    on_epoch: Callable[[int, dict], None] | None = None
    # Every evaluation prompt other than the edit prompts themselves (paraphrase, locality, neighborhood, multi-hop
    # probes ...): nothing a method trains on, retain prompts included, may overlap one (editing.retain.HeldOut).
    held_out: tuple[str, ...] = ()
    # Subjects of the locality and neighbourhood probes: no sampled or file retain text may name one.
    held_out_subjects: tuple[str, ...] = ()


@dataclass
class EditOutcome:
    # The model to evaluate: the same object edited in place, or a wrapper (PeftModel) around it.
    model: torch.nn.Module
    # Parameter values the method changes: trained weights for gradient methods, rewritten matrices for ROME/MEMIT.
    trainable_params: int
    # One dict per epoch (gradient methods) or per edit (ROME/MEMIT): loss and whatever else the method tracks.
    history: list[dict] = field(default_factory=list)
    # Writes the method's artifact (a PEFT adapter directory, ...) under the given folder.
    save: Callable[[Path], None] | None = None
    # Module paths (from the unwrapped model, e.g. model.layers.12.mlp.down_proj) whose parameters the method
    # changed or wrapped, and the decoder layers they sit in, ascending.
    edited_modules: list[str] = field(default_factory=list)
    edited_layers: list[int] = field(default_factory=list)
    # Takes off what the method put around the base model (a peft adapter, a prompt encoder) and returns the base
    # model with its own modules back; None for methods that change weights in place.
    detach: Callable[[], torch.nn.Module] | None = None
    # Whatever a later resume() of the same method continues from (ROME's earlier keys ...).
    state: Any = None
    # What the training ran on and how it ended (gradient methods): epochs run, examples and retain prompts by
    # source, what was left out as overlapping an evaluation probe; metrics.json's "training".
    training: dict = field(default_factory=dict)
    # Every text trained on (edit prompts with their contexts, retain prompts): the run dir's training_prompts.json.
    training_prompts: dict | None = None


class EditMethod(Protocol):
    """What every method implements. Two optional methods serve the edit protocols (trial.protocols):

    - resume(previous, tokenizer, requests, options, ctx) -> EditOutcome: apply more requests on top of an earlier
      outcome of the same instance (sequential editing); without it, edit(previous.model, ...) is called, which is
      right for methods that change the weights in place;
    - changes(model, options, ctx) -> list[str]: names of the parameters edit() changes in place, so an exact
      restore copies only those; without it, every parameter is copied once and the copies are cut down to what
      the first edit changed.
    """

    def edit(self, model: torch.nn.Module, tokenizer: Any, requests: list[EditRequest], options: Any,
             ctx: EditContext) -> EditOutcome:
        """Apply all requests to model and return the model to evaluate."""


# peft puts the wrapped model under base_model.model. and LoRA's own weights inside the module it wraps.
_PEFT_PREFIX = re.compile(r"^(base_model\.model\.)+")
_ADAPTER_PART = re.compile(r"\.(lora_[A-Za-z_]+|base_layer)(\.|$).*$")


def module_path(param_name: str) -> str:
    """The path of the module that holds (or, for an adapter, wraps) a parameter, in the unwrapped model."""
    path = _PEFT_PREFIX.sub("", param_name)
    wrapped = _ADAPTER_PART.sub("", path)
    return wrapped if wrapped != path else path.rsplit(".", 1)[0]


def layer_of(path: str, info: ModelInfo) -> int | None:
    """The decoder layer a module path lies in, or None (embeddings, final norm, prompt encoder)."""
    prefix = re.escape(arch_for(info.model_type).layers)
    match = re.match(rf"^{prefix}\.(\d+)(\.|$)", path)
    return int(match.group(1)) if match else None


def edited(param_names, info: ModelInfo) -> tuple[list[str], list[int]]:
    """(edited_modules, edited_layers) from the names of the parameters a method changed or added."""
    modules = sorted(dict.fromkeys(module_path(n) for n in param_names))
    layers = sorted({layer for m in modules if (layer := layer_of(m, info)) is not None})
    return modules, layers


def save_params(model: torch.nn.Module, names: list[str]) -> Callable[[Path], None]:
    """A save() writing the named parameters (the ones an in-place method changed) to trained_params.safetensors.

    model.load_state_dict(safetensors.torch.load_file(path), strict=False) puts them back over the base model.
    """

    def save(folder: Path) -> None:
        from safetensors.torch import save_file

        params = dict(model.named_parameters())
        save_file({n: params[n].detach().contiguous().cpu() for n in names}, str(folder / "trained_params.safetensors"))

    return save
