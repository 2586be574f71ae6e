"""What a method needs to know about the run besides its own options: seed, target format, engine (no torch).

The trial config (chronosweep.trial.config) holds these keys at its top level and hands a Runtime to the method,
so a method never sees, or imports, the application's config.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from chronosweep.editing.options import opt


@dataclass
class DeepSpeedConfig:
    zero_stage: Literal[0, 1, 2, 3] = opt(0, "ZeRO stage")
    offload_optimizer: bool = opt(False, "optimizer states on the CPU (ZeRO 1-3)")
    offload_params: bool = opt(False, "parameters on the CPU (ZeRO 3)")
    config: str | None = opt(None, "a DeepSpeed JSON config file; its settings win over the fields above")

    def check(self, where: str, problems: list[str]) -> None:
        # DeepSpeed accepts these combinations and then ignores the offload without a word.
        if self.offload_optimizer and self.zero_stage == 0:
            problems.append(f"{where}.offload_optimizer: needs zero_stage 1, 2 or 3, got zero_stage 0")
        if self.offload_params and self.zero_stage != 3:
            problems.append(f"{where}.offload_params: needs zero_stage 3, got zero_stage {self.zero_stage}")
        if self.config is not None:
            try:
                data = json.loads(Path(self.config).expanduser().read_text())
            except FileNotFoundError:
                problems.append(f"{where}.config: {self.config}: no such file")
            except (OSError, json.JSONDecodeError) as err:
                problems.append(f"{where}.config: {self.config}: not a readable JSON file ({err})")
            else:
                if not isinstance(data, dict):
                    problems.append(f"{where}.config: {self.config}: the top level must be a JSON object")


@dataclass(frozen=True)
class Runtime:
    seed: int = 0
    # Appended to the new object in training targets (see the trial config's target_suffix).
    target_suffix: str = "."
    # auto: DeepSpeed when CUDA is present, plain PyTorch otherwise.
    engine: Literal["auto", "torch", "deepspeed"] = "auto"
    # Gradient-norm clipping for every engine; 0 disables.
    grad_clip: float = 1.0
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
