"""DyKnow (sislab-unitn/DyKnow ``grc_generated.json``): time-stamped answer histories -> modification edits.

Layout: ``{category: {entity: ELEMENT}}`` for athletes and companies, ``{category: {entity: {relation: ELEMENT}}}``
for countries and organizations, where ELEMENT is ``{"questions": {name: phrasing}, "answers": [...]}`` and each
answer reads ``NAME |S: start |E: end`` (``|P:`` point in time also occurs). The answer without ``|E:`` is the
current holder -> ``target_new``; the most recently ended holder with another name -> ``target_true``.
"""

from __future__ import annotations

import re
from pathlib import Path

from chronosweep.core.requests import EditRequest
from chronosweep.data.errors import DataError, Fields, Problems, type_name
from chronosweep.data.parsed import Parsed

# Wikidata time literals as DyKnow writes them: +2015-02-03T00:00:00Z, with 00 for unknown month/day.
_TIME = re.compile(r"^([+-]?)(\d{1,9})-(\d{2})-(\d{2})T\d{2}:\d{2}:\d{2}Z$")
_TAG = re.compile(r"\s*\|([A-Z]):\s*")

# The prompt; the other phrasings are paraphrases, in this order when present.
PROMPT_KEY = "generic"


def parse_answer(text: str) -> tuple[str, dict[str, str]] | None:
    """('Sergio Mattarella', {'S': '+2015-02-03T00:00:00Z'}), or None when the string does not parse."""
    parts = _TAG.split(text)
    name, rest = parts[0].strip(), parts[1:]
    if not name or len(rest) % 2:
        return None
    tags = {}
    for key, value in zip(rest[::2], rest[1::2]):
        value = value.strip()
        if key in tags or not _TIME.match(value):
            return None
        tags[key] = value
    return name, tags


def time_key(value: str) -> tuple[int, int, int]:
    sign, year, month, day = _TIME.match(value).groups()
    return (-int(year) if sign == "-" else int(year), int(month), int(day))


def _elements(data: dict, problems: Problems):
    """(category, entity, relation or None, element) for both nestings."""
    for category, entities in data.items():
        if not isinstance(entities, dict):
            problems.add(f"category {category!r}", f"expected an object of entities, got {type_name(entities)}")
            continue
        for entity, value in entities.items():
            if not isinstance(value, dict):
                problems.add(f"record {category}/{entity}", f"expected an object, got {type_name(value)}")
            elif "questions" in value or "answers" in value:
                yield category, entity, None, value
            else:
                for relation, element in value.items():
                    if not isinstance(element, dict):
                        problems.add(f"record {category}/{entity}/{relation}",
                                     f"expected an object with questions and answers, got {type_name(element)}")
                    else:
                        yield category, entity, relation, element


def edit_from_answers(answers: tuple[str, ...]) -> tuple[str, dict, str] | str:
    """(current name, current tags, previous name), or the reason the history cannot form an edit."""
    parsed = [parse_answer(a) for a in answers]
    if any(p is None for p in parsed):
        return "unparsable answer"
    current = [(name, tags) for name, tags in parsed if "E" not in tags]
    if not current:
        return "no current holder"
    if len({name for name, _ in current}) > 1:
        return "several current holders"
    name, tags = current[0]
    earlier = [(time_key(t["E"]), n) for n, t in parsed if "E" in t and n != name]
    if not earlier:
        return "no earlier holder with another name"
    return name, tags, max(earlier)[1]


def parse(data, path: Path, prefix: str) -> Parsed:
    problems = Problems(str(path))
    if not isinstance(data, dict):
        raise DataError(f"{path}: a DyKnow file is an object of categories, got {type_name(data)}")
    out = Parsed()
    for category, entity, relation, element in _elements(data, problems):
        record = f"{category}/{entity}" + (f"/{relation}" if relation else "")
        f = Fields(element, f"record {record}", problems)
        questions = f.obj("questions")
        answers = f.texts("answers", required=True)
        if questions is None or answers is None:
            continue
        q = f.nested(questions, "questions")
        phrasings = {key: q.text(key) for key in questions}
        if PROMPT_KEY not in questions:
            q.fail(PROMPT_KEY, "missing")
        if any(v is None for v in phrasings.values()) or PROMPT_KEY not in questions:
            continue
        result = edit_from_answers(answers)
        if isinstance(result, str):
            out.skipped[result] += 1
            continue
        new, tags, old = result
        out.requests.append(EditRequest(
            case_id=f"{prefix}:{record}",
            subject=entity,
            prompt=phrasings[PROMPT_KEY].rstrip(),
            target_new=new,
            target_true=old,
            paraphrases=tuple(v.rstrip() for k, v in phrasings.items() if k != PROMPT_KEY),
            relation=relation or category,
            time_start=tags.get("S"),
            time_end=tags.get("E"),
            source=f"{path.name}:{record}",
        ))
    problems.raise_if_any()
    return out
