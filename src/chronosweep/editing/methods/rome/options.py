"""ROME's options."""

from __future__ import annotations

from dataclasses import dataclass

from chronosweep.core.models import ModelInfo
from chronosweep.editing.locate_options import LocateOptions, check_arch
from chronosweep.editing.options import check_layer, opt


@dataclass
class RomeOptions(LocateOptions):
    layer: int = opt(5, "the rewritten layer (5 edits SmolLM2-135M well: ROME's 7B setting)")
    mom2_adjustment: bool = opt(True, "whiten the key with C^-1 (ROME's mom2_adjustment); false uses the raw key "
                                      "and needs no statistics")
    preserve_earlier: bool = opt(True, "keep each update off the keys of this trial's earlier edits; false is plain "
                                       "ROME, where later edits of similar prompts overwrite earlier ones (with "
                                       "preserve_tail false too, this is the published method)")

    def check_model(self, where: str, info: ModelInfo, problems: list[str]) -> None:
        if check_arch(where, info, problems):
            check_layer(f"{where}.layer", self.layer, info, problems)
