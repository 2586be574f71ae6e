"""P-tuning's options (peft's PromptEncoderConfig fields, plus the training loop)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from chronosweep.editing.options import TrainingOptions, at_least, opt


@dataclass
class PtuningOptions(TrainingOptions):
    num_virtual_tokens: int = opt(20, "virtual tokens prepended to every input")
    encoder_hidden_size: int = opt(256, "width of the reparameterising MLP (or LSTM) between the virtual-token "
                                        "embeddings and the model")
    encoder_type: Literal["mlp", "lstm"] = opt("mlp", "the prompt encoder")
    encoder_num_layers: int = opt(2, "LSTM layers; peft's MLP encoder always has two hidden layers")
    encoder_dropout: float = opt(0.0, "dropout inside the prompt encoder")
    lr: float = 3e-3
    epochs: int = 30

    def check(self, where: str, problems: list[str]) -> None:
        super().check(where, problems)
        at_least(where, self, ("num_virtual_tokens", "encoder_hidden_size", "encoder_num_layers"), 1, problems)
        if self.encoder_type == "mlp" and self.encoder_num_layers != 2:
            problems.append(f"{where}.encoder_num_layers: peft's MLP encoder has exactly 2 layers; "
                            f"set encoder_type: lstm to choose the depth (got {self.encoder_num_layers})")
        if self.key_weight > 0:
            problems.append(f"{where}.key_weight: P-tuning trains a prompt encoder, no linear module of the decoder "
                            "the key-statistics penalty could weigh; use kl_weight for locality")
        if not 0.0 <= self.encoder_dropout < 1.0:
            problems.append(f"{where}.encoder_dropout: must be in [0, 1), got {self.encoder_dropout}")
