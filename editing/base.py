"""The one interface every editing method implements, and what it is handed and returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Protocol

import torch

from chronosweep.config import TrialConfig
from chronosweep.models import ModelInfo
from chronosweep.requests import EditRequest


@dataclass
class EditContext:
    config: TrialConfig
    info: ModelInfo
    device: torch.device
    dtype: torch.dtype
    # Where the method may write artifacts (adapter, prompt encoder); None when nothing is kept.
    run_dir: Path | None
    # Long-lived cache shared across trials (ROME/MEMIT statistics, converted models).
    cache_dir: Path
    # Called after each training epoch with that epoch's metrics (Ray Tune reports these for ASHA).
    on_epoch: Callable[[int, dict], None] | None = None


@dataclass
class EditOutcome:
    # The model to evaluate: the same object edited in place, or a wrapper (PeftModel) around it.
    model: torch.nn.Module
    # Parameters the method changes: trained weights for gradient methods, rewritten matrices for ROME/MEMIT.
    trainable_params: int
    # One dict per epoch (gradient methods) or per edit (ROME/MEMIT): loss and whatever else the method tracks.
    history: list[dict] = field(default_factory=list)
    # Writes the method's artifact (a PEFT adapter directory, ...) under the given folder.
    save: Callable[[Path], None] | None = None


class EditMethod(Protocol):
    name: ClassVar[str]
    Options: ClassVar[type]

    def check(self, options: Any, info: ModelInfo, problems: list[str]) -> None:
        """Append 'where: what' problems for options that cannot work on this model (layer windows...)."""

    def edit(self, model: torch.nn.Module, tokenizer: Any, requests: list[EditRequest], options: Any,
             ctx: EditContext) -> EditOutcome:
        """Apply all requests to model and return the model to evaluate."""
