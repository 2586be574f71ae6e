"""What every method's options share: validation hooks, the training knobs of the gradient methods, layer windows.

Options classes are plain dataclasses with no torch import, so a config is validated before any model library
loads. ``check`` looks at the options alone; ``check_model`` at the options against the model's shape. Help text
lives in each field's metadata (``opt(default, "help")``); docs/methods.md's option tables are generated from it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

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

    def check_environment(self, where: str, problems: list[str]) -> None:
        """Append what this machine lacks for these options (an optional package ...). Checked where the trial
        runs, before its model loads: a sweep's driver, or a dry run sizing a cluster, may lack what workers have."""


def at_least(where: str, obj, names: tuple[str, ...], low: float, problems: list[str], strict: bool = False) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is None:
            continue
        if value < low or (strict and value == low):
            problems.append(f"{where}.{name}: must be {'>' if strict else '>='} {low:g}, got {value}")


# ROME's KL prompt: the default subject retain prompt ("{}" is the subject).
ROME_TEMPLATE = "{} is a"
# Other relations an edited subject may have (a country, a company, a person, an organisation), for
# retain_templates. On 20 DyKnow edits these raised locality_acc from 0.79 to 0.89 but cut generalization from 0.47
# to 0.30: "The capital of Italy is" is too close to the paraphrase "The President of Italy is" (docs/benchmarks.md).
SUBJECT_TEMPLATES = [ROME_TEMPLATE, "{} is known for", "{} is located in", "The capital of {} is",
                     "The official language of {} is", "{} is headquartered in", "{} was founded in", "{} was born in",
                     "{} is a member of", "The history of {}"]


@dataclass
class TrainingOptions(Options):
    """The optimiser loop of the gradient methods (LoRA, P-tuning, full and freeze tuning).

    Besides lr/epochs/batch: a KL term that keeps the unedited model's next-token distributions on retain prompts
    (locality), extra training contexts per edit (generalisation) and early stopping (cost). All are off by default,
    so a config without them trains exactly as before.
    """

    lr: float = opt(1e-3, "AdamW learning rate")
    epochs: int = opt(10, "passes over the trial's edits (at most, with early stopping)")
    batch_size: int = opt(8, "edits per optimiser step (all edits train together: batch editing)")
    weight_decay: float = opt(0.0, "AdamW weight decay")
    # --- locality: KL(unedited || edited) on retain prompts
    kl_weight: float = opt(0.0, "weight of the KL term between the unedited and the edited model's next-token "
                                "distributions on retain prompts; 0 turns the term (and the retain prompts) off")
    kl_reference: Literal["auto", "live", "once"] = opt("auto", "where the unedited distributions come from: live "
                                                        "(adapter methods: the adapter switched off in every step), "
                                                        "once (read before training and kept: positions x vocabulary "
                                                        "x 4 bytes, one forward pass less per step), auto (live for "
                                                        "adapters, once for full and freeze)")
    retain_per_step: int = opt(8, "retain prompts in every optimiser step (drawn in turn from the retain pool)")
    retain_templates: list[str] = opt(help="retain prompts about each edited subject under other relations, "
                                           "\"{}\" standing for the subject (default: ROME's KL prompt); the KL falls "
                                           "on their last position (chronosweep.editing.options.SUBJECT_TEMPLATES lists "
                                           "more relations)", factory=lambda: [ROME_TEMPLATE])
    retain_sampled: int = opt(0, "unrelated retain texts the unedited model samples once per trial (seeded, cached); "
                                 "the KL falls on every position")
    retain_sampled_tokens: int = opt(24, "tokens of each sampled retain text")
    retain_file: str | None = opt(None, "a UTF-8 text file of unrelated retain prompts, one per line (blank lines and "
                                        "lines starting with # are skipped); the KL falls on every position")
    # --- locality without retain passes: MEMIT's lambda*C term (editing.key_penalty)
    key_weight: float = opt(0.0, "weight of the key-statistics penalty: the mean over the trained linear modules of "
                                 "tr(dW C dW^T) / tr(W C W^T), C = E[x x^T] of the module's input over key_corpus "
                                 "(MEMIT's lambda*C regulariser; no forward pass per step); 0 turns it off")
    key_corpus: str = opt("model", "corpus of that C: \"model\" (text sampled from the unedited model, shared with "
                                   "ROME/MEMIT's statistics), \"hf:NAME[:CONFIG[:SPLIT]]\" or a local text file")
    key_samples: int = opt(20000, "tokens of key_corpus C is estimated over")
    # --- generalisation: more contexts per edit
    n_prefixes: int = opt(0, "context prefixes the unedited model generates once per trial (ROME's, seeded); every "
                             "edit also trains as '<prefix>. <prompt>' under each")
    prefix_tokens: int = opt(10, "tokens of each generated prefix")
    train_paraphrases: bool = opt(True, "also train every edit under the data's train_paraphrases (a field of its "
                                        "own; evaluation paraphrases are never trained on)")
    # --- cost: early stopping
    patience: int = opt(0, "stop once every edit's target tokens have been the teacher-forced argmax (on all its "
                           "training contexts) for this many epochs in a row; 0 never stops early")
    stop_loss: float | None = opt(None, "stop once an epoch's mean edit loss falls below this; null: no threshold")
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
        at_least(where, self, ("epochs", "batch_size", "retain_per_step", "retain_sampled_tokens", "prefix_tokens",
                               "history_per_edit"), 1, problems)
        at_least(where, self, ("key_samples",), 1, problems)
        at_least(where, self, ("weight_decay", "kl_weight", "key_weight", "retain_sampled", "n_prefixes", "patience",
                               "history_weight", "history_holders", "history_years"), 0, problems)
        at_least(where, self, ("stop_loss",), 0, problems, strict=True)
        for i, template in enumerate(self.retain_templates):
            if template.count("{}") != 1 or not template.replace("{}", "").strip():
                problems.append(f"{where}.retain_templates[{i}]: {template!r} must hold one \"{{}}\" (the subject) "
                                "and some other words")
        if self.retain_file is not None:
            check_text_file(f"{where}.retain_file", self.retain_file, problems)
        if self.key_weight > 0:
            from chronosweep.editing.locate_options import check_corpus

            check_corpus(where, self.key_corpus, problems, "key_corpus")
        if self.kl_weight > 0 and not (self.retain_templates or self.retain_sampled or self.retain_file):
            problems.append(f"{where}.kl_weight: {self.kl_weight:g} needs retain prompts: set retain_templates, "
                            "retain_sampled or retain_file")


def check_text_file(where: str, path: str, problems: list[str]) -> None:
    try:
        lines = read_lines(path)
    except FileNotFoundError:
        problems.append(f"{where}: {path}: no such file")
    except (OSError, UnicodeDecodeError) as err:
        problems.append(f"{where}: {path}: not a readable UTF-8 text file ({err})")
    else:
        if not lines:
            problems.append(f"{where}: {path}: holds no prompt (only blank or # lines)")


def read_lines(path: str) -> list[str]:
    """The prompts of a text file: one per line, stripped; blank lines and # comments skipped."""
    text = Path(path).expanduser().read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


@dataclass
class LayerWindow(Options):
    """A window of decoder layers: its first layer and width (layer_start null: every layer)."""

    layer_start: int | None = opt(12, "first layer of the window; null means every layer")
    layer_width: int = opt(6, "layers in the window")
    prefix_cache: bool = opt(True, "compute the hidden states entering the window's first layer once per training "
                                   "text and run only the window and the layers above it in every step (nothing "
                                   "below the window trains, so they cannot change); false runs every layer")

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

