"""Retain prompts: texts whose next-token distributions the locality KL term keeps as the unedited model had them.

Three sources (TrainingOptions): the edited subjects under other relations (``retain_templates``, ROME's
"{subject} is a" first; the KL falls on the token after the prompt), unrelated texts the unedited model samples
(``retain_sampled``) and a text file (``retain_file``); the KL falls on every position of those. None of them may be
an evaluation probe: every candidate is matched against the trial's held-out evaluation prompts and the edit
prompts, and dropped when one contains the other (after lower-casing and collapsing whitespace). Containment, not
only equality: a KL on "Egypt's capital, Cairo" would constrain the very positions the probe "Egypt's capital,"
is scored on. No torch here, so the pool can be built and checked without a model.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from chronosweep.core.requests import EditRequest
from chronosweep.editing.options import TrainingOptions, read_lines

Source = Literal["subject", "sampled", "file"]


def normalise(text: str) -> str:
    return " ".join(text.lower().split())


class HeldOut:
    """Texts nothing may train on, matched by containment either way after normalisation."""

    def __init__(self, texts: Iterable[str]):
        self.texts = sorted({n for t in texts if (n := normalise(t))})

    def __len__(self) -> int:
        return len(self.texts)

    def hit(self, text: str) -> str | None:
        """The first held-out text that contains text or is contained in it, else None."""
        n = normalise(text)
        if not n:
            return None
        for h in self.texts:
            if h in n or n in h:
                return h
        return None


@dataclass(frozen=True)
class RetainPrompt:
    text: str
    source: Source
    # "last": the KL falls on the next token after the text only (ROME's prompt); "all": on every position.
    positions: Literal["last", "all"]


@dataclass
class RetainPool:
    prompts: list[RetainPrompt]
    # (candidate, the evaluation or edit prompt it overlapped) for every candidate left out.
    dropped: list[tuple[RetainPrompt, str]]

    def by_source(self) -> dict[str, int]:
        out = {"subject": 0, "sampled": 0, "file": 0}
        for p in self.prompts:
            out[p.source] += 1
        return out


def subject_prompts(requests: list[EditRequest], templates: list[str]) -> list[RetainPrompt]:
    subjects = list(dict.fromkeys(r.subject for r in requests if r.subject.strip()))
    return [RetainPrompt(t.replace("{}", s), "subject", "last") for s in subjects for t in templates]


def candidates(requests: list[EditRequest], options: TrainingOptions, sampled: list[str]) -> list[RetainPrompt]:
    out = subject_prompts(requests, options.retain_templates)
    out += [RetainPrompt(t, "sampled", "all") for t in sampled if t.strip()]
    if options.retain_file is not None:
        out += [RetainPrompt(t, "file", "all") for t in read_lines(options.retain_file)]
    return out


def build_pool(requests: list[EditRequest], options: TrainingOptions, sampled: list[str],
               held_out: Iterable[str]) -> RetainPool:
    """The retain prompts, deduplicated, with every overlap with an evaluation or edit prompt removed."""
    guard = HeldOut([*held_out, *(r.prompt for r in requests)])
    kept: dict[str, RetainPrompt] = {}
    dropped: list[tuple[RetainPrompt, str]] = []
    for p in candidates(requests, options, sampled):
        if normalise(p.text) in kept:
            continue
        hit = guard.hit(p.text)
        if hit is not None:
            dropped.append((p, hit))
        else:
            kept[normalise(p.text)] = p
    return RetainPool(list(kept.values()), dropped)
