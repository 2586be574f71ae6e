"""ROME's options, and those of chronosweep's variant rome-preserve."""

from __future__ import annotations

from dataclasses import dataclass

from chronosweep.core.models import ModelInfo
from chronosweep.editing.locate_options import LocateOptions, arch_known
from chronosweep.editing.options import check_layer, opt


@dataclass
class RomeOptions(LocateOptions):
    layer: int = opt(5, "the rewritten layer (ROME/EasyEdit: 5 for GPT-J and the 7B LLaMA family; a preset gives "
                        "each model its own)")
    mom2_adjustment: bool = opt(True, "whiten the key with C^-1 (ROME's mom2_adjustment, on in the paper; EasyEdit's "
                                      "LLaMA settings turn it off); false uses the raw key and needs no statistics")

    def uses_stats(self) -> bool:
        return self.mom2_adjustment

    def check_model(self, where: str, info: ModelInfo, problems: list[str]) -> None:
        super().check_model(where, info, problems)
        if arch_known(info):
            check_layer(f"{where}.layer", self.layer, info, problems)


@dataclass
class RomePreserveOptions(RomeOptions):
    preserve_earlier: bool = opt(True, "keep each update off the keys of this trial's earlier edits (false: later "
                                       "edits of similar prompts overwrite earlier ones, as in ROME)")
    preserve_tail: bool = opt(True, "keep the update off the keys after the subject (the rest of the prompt, the "
                                    "target tokens), so only the subject token changes")
