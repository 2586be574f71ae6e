"""When does a continuation count as an answer: normalisation and the two match rules."""

from __future__ import annotations

import re
import string
import unicodedata
from functools import lru_cache

_EDGE = string.whitespace + string.punctuation + "“”‘’«»…"


# Memoised: the unit functions match every row against every new object of a trial, the same strings over and over.
@lru_cache(maxsize=1 << 16)
def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    text = re.sub(r"\s+", " ", text)
    return text.strip(_EDGE)


def starts_with_answer(continuation: str, answers) -> bool:
    """The continuation begins with an answer, ignoring case and surrounding whitespace/punctuation,
    and the answer ends at a word boundary ("Tim" does not match "Timothy")."""
    return starts_normalized(normalize(continuation), answers)


def starts_normalized(text: str, answers) -> bool:
    """starts_with_answer for a continuation already normalised (the unit functions normalise each row once)."""
    for answer in answers:
        a = normalize(answer)
        if a and text.startswith(a) and (len(text) == len(a) or not text[len(a)].isalnum()):
            return True
    return False


@lru_cache(maxsize=1 << 14)
def _whole_words(answer: str) -> re.Pattern | None:
    a = normalize(answer)
    return re.compile(rf"(?<![\w]){re.escape(a)}(?![\w])") if a else None


def contains_answer(continuation: str, answers) -> bool:
    """An answer appears anywhere in the continuation as whole words (for free-form answers to questions)."""
    return contains_normalized(f" {normalize(continuation)} ", answers)


def contains_normalized(text: str, answers) -> bool:
    """contains_answer for ' <normalised continuation> '."""
    for answer in answers:
        pattern = _whole_words(answer)
        if pattern is not None and pattern.search(text):
            return True
    return False


# Words a full stop follows without ending a sentence ("St. Louis", "Dr. Who"); single letters (initials,
# "U.S.") are kept whole by the rule itself.
_ABBREVIATIONS = {"st", "dr", "mr", "mrs", "ms", "jr", "sr", "prof", "gen", "gov", "sen", "rep", "lt", "col", "capt",
                  "mt", "ft", "no", "vs", "inc", "co", "corp", "ltd", "bros", "dept", "univ", "ave", "etc", "approx"}
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")


def answer_span(continuation: str) -> str:
    """The continuation up to the answer's end: the first line, cut after its first sentence end.

    A 12-token continuation of an unrelated prompt often keeps its answer and drifts after it ("Europe. It is a
    mountain range" -> "Europe.\\n\\nThe United States has"); the span is what the model answered.
    """
    text = continuation.lstrip()
    text = text.split("\n", 1)[0]
    for m in _SENTENCE_END.finditer(text):
        words = re.findall(r"[\w']+", text[: m.start()])
        last = words[-1].casefold() if words else ""
        if text[m.start()] == "." and (len(last) == 1 or last in _ABBREVIATIONS):
            continue
        return text[: m.end()].strip()
    return text.strip()


def same_answer(a: str, b: str) -> bool:
    """Two continuations give the same answer: their answer spans agree after normalisation."""
    return normalize(answer_span(a)) == normalize(answer_span(b))
