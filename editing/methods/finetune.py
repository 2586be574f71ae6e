"""Full fine-tuning and freeze tuning, as LLaMA-Factory defines them.

Full: every weight is trained, or every weight of a window of layers. Freeze: only a window of
decoder layers is trainable, either their MLPs or all their parameters (LLaMA-Factory's
freeze_trainable_layers / freeze_trainable_modules, with the window placed anywhere rather than
only at the top or bottom); everything else is frozen. Both edit the model in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from chronosweep.archs import arch_for, decoder_layers, get_path
from chronosweep.models import ModelInfo
from editing.base import EditContext, EditOutcome
from editing.training import train_on_edits
from editing.window import check_window, window_layers


def _check_training(where: str, options, problems: list[str]) -> None:
    for name in ("layer_width", "epochs", "batch_size"):
        if getattr(options, name) < 1:
            problems.append(f"{where}.{name}: must be >= 1, got {getattr(options, name)}")
    if options.lr <= 0:
        problems.append(f"{where}.lr: must be > 0, got {options.lr}")
    if options.weight_decay < 0:
        problems.append(f"{where}.weight_decay: must be >= 0, got {options.weight_decay}")


@dataclass
class FullOptions:
    # null trains every weight (embeddings, tied head and final norm included); a start trains every
    # parameter of layers start..start+width-1 only.
    layer_start: int | None = None
    layer_width: int = 6
    # Every weight moves at once: a small rate and few epochs, or the model forgets what it knew.
    # On the default model (10 DyKnow edits) 5e-5 x 5 epochs reached reliability 0.9, locality_acc 0.82;
    # 2e-5 gave 0.6 and 0.96.
    lr: float = 5e-5
    epochs: int = 5
    batch_size: int = 8
    weight_decay: float = 0.0

    def check(self, where: str, problems: list[str]) -> None:
        _check_training(where, self, problems)


@dataclass
class FreezeOptions:
    # The window of trainable layers; null makes every layer's chosen modules trainable.
    layer_start: int | None = 12
    layer_width: int = 6
    # mlp: the window's MLP blocks only; all: every parameter of the window's layers.
    modules: Literal["mlp", "all"] = "mlp"
    # Default model, MLPs of layers 12-17, 10 edits: 3e-4 reached reliability 0.9, locality_acc 0.81;
    # 1e-4 gave 0.5 and 0.90.
    lr: float = 3e-4
    epochs: int = 10
    batch_size: int = 8
    weight_decay: float = 0.0

    def check(self, where: str, problems: list[str]) -> None:
        _check_training(where, self, problems)


def set_trainable(model, info: ModelInfo, layers: list[int] | None, modules: Literal["mlp", "all", "everything"]) -> int:
    """Freeze everything, then unfreeze the chosen part; returns the number of trainable parameters.

    layers None means every decoder layer. "everything" unfreezes the whole model.
    """
    for p in model.parameters():
        p.requires_grad_(modules == "everything")
    if modules != "everything":
        blocks = decoder_layers(model, info.model_type)
        mlp_path = arch_for(info.model_type).mlp_module
        for i in layers if layers is not None else range(len(blocks)):
            part = blocks[i] if modules == "all" else get_path(blocks[i], mlp_path)
            for p in part.parameters():
                p.requires_grad_(True)
    # parameters() yields a tied embedding/head once, so it is counted once.
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _train_in_place(model, tokenizer, requests, options, ctx: EditContext, trainable: int, desc: str) -> EditOutcome:
    history = train_on_edits(model, tokenizer, requests, lr=options.lr, epochs=options.epochs,
                             batch_size=options.batch_size, weight_decay=options.weight_decay, ctx=ctx, desc=desc)
    names = [n for n, p in model.named_parameters() if p.requires_grad]

    def save(folder: Path) -> None:
        # Only what was trained; model.load_state_dict(load_file(path), strict=False) puts it back.
        from safetensors.torch import save_file

        params = dict(model.named_parameters())
        save_file({n: params[n].detach().contiguous().cpu() for n in names}, str(folder / "trained_params.safetensors"))

    return EditOutcome(model=model, trainable_params=trainable, history=history, save=save)


class Full:
    name = "full"
    Options = FullOptions

    def check(self, options: FullOptions, info: ModelInfo, problems: list[str]) -> None:
        check_window(self.name, options.layer_start, options.layer_width, info, problems)

    def edit(self, model, tokenizer, requests, options: FullOptions, ctx: EditContext) -> EditOutcome:
        layers = window_layers(options.layer_start, options.layer_width, ctx.info)
        trainable = set_trainable(model, ctx.info, layers, "everything" if layers is None else "all")
        return _train_in_place(model, tokenizer, requests, options, ctx, trainable, desc="full")


class Freeze:
    name = "freeze"
    Options = FreezeOptions

    def check(self, options: FreezeOptions, info: ModelInfo, problems: list[str]) -> None:
        check_window(self.name, options.layer_start, options.layer_width, info, problems)

    def edit(self, model, tokenizer, requests, options: FreezeOptions, ctx: EditContext) -> EditOutcome:
        layers = window_layers(options.layer_start, options.layer_width, ctx.info)
        trainable = set_trainable(model, ctx.info, layers, options.modules)
        return _train_in_place(model, tokenizer, requests, options, ctx, trainable, desc="freeze")

