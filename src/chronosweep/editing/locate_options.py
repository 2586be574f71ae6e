"""Options ROME and MEMIT share (no torch): the target-value optimisation, context templates, key statistics.

The defaults are the published methods' (kmeng01/rome, kmeng01/memit, EasyEdit's LLaMA-7B files); the values a
model needs (its layer, MEMIT's lambda) come from a preset (configs/presets/) chosen by the model.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from chronosweep.core.archs import UnsupportedArchitecture, arch_for
from chronosweep.core.models import ModelInfo
from chronosweep.editing.options import Options, at_least, opt


@dataclass
class LocateOptions(Options):
    v_num_grad_steps: int = opt(25, "Adam steps on the target value (ROME/EasyEdit: 25)")
    v_lr: float = opt(0.5, "learning rate of the target-value optimisation (ROME/EasyEdit: 0.5)")
    v_loss_layer: int | None = opt(None, "layer whose output the target loss reads (ROME/MEMIT's v_loss_layer); every "
                                         "published setting names the model's last layer, the only one supported; "
                                         "null means it")
    v_weight_decay: float = opt(1e-3, "penalty on ||delta|| / ||v_init||^2 (EasyEdit LLaMA: 1e-3; ROME/MEMIT GPT-J: 0.5)")
    clamp_norm_factor: float = opt(4.0, "||delta|| is kept below clamp_norm_factor * ||v_init||")
    kl_factor: float = opt(0.0625, "weight of KL(new || old) on the next-token distribution of \"{subject} is a\"")
    v_stop_loss: float = opt(0.05, "an edit's optimisation stops once its loss falls below this (ROME: 0.05)")
    context_templates: list[list[int]] = opt(
        help="contexts the keys and targets are averaged over besides the bare prompt, as [length, count] pairs: count "
             "texts the model samples itself (top-5, seeded, once per trial) from the words The/Therefore/Because/I/You, "
             "length tokens long with the seed word (ROME's context_template_length_params); each is put before the "
             "prompt as '<text>. <prompt>'",
        factory=lambda: [[5, 10], [10, 10]])
    stats_corpus: str = opt("model", "corpus of the key statistics C = E[k k^T]: \"model\" (text sampled from the "
                                     "model, offline), a text file (passages split on blank lines), or "
                                     "\"hf:NAME[:CONFIG[:SPLIT]]\" (needs network and the `datasets` package)")
    stats_samples: int = opt(20000, "tokens of that corpus the statistics are estimated over")

    # Whether this method reads the key statistics with these options (ROME without mom2_adjustment does not).
    def uses_stats(self) -> bool:
        return True

    def check(self, where: str, problems: list[str]) -> None:
        super().check(where, problems)
        at_least(where, self, ("v_num_grad_steps", "stats_samples"), 1, problems)
        at_least(where, self, ("v_lr", "clamp_norm_factor"), 0, problems, strict=True)
        at_least(where, self, ("v_weight_decay", "kl_factor", "v_stop_loss"), 0, problems)
        for i, pair in enumerate(self.context_templates or []):
            if len(pair) != 2:
                problems.append(f"{where}.context_templates[{i}]: expected [length, count], got {pair}")
            elif pair[0] < 2 or pair[1] < 0:
                problems.append(f"{where}.context_templates[{i}]: length must be >= 2 (the seed word and at least "
                                f"one token) and count >= 0, got {pair}")
        if self.uses_stats():
            check_corpus(where, self.stats_corpus, problems)

    def check_environment(self, where: str, problems: list[str]) -> None:
        super().check_environment(where, problems)
        if self.uses_stats() and self.stats_corpus.startswith("hf:") and importlib.util.find_spec("datasets") is None:
            problems.append(f"{where}.stats_corpus: {self.stats_corpus!r} needs the `datasets` package (pip install "
                            "datasets) and network access; use 'model' or a text file offline")

    def check_model(self, where: str, info: ModelInfo, problems: list[str]) -> None:
        super().check_model(where, info, problems)
        if check_arch(where, info, problems) and self.v_loss_layer is not None:
            last = info.num_layers - 1
            if self.v_loss_layer != last:
                problems.append(f"{where}.v_loss_layer: only the last layer ({last} of {info.name}) is supported, "
                                f"got {self.v_loss_layer}")


def check_corpus(where: str, corpus: str, problems: list[str], field: str = "stats_corpus") -> None:
    if corpus.startswith("hf:"):
        if len(corpus) <= 3:
            problems.append(f"{where}.{field}: 'hf:' needs a dataset name, e.g. hf:wikitext:wikitext-103-raw-v1")
    elif corpus != "model" and not Path(corpus).expanduser().is_file():
        problems.append(f"{where}.{field}: {corpus!r} is neither 'model', 'hf:NAME' nor an existing text file")


def arch_known(info: ModelInfo) -> bool:
    try:
        arch_for(info.model_type)
        return True
    except UnsupportedArchitecture:
        return False


def check_arch(where: str, info: ModelInfo, problems: list[str]) -> bool:
    try:
        arch_for(info.model_type)
        return True
    except UnsupportedArchitecture as err:
        problems.append(f"{where}: {err}")
        return False
