"""How the model is asked: the eval section of a trial config."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EvalConfig:
    max_new_tokens: int = 12
    batch_size: int = 32
    # Prompt wrapped around multi-hop questions; {question} is replaced.
    question_template: str = "Q: {question}\nA:"
    # History probes (core.history): past holders asked per edit, most recent first; 0 asks no history or
    # temporal ("as of"/"currently") probes at all.
    history_holders: int = 3

    def check(self, where: str, problems: list[str]) -> None:
        if self.max_new_tokens < 1:
            problems.append(f"{where}.max_new_tokens: must be >= 1, got {self.max_new_tokens}")
        if self.batch_size < 1:
            problems.append(f"{where}.batch_size: must be >= 1, got {self.batch_size}")
        if self.history_holders < 0:
            problems.append(f"{where}.history_holders: must be >= 0, got {self.history_holders}")
        if "{question}" not in self.question_template:
            problems.append(f"{where}.question_template: must contain {{question}}")
