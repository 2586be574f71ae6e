"""MQuAKE-Remastered-T as rendered text (leo-liuzy/mend ``spotcheck/mquake-T.txt``): one temporal multi-hop case
per block, one edit per case; cases that share an edit share one EditRequest, so the edit is trained once.

A block (blocks are separated by a line of 30 ``=``) has four headed parts::

    **Edit**: The name of the current head of the Sweden government is Ulf Kristersson
    **Single-hop Queries (changed)**:
    What is the name of the current head of the Sweden government? Ulf Kristersson
    **Single-hop Queries (unchanged)**:
    What is the country of citizenship of Jussi Björling? Sweden
    **Multi-hop Queries**:
    Who is the current head of the government in the country of citizenship of Jussi Björling? Ulf Kristersson
    (two more paraphrases, blank-line separated)

The edit sentence ends with the changed hop's answer (the new object); the rest is the prompt. The subject is the
answer of an unchanged hop that occurs in the edit sentence (a MQuAKE chain hands each hop's answer on as the next
hop's subject), else the capitalised span the edit sentence shares with the changed question; a case with neither
is skipped and counted. The file has no case ids, old objects or aliases: a case's id is its block number.

MQuAKE-Remastered (Zhong et al., 2024), derived from MQuAKE (Zhong et al., 2023); CC BY 4.0.
"""

from __future__ import annotations

import re
from pathlib import Path

from chronosweep.core.requests import EditRequest, Hop, MultiHop
from chronosweep.data.errors import DataError, Problems
from chronosweep.data.parsed import Parsed

SEPARATOR = "=" * 30
PARTS = ("Edit", "Single-hop Queries (changed)", "Single-hop Queries (unchanged)", "Multi-hop Queries")
_HEADER = re.compile(r"^\*\*(.+?)\*\*:[ \t]?(.*)$")
# Capitalised word runs, allowing the lower-case joiners of names ("Bank of America", "Isle of Man").
_SPAN = re.compile(r"[A-Z][\w'.&-]*(?:\s+(?:(?:of|the|de|and|del|la|von)\s+)*[A-Z][\w'.&-]*)*")


def _blocks(text: str) -> list[tuple[int, list[str]]]:
    """(first line number, lines) of every non-empty block; a separator may end a line instead of being one."""
    blocks: list[tuple[int, list[str]]] = []
    start, lines = 1, []
    for number, line in enumerate(text.splitlines(), 1):
        body = line.rstrip()
        if body.endswith(SEPARATOR) and set(body[-len(SEPARATOR):]) == {"="}:
            head = body[: -len(SEPARATOR)].rstrip("=")
            if head.strip():
                lines.append(head)
            if any(x.strip() for x in lines):
                blocks.append((start, lines))
            start, lines = number + 1, []
        else:
            lines.append(line)
    if any(x.strip() for x in lines):
        blocks.append((start, lines))
    return blocks


def _parts(lines: list[str], first: int, where: str, problems: Problems) -> dict[str, list[tuple[int, str]]] | None:
    """part name -> its (line number, text) lines; the Edit part's text follows its header on the same line."""
    parts: dict[str, list[tuple[int, str]]] = {}
    current = None
    for offset, line in enumerate(lines):
        number = first + offset
        m = _HEADER.match(line.strip())
        if m and m.group(1) in PARTS:
            current = m.group(1)
            if current in parts:
                problems.add(f"{where}, line {number}", f"part '**{current}**' appears twice")
                return None
            parts[current] = [(number, m.group(2).strip())] if m.group(2).strip() else []
        elif m:
            problems.add(f"{where}, line {number}", f"unknown part '**{m.group(1)}**' (known: {', '.join(PARTS)})")
            return None
        elif line.strip():
            if current is None:
                problems.add(f"{where}, line {number}", f"text before the first part: {line.strip()!r:.60}")
                return None
            parts[current].append((number, line.strip()))
    missing = [p for p in PARTS if p not in parts]
    if missing:
        problems.add(where, "missing part " + ", ".join(f"'**{p}**'" for p in missing))
        return None
    return parts


def _qa(items: list[tuple[int, str]], part: str, where: str, problems: Problems) -> list[tuple[str, str]] | None:
    """'Question? Answer' lines -> (question, answer), split at the last '? '."""
    out = []
    for number, text in items:
        question, sep, answer = text.rpartition("? ")
        if not sep or not question.strip() or not answer.strip():
            problems.add(f"{where}, line {number}, part '**{part}**'",
                         f"expected 'question? answer', got {text!r:.80}")
            return None
        out.append((question.strip() + "?", answer.strip()))
    if not out:
        problems.add(f"{where}, part '**{part}**'", "holds no question")
        return None
    return out


def _occurs(needle: str, text: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(needle)}(?!\w)", text) is not None


def find_subject(prompt: str, changed_question: str, unchanged_answers: list[str]) -> str | None:
    """The edited subject: an unchanged hop's answer in the prompt (longest first), else the longest capitalised
    span of the prompt that the changed question also contains."""
    inside = sorted((a for a in unchanged_answers if _occurs(a, prompt)), key=len, reverse=True)
    if inside:
        return inside[0]
    spans = sorted((s for s in _SPAN.findall(prompt) if s != "The" and _occurs(s, changed_question)),
                   key=len, reverse=True)
    return spans[0] if spans else None


def parse_text(text: str, path: Path, prefix: str) -> Parsed:
    problems = Problems(str(path))
    out = Parsed()
    blocks = _blocks(text)
    if not blocks:
        raise DataError(f"{path}: no MQuAKE-Remastered blocks (parts separated by a line of {len(SEPARATOR)} '=')")
    edits: dict[tuple[str, str], dict] = {}
    for index, (first, lines) in enumerate(blocks, 1):
        where = f"block {index} (line {first})"
        parts = _parts(lines, first, where, problems)
        if parts is None:
            continue
        if len(parts["Edit"]) != 1:
            problems.add(f"{where}, part '**Edit**'", f"expected one edit sentence, got {len(parts['Edit'])} lines")
            continue
        sentence = parts["Edit"][0][1]
        changed = _qa(parts["Single-hop Queries (changed)"], "Single-hop Queries (changed)", where, problems)
        unchanged = _qa(parts["Single-hop Queries (unchanged)"], "Single-hop Queries (unchanged)", where, problems)
        multihop = _qa(parts["Multi-hop Queries"], "Multi-hop Queries", where, problems)
        if changed is None or unchanged is None or multihop is None:
            continue
        if len(changed) != 1:
            problems.add(f"{where}, part '**Single-hop Queries (changed)**'",
                         f"expected one changed hop (one edit per case), got {len(changed)}")
            continue
        question, new = changed[0]
        if not sentence.endswith(" " + new):
            problems.add(f"{where}, part '**Edit**'",
                         f"the edit sentence {sentence!r:.80} does not end with the changed hop's answer {new!r}")
            continue
        answers = {a for _, a in multihop}
        if answers != {new}:
            problems.add(f"{where}, part '**Multi-hop Queries**'",
                         f"answers {sorted(answers)} differ from the changed hop's answer {new!r}")
            continue
        prompt = sentence[: -len(new)].rstrip()
        subject = find_subject(prompt, question, [a for _, a in unchanged])
        if subject is None:
            out.skipped["no subject found in the edit sentence"] += 1
            continue
        hops = (*(Hop("", a, question=q) for q, a in unchanged), Hop("", new, question=question, changed=True))
        case = MultiHop(case_id=f"{prefix}:{index}", questions=tuple(q for q, _ in multihop), answer=new, hops=hops)
        edit = edits.setdefault((prompt, new), {"block": index, "subject": subject, "cases": []})
        edit["cases"].append(case)
    problems.raise_if_any()
    for (prompt, new), e in edits.items():
        out.requests.append(EditRequest(
            # Named by the first block holding the edit: stable for a given file.
            case_id=f"{prefix}:edit:{e['block']}",
            subject=e["subject"],
            prompt=prompt,
            target_new=new,
            # The file names no relation; the prompt with its subject cut out is one.
            relation=prompt.replace(e["subject"], "{}", 1),
            cases=tuple(e["cases"]),
            source=f"{path.name}:block {e['block']}",
        ))
    return out


def read(path: Path, prefix: str) -> Parsed:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err})") from None
    return parse_text(text, path, prefix)
