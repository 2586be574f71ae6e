"""Retain prompts: texts whose next-token distributions the locality KL term keeps as the unedited model had them.

Three sources (TrainingOptions): the edited subjects under other relations (``retain_templates``, ROME's
"{subject} is a" first; the KL falls on the token after the prompt), unrelated texts the unedited model samples
(``retain_sampled``) and a text file (``retain_file``); the KL falls on every position of those. None of them may be
an evaluation probe: every candidate is matched against the trial's held-out evaluation prompts and the edit
prompts, and dropped when one contains the other (after lower-casing and collapsing whitespace). Containment, not
only equality: a KL on "Egypt's capital, Cairo" would constrain the very positions the probe "Egypt's capital,"
is scored on. The prompt check cannot see a paraphrase ("Sachimi Iwao holds a citizenship from" against the probe
"Sachimi Iwao is a citizen of"), so a sampled or file text that names the subject of a locality or neighbourhood
probe, as a whole word, is dropped too; the subject prompts are exempt, being about the edited subjects by design.
No torch here, so the pool can be built and checked without a model.
"""

from __future__ import annotations

import re
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


class HeldSubjects:
    """Subjects of evaluation probes, found as whole words (case and spacing ignored) in a text."""

    def __init__(self, subjects: Iterable[str]):
        self.subjects = sorted({n for s in subjects if (n := normalise(s))}, key=lambda n: (-len(n), n))
        body = "|".join(re.escape(n) for n in self.subjects)
        self._pattern = re.compile(rf"(?<!\w)(?:{body})(?!\w)") if body else None

    def __len__(self) -> int:
        return len(self.subjects)

    def hit(self, text: str) -> str | None:
        """The first held-out subject text names, else None."""
        if self._pattern is None:
            return None
        found = self._pattern.search(normalise(text))
        return found.group(0) if found else None


def subject_hit(text: str) -> bool:
    """Whether an overlap recorded in RetainPool.dropped is a subject, not a prompt."""
    return text.startswith("subject: ")


@dataclass(frozen=True)
class RetainPrompt:
    text: str
    source: Source
    # "last": the KL falls on the next token after the text only (ROME's prompt); "all": on every position.
    positions: Literal["last", "all"]


@dataclass
class RetainPool:
    prompts: list[RetainPrompt]
    # (candidate, the evaluation or edit prompt it overlapped, or "subject: <the probe subject it names>") for every
    # candidate left out.
    dropped: list[tuple[RetainPrompt, str]]

    def by_source(self) -> dict[str, int]:
        out = {"subject": 0, "sampled": 0, "file": 0}
        for p in self.prompts:
            out[p.source] += 1
        return out

    def dropped_for_subjects(self) -> int:
        return sum(subject_hit(hit) for _, hit in self.dropped)


def subject_prompts(requests: list[EditRequest], templates: list[str]) -> list[RetainPrompt]:
    subjects = list(dict.fromkeys(r.subject for r in requests if r.subject.strip()))
    return [RetainPrompt(t.replace("{}", s), "subject", "last") for s in subjects for t in templates]


def candidates(requests: list[EditRequest], options: TrainingOptions, sampled: list[str]) -> list[RetainPrompt]:
    out = subject_prompts(requests, options.retain_templates)
    out += [RetainPrompt(t, "sampled", "all") for t in sampled if t.strip()]
    if options.retain_file is not None:
        out += [RetainPrompt(t, "file", "all") for t in read_lines(options.retain_file)]
    return out


def overlap(p: RetainPrompt, prompts: HeldOut, subjects: HeldSubjects) -> str | None:
    """The held-out prompt p overlaps, or "subject: <name>" for a held-out subject it names, else None."""
    hit = prompts.hit(p.text)
    if hit is None and p.source != "subject" and (name := subjects.hit(p.text)) is not None:
        hit = f"subject: {name}"
    return hit


def build_pool(requests: list[EditRequest], options: TrainingOptions, sampled: list[str],
               held_out: Iterable[str], held_out_subjects: Iterable[str] = ()) -> RetainPool:
    """The retain prompts, deduplicated, with every overlap with an evaluation or edit prompt, and every sampled or
    file text naming an evaluation probe's subject, removed."""
    guard = HeldOut([*held_out, *(r.prompt for r in requests)])
    subjects = HeldSubjects(held_out_subjects)
    kept: dict[str, RetainPrompt] = {}
    dropped: list[tuple[RetainPrompt, str]] = []
    for p in candidates(requests, options, sampled):
        if normalise(p.text) in kept:
            continue
        hit = overlap(p, guard, subjects)
        if hit is not None:
            dropped.append((p, hit))
        else:
            kept[normalise(p.text)] = p
    return RetainPool(list(kept.values()), dropped)
