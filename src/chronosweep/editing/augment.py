"""The prompts every edit trains under: its bare prompt, K generated context prefixes, its training paraphrases.

A prefix is one of the short texts the unedited model samples once per trial (editing.locate.generate_prefixes,
the contexts ROME averages its keys over) and the edit trains as "<prefix>. <prompt>". Training paraphrases come
from their own field of the edit record (EditRequest.train_paraphrases), never from the evaluation paraphrases;
any extra prompt that overlaps an evaluation probe (editing.retain.HeldOut) is left out and counted. No torch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from chronosweep.core.requests import EditRequest
from chronosweep.editing.retain import HeldOut

Source = Literal["prompt", "prefix", "train_paraphrase"]


@dataclass(frozen=True)
class TrainingPrompt:
    edit: int  # index into the trial's requests
    prompt: str
    source: Source


@dataclass
class TrainingPrompts:
    prompts: list[TrainingPrompt]
    dropped: list[tuple[TrainingPrompt, str]]

    def by_source(self) -> dict[str, int]:
        out = {"prompt": 0, "prefix": 0, "train_paraphrase": 0}
        for p in self.prompts:
            out[p.source] += 1
        return out


def with_prefix(prefix: str, prompt: str) -> str:
    return f"{prefix}. {prompt}"


def training_prompts(requests: list[EditRequest], prefixes: list[str], use_train_paraphrases: bool,
                     held_out: Iterable[str]) -> TrainingPrompts:
    guard = HeldOut(held_out)
    kept: list[TrainingPrompt] = []
    dropped: list[tuple[TrainingPrompt, str]] = []
    for i, r in enumerate(requests):
        # The bare prompt is the edit itself (and its rewrite probe): always trained.
        kept.append(TrainingPrompt(i, r.prompt, "prompt"))
        extra = [TrainingPrompt(i, with_prefix(p, r.prompt), "prefix") for p in prefixes if p.strip()]
        if use_train_paraphrases:
            extra += [TrainingPrompt(i, p, "train_paraphrase") for p in dict.fromkeys(r.train_paraphrases)
                      if p != r.prompt]
        for p in extra:
            hit = guard.hit(p.prompt)
            if hit is not None:
                dropped.append((p, hit))
            else:
                kept.append(p)
    return TrainingPrompts(kept, dropped)
