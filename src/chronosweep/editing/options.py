"""What every method's options share: validation hooks, the training knobs of the gradient methods, layer windows.

Options classes are plain dataclasses with no torch import, so a config is validated before any model library
loads. ``check`` looks at the options alone; ``check_model`` at the options against the model's shape. Help text
lives in each field's metadata (``opt(default, "help")``); docs/methods.md's option tables are generated from it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from chronosweep.core.models import ModelInfo


def opt(default: Any = dataclasses.MISSING, help: str = "", *, factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with help text."""
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def help_of(cls: type, name: str) -> str:
    """A field's help text; a subclass that only changes a default inherits its base class's text."""
    for klass in cls.__mro__:
        fields = getattr(klass, "__dataclass_fields__", {})
        if name in fields and fields[name].metadata.get("help"):
            return fields[name].metadata["help"]
    return ""


@dataclass
class Options:
    """Base of every method's options."""

    def check(self, where: str, problems: list[str]) -> None:
        """Append 'where.key: what' for values that cannot work whatever the model."""

    def check_model(self, where: str, info: ModelInfo, problems: list[str]) -> None:
        """Append problems of these options on this model (layers that do not exist ...)."""


def at_least(where: str, obj, names: tuple[str, ...], low: float, problems: list[str], strict: bool = False) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is None:
            continue
        if value < low or (strict and value == low):
            problems.append(f"{where}.{name}: must be {'>' if strict else '>='} {low:g}, got {value}")


@dataclass
class TrainingOptions(Options):
    """The optimiser loop of the gradient methods (LoRA, P-tuning, full and freeze tuning)."""

    lr: float = opt(1e-3, "AdamW learning rate")
    epochs: int = opt(10, "passes over the trial's edits")
    batch_size: int = opt(8, "edits per optimiser step (all edits train together: batch editing)")
    weight_decay: float = opt(0.0, "AdamW weight decay")
    # History-preserving training (editing.history_training): time-qualified facts beside the update.
    history_weight: float = opt(0.0, "weight of the loss on time-qualified facts trained beside the edits (\"The "
                                     "President of Italy in 2007 was Giorgio Napolitano\", \"Since 2015, ... has "
                                     "been\" the new object), from each edit's history; 0 turns it off. Other "
                                     "wording and years than the evaluation's history probes")
    history_holders: int = opt(3, "past holders per edit the history facts cover, most recent first")
    history_years: int = opt(2, "training years per past holder (never the year its evaluation probe asks)")
    history_per_edit: int = opt(2, "history facts of each edit in every optimiser step (taken in turn)")

    def check(self, where: str, problems: list[str]) -> None:
        super().check(where, problems)
        at_least(where, self, ("lr",), 0, problems, strict=True)
        at_least(where, self, ("epochs", "batch_size", "history_per_edit"), 1, problems)
        at_least(where, self, ("weight_decay", "history_weight", "history_holders", "history_years"), 0, problems)


@dataclass
class LayerWindow(Options):
    """A window of decoder layers: its first layer and width (layer_start null: every layer)."""

    layer_start: int | None = opt(12, "first layer of the window; null means every layer")
    layer_width: int = opt(6, "layers in the window")

    def check(self, where: str, problems: list[str]) -> None:
        super().check(where, problems)
        at_least(where, self, ("layer_width",), 1, problems)

    def check_model(self, where: str, info: ModelInfo, problems: list[str]) -> None:
        super().check_model(where, info, problems)
        check_window(where, self.layer_start, self.layer_width, info, problems)

    def window_layers(self) -> list[int] | None:
        """Layer indices of the window; None (every layer) when layer_start is None."""
        if self.layer_start is None:
            return None
        return list(range(self.layer_start, self.layer_start + self.layer_width))


def check_window(where: str, start: int | None, width: int, info: ModelInfo, problems: list[str]) -> None:
    if start is None:
        return
    last = info.num_layers - 1
    if start < 0:
        problems.append(f"{where}.layer_start: must be >= 0, got {start}")
    elif start + width - 1 > last:
        problems.append(
            f"{where}.layer_start/layer_width: window {start}..{start + width - 1} runs past the last layer "
            f"({last}) of {info.name} ({info.num_layers} layers)"
        )


def check_layer(where: str, layer: int, info: ModelInfo, problems: list[str]) -> None:
    if not 0 <= layer < info.num_layers:
        problems.append(f"{where}: layer {layer} does not exist in {info.name} (layers 0..{info.num_layers - 1})")

