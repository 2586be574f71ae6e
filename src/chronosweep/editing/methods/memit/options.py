"""MEMIT's options."""

from __future__ import annotations

from dataclasses import dataclass

from chronosweep.core.models import ModelInfo
from chronosweep.editing.locate_options import LocateOptions, check_arch
from chronosweep.editing.options import check_layer, opt


@dataclass
class MemitOptions(LocateOptions):
    layers: list[int] = opt(help="rewritten layers, ascending; targets are optimised after the last ([4..8] is "
                                 "ROME/MEMIT's early-middle window, EasyEdit's LLaMA setting)",
                            factory=lambda: [4, 5, 6, 7, 8])
    # 500 is tuned for SmolLM2-135M (MLP width 1536) with the default corpus; a batch of 20 DyKnow edits lands
    # 0.35 / 0.85 / 0.90 at 2093 / 500 / 200 (200 visibly hurting locality). MEMIT/EasyEdit use 15000 for 7B LLaMA
    # (width 11008): scale it up with the model, and check reliability against locality on a few edits.
    mom2_update_weight: float = opt(500.0, "lambda of the lambda*C regulariser: how many corpus tokens' worth of "
                                           "\"leave the keys alone\" each layer's update is weighed against; "
                                           "smaller moves the weights further")
    batch_size: int = opt(32, "edits whose target values are optimised together (memory bound, not a change in "
                              "results)")
    # The batch's target optimisation is most of MEMIT's time and scales with the rows. On 20 DyKnow edits (SmolLM2,
    # 2 threads) 1 prefix took 38 s and landed 0.95, 2 took 66 s (0.95), 5 took 130 s (0.85).
    n_prefixes: int = 1

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
        if check_arch(where, info, problems):
            for i, layer in enumerate(self.layers or []):
                check_layer(f"{where}.layers[{i}]", layer, info, problems)
