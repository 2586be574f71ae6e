"""Full fine-tuning and freeze tuning, as LLaMA-Factory defines them.

Full: every weight is trained, or every weight of a window of layers. Freeze: only a window of
decoder layers is trainable, either their MLPs or all their parameters (LLaMA-Factory's
freeze_trainable_layers / freeze_trainable_modules, with the window placed anywhere rather than
only at the top or bottom); everything else is frozen. Both edit the model in place.
"""

from __future__ import annotations

from typing import Literal

from chronosweep.core.archs import arch_for, decoder_layers, get_path
from chronosweep.core.models import ModelInfo
from chronosweep.editing.base import EditContext, EditOutcome, edited, save_params
from chronosweep.editing.methods.finetune.options import FreezeOptions, FullOptions
from chronosweep.editing.training import train_on_edits


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
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    trained = train_on_edits(model, tokenizer, requests, options, ctx, desc=desc, prefix_cache=options.prefix_cache)

    modules, layers = edited(names, ctx.info)
    return EditOutcome(model=model, trainable_params=trainable, history=trained.history, save=save_params(model, names),
                       edited_modules=modules, edited_layers=layers, training=trained.summary,
                       training_prompts=trained.prompts)


class Full:
    def edit(self, model, tokenizer, requests, options: FullOptions, ctx: EditContext) -> EditOutcome:
        layers = options.window_layers()
        trainable = set_trainable(model, ctx.info, layers, "everything" if layers is None else "all")
        return _train_in_place(model, tokenizer, requests, options, ctx, trainable, desc="full")


class Freeze:
    def edit(self, model, tokenizer, requests, options: FreezeOptions, ctx: EditContext) -> EditOutcome:
        trainable = set_trainable(model, ctx.info, options.window_layers(), options.modules)
        return _train_in_place(model, tokenizer, requests, options, ctx, trainable, desc="freeze")
