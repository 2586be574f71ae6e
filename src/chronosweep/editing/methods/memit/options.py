"""MEMIT's options, and those of chronosweep's variant memit-preserve."""

from __future__ import annotations

from dataclasses import dataclass

from chronosweep.core.models import ModelInfo
from chronosweep.editing.locate_options import LocateOptions, arch_known
from chronosweep.editing.options import check_layer, opt


@dataclass
class MemitOptions(LocateOptions):
    layers: list[int] = opt(help="rewritten layers, ascending; targets are optimised after the last (MEMIT/EasyEdit: "
                                 "4-8 for the 7B LLaMA family, 3-8 for GPT-J)",
                            factory=lambda: [4, 5, 6, 7, 8])
    mom2_update_weight: float = opt(15000.0, "lambda of the lambda*C regulariser (MEMIT: 15000 for GPT-J and 7B "
                                             "models): how many corpus tokens' worth of \"leave the keys alone\" each "
                                             "layer's update is weighed against; smaller moves the weights further, "
                                             "and small models need far less (see the presets)")
    batch_size: int = opt(32, "edits whose target values are optimised together (memory bound, not a change in "
                              "results)")
    # MEMIT's own templates: five 10-token texts, one from each seed word.
    context_templates: list[list[int]] = opt(factory=lambda: [[10, 5]])

    def check(self, where: str, problems: list[str]) -> None:
        super().check(where, problems)
        if not self.layers:
            problems.append(f"{where}.layers: must name at least one layer")
        elif any(b <= a for a, b in zip(self.layers, self.layers[1:])):
            problems.append(f"{where}.layers: must be strictly ascending, got {self.layers}")
        if self.mom2_update_weight <= 0:
            problems.append(f"{where}.mom2_update_weight: must be > 0, got {self.mom2_update_weight}")
        if self.batch_size < 1:
            problems.append(f"{where}.batch_size: must be >= 1, got {self.batch_size}")

    def check_model(self, where: str, info: ModelInfo, problems: list[str]) -> None:
        super().check_model(where, info, problems)
        if arch_known(info):
            for i, layer in enumerate(self.layers or []):
                check_layer(f"{where}.layers[{i}]", layer, info, problems)


@dataclass
class MemitPreserveOptions(MemitOptions):
    preserve_tail: bool = opt(True, "add the keys after the subject (the rest of the prompt, the target tokens) to "
                                    "the least-squares problem with a zero target, so the update leaves them as the "
                                    "target optimisation saw them")
