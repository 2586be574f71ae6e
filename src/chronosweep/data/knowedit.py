"""KnowEdit in EasyEdit's layout (``benchmark/wiki_recent/recent_train.json`` and its siblings): one edit per
record; without ``ground_truth`` it is an injection (WikiData_recent: facts added after the models' cut-off).

Record: ``subject``, ``prompt``, ``target_new``, optional ``ground_truth`` (old object) and ``rephrase``;
``portability`` and ``locality`` map a probe kind to a list of ``{prompt, ground_truth}``, where ground_truth is
a list of answers, each a list of a name and its aliases. What becomes what:

- ``portability.Subject_Aliasing``: the same fact about an alias of the subject -> paraphrases (their answers'
  aliases become the new object's aliases);
- ``portability.Reasoning``: two-hop clozes over the new fact -> one multi-hop case each, asked as clozes;
- ``locality.Relation_Specificity``: other facts of the same subject -> neighborhood probes;
- ``portability.Logical_Generalization`` and ``locality.Forgetfulness`` are not used (counted in ``unused``).
"""

from __future__ import annotations

from pathlib import Path

from chronosweep.core.requests import EditRequest, LocalityProbe, MultiHop
from chronosweep.data.errors import DataError, Fields, Problems, type_name
from chronosweep.data.parsed import Parsed

KNOWN = {"subject", "prompt", "target_new", "ground_truth", "rephrase", "portability", "locality"}
USED = {"portability": ("Subject_Aliasing", "Reasoning"), "locality": ("Relation_Specificity",)}


def _answers(value, f: Fields, key: str) -> tuple[str, ...] | None:
    """A probe's ground_truth: [[name, alias, ...], ...] (or one list, or one string) -> (name, every alias...)."""
    if isinstance(value, str):
        value = [[value]]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, list) and v for v in value):
        f.fail(key, f"expected a list of answer lists ([[name, alias, ...], ...]), got {type_name(value)} "
                    f"({value!r:.60})")
        return None
    names = [x for group in value for x in group]
    if not all(isinstance(x, str) and x.strip() for x in names):
        f.fail(key, "every answer must be a non-empty string")
        return None
    return tuple(dict.fromkeys(names))


def _probes(f: Fields, section: str, kind: str) -> list[tuple[str, tuple[str, ...]]]:
    """(prompt, answers) of every probe of one kind; problems name the probe's place."""
    block = f.record.get(section)
    if block is None:
        return []
    if not isinstance(block, dict):
        return []  # reported once by the caller
    items = block.get(kind)
    if items is None:
        return []
    if not isinstance(items, list):
        f.fail(f"{section}.{kind}", f"expected a list of probes, got {type_name(items)}")
        return []
    out = []
    for j, item in enumerate(items):
        key = f"{section}.{kind}[{j}]"
        if not isinstance(item, dict):
            f.fail(key, f"expected an object with prompt and ground_truth, got {type_name(item)}")
            continue
        p = f.nested(item, key)
        prompt = p.text("prompt")
        answers = _answers(item.get("ground_truth"), p, "ground_truth") if "ground_truth" in item else None
        if "ground_truth" not in item:
            p.fail("ground_truth", "missing")
        if prompt is not None and answers is not None:
            out.append((prompt.rstrip(), answers))
    return out


def parse(data, path: Path, prefix: str) -> Parsed:
    if not isinstance(data, list):
        raise DataError(f"{path}: a KnowEdit file is a list of records, got {type_name(data)}")
    problems = Problems(str(path))
    out = Parsed()
    for i, rec in enumerate(data):
        where = f"record {i}"
        if not isinstance(rec, dict):
            problems.add(where, f"expected an object, got {type_name(rec)}")
            continue
        f = Fields(rec, where, problems)
        f.unknown(KNOWN)
        subject, prompt, new = f.text("subject"), f.text("prompt"), f.text("target_new")
        old = f.text("ground_truth", required=False, nullable=True)
        rephrase = f.texts("rephrase", allow_str=True) or ()
        for section in USED:
            if section in rec and rec[section] is not None and not isinstance(rec[section], dict):
                f.fail(section, f"expected an object of probe lists, got {type_name(rec[section])}")
        aliasing = _probes(f, "portability", "Subject_Aliasing")
        reasoning = _probes(f, "portability", "Reasoning")
        neighbours = _probes(f, "locality", "Relation_Specificity")
        for section, kinds in (("portability", ("Logical_Generalization",)), ("locality", ("Forgetfulness",))):
            block = rec.get(section)
            for kind in kinds:
                if isinstance(block, dict) and isinstance(block.get(kind), list):
                    out.unused[f"{section}.{kind} probes"] += len(block[kind])
        if None in (subject, prompt, new):
            continue
        aliases = tuple(a for _, answers in aliasing for a in answers if a != new)
        cid = f"{prefix}:{i}"
        out.requests.append(EditRequest(
            case_id=cid,
            subject=subject,
            prompt=prompt.rstrip(),
            target_new=new,
            target_new_aliases=tuple(dict.fromkeys(aliases)),
            target_true=old,
            paraphrases=tuple(dict.fromkeys([*(p.rstrip() for p in rephrase), *(p for p, _ in aliasing)])),
            # The prompt with its subject cut out names the relation (the file gives no relation id).
            relation=prompt.rstrip().replace(subject, "{}", 1) if subject in prompt else "",
            cases=tuple(MultiHop(case_id=f"{cid}:reasoning:{j}", questions=(q,), answer=answers[0],
                                 aliases=answers[1:], cloze=True) for j, (q, answers) in enumerate(reasoning)),
            neighborhood=tuple(LocalityProbe(q, answers[0]) for q, answers in neighbours),
            source=f"{path.name}:{i}",
        ))
    problems.raise_if_any()
    return out
