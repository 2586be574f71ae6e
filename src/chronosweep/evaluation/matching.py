"""When does a continuation count as an answer: normalisation and the two match rules."""

from __future__ import annotations

import re
import string
import unicodedata

_EDGE = string.whitespace + string.punctuation + "“”‘’«»…"


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    text = re.sub(r"\s+", " ", text)
    return text.strip(_EDGE)


def starts_with_answer(continuation: str, answers) -> bool:
    """The continuation begins with an answer, ignoring case and surrounding whitespace/punctuation,
    and the answer ends at a word boundary ("Tim" does not match "Timothy")."""
    text = normalize(continuation)
    for answer in answers:
        a = normalize(answer)
        if a and text.startswith(a) and (len(text) == len(a) or not text[len(a)].isalnum()):
            return True
    return False


def contains_answer(continuation: str, answers) -> bool:
    """An answer appears anywhere in the continuation as whole words (for free-form answers to questions)."""
    text = f" {normalize(continuation)} "
    for answer in answers:
        a = normalize(answer)
        if a and re.search(rf"(?<![\w]){re.escape(a)}(?![\w])", text):
            return True
    return False
