"""DyKnow (sislab-unitn/DyKnow ``grc_generated.json``): time-stamped answer histories -> modification edits.

Layout: ``{category: {entity: ELEMENT}}`` for athletes and companies, ``{category: {entity: {relation: ELEMENT}}}``
for countries and organizations, where ELEMENT is ``{"questions": {name: phrasing}, "answers": [...]}`` and each
answer reads ``NAME |S: start |E: end`` (``|P:`` point in time also occurs). The answer without ``|E:`` is the
current holder -> ``target_new``; the most recently ended holder with another name -> ``target_true``.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from chronosweep.core.requests import EditRequest, Holding, LocalityProbe
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


def holdings(parsed: list[tuple[str, dict[str, str]]]) -> tuple[Holding, ...]:
    """The answers as time spans, oldest first (a point in time |P: is a span of one instant)."""
    out = []
    for name, tags in parsed:
        point = tags.get("P")
        out.append(Holding(name, tags.get("S", point), tags.get("E", point)))
    return tuple(sorted(out, key=lambda h: time_key(h.start) if h.start else (time_key(h.end) if h.end else (0, 0, 0))))


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


def _with_neighbours(out: Parsed, owners: list[tuple[str, str]], prompts: dict[str, list[tuple[str, str]]]) -> Parsed:
    """Give each edit (entity, record) the generic prompts of its entity's other elements as neighborhood probes."""
    out.requests = [
        replace(r, neighborhood=tuple(LocalityProbe(p) for rec, p in prompts.get(entity, []) if rec != record))
        for r, (entity, record) in zip(out.requests, owners)
    ]
    return out


def parse(data, path: Path, prefix: str) -> Parsed:
    if isinstance(data, list):
        return parse_editing_set(data, path, prefix)
    problems = Problems(str(path))
    if not isinstance(data, dict):
        raise DataError(f"{path}: a DyKnow file is an object of categories (grc_generated.json) or a list of "
                        f"edits (editing_dataset.json), got {type_name(data)}")
    out = Parsed()
    owners: list[tuple[str, str]] = []
    prompts: dict[str, list[tuple[str, str]]] = {}
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
        prompts.setdefault(f"{category}/{entity}", []).append((record, phrasings[PROMPT_KEY].rstrip()))
        result = edit_from_answers(answers)
        if isinstance(result, str):
            out.skipped[result] += 1
            continue
        new, tags, old = result
        owners.append((f"{category}/{entity}", record))
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
            history=holdings([parse_answer(a) for a in answers]),
            source=f"{path.name}:{record}",
        ))
    problems.raise_if_any()
    return _with_neighbours(out, owners, prompts)


EDITING_SET_FIELDS = {"prompt", "target", "subject", "domain", "element", "attribute", "prompt_type", "questions",
                      "answers"}


def parse_editing_set(data: list, path: Path, prefix: str) -> Parsed:
    """DyKnow's per-model editing_dataset.json: a list of the facts one model has outdated."""
    problems = Problems(str(path))
    out = Parsed()
    owners: list[tuple[str, str]] = []
    prompts: dict[str, list[tuple[str, str]]] = {}
    ids: set[str] = set()
    for i, rec in enumerate(data):
        if not isinstance(rec, dict):
            problems.add(f"record {i}", f"expected an object, got {type_name(rec)}")
            continue
        f = Fields(rec, f"record {i}", problems)
        f.unknown(EDITING_SET_FIELDS)
        prompt, target, element = f.text("prompt"), f.text("target"), f.text("element")
        domain = f.text("domain")
        subject = f.text("subject", required=False, nullable=True)
        attribute = f.text("attribute", required=False, nullable=True)
        questions = f.obj("questions")
        answers = f.texts("answers", required=True)
        phrasings: dict[str, str | None] = {}
        if questions is not None:
            q = f.nested(questions, "questions")
            phrasings = {key: q.text(key) for key in questions}
        if None in (prompt, target, element, domain, questions, answers) or None in phrasings.values():
            continue
        record = f"{domain}/{element}" + (f"/{attribute}" if attribute else "")
        f.where = f"record {i} ({record})"
        generic = phrasings.get(PROMPT_KEY) or prompt
        prompts.setdefault(f"{domain}/{element}", []).append((record, generic.rstrip()))
        if record in ids:
            f.fail("element", f"duplicate edit of {record}")
            continue
        ids.add(record)
        parsed = [parse_answer(a) for a in answers]
        if any(p is None for p in parsed):
            out.skipped["unparsable answer"] += 1
            continue
        earlier = [(time_key(tags["E"]), name) for name, tags in parsed if "E" in tags and name != target]
        if not earlier:
            out.skipped["no earlier holder with another name"] += 1
            continue
        tags = next((t for name, t in parsed if name == target and "E" not in t), {})
        owners.append((f"{domain}/{element}", record))
        # ROME/MEMIT look the subject up in the prompt: DyKnow's subject ("Prime Minister of Italy") is there,
        # the element ("Italy") is the fallback.
        out.requests.append(EditRequest(
            case_id=f"{prefix}:{record}",
            subject=subject if subject and subject in prompt else element,
            prompt=prompt.rstrip(),
            target_new=target,
            target_true=max(earlier)[1],
            paraphrases=tuple(v.rstrip() for v in phrasings.values() if v.rstrip() != prompt.rstrip()),
            relation=attribute or domain,
            time_start=tags.get("S"),
            history=holdings(parsed),
            source=f"{path.name}:{i}",
        ))
    problems.raise_if_any()
    return _with_neighbours(out, owners, prompts)
