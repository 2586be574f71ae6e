"""Locality probes from ROME's known_1000 facts: time-invariant facts an edit must leave alone."""

from __future__ import annotations

from pathlib import Path

from chronosweep.core.requests import LocalityProbe
from chronosweep.data.errors import DataError, Fields, Problems, type_name


def parse(data, path: Path) -> list[LocalityProbe]:
    """One probe per record, with its subject; other keys (per-model flags, template, prediction) are ignored."""
    if not isinstance(data, list):
        raise DataError(f"{path}: known_1000 is a list of facts, got {type_name(data)}")
    problems = Problems(str(path))
    out = []
    for i, rec in enumerate(data):
        if not isinstance(rec, dict):
            problems.add(f"record {i}", f"expected an object, got {type_name(rec)}")
            continue
        f = Fields(rec, f"record {i}", problems)
        prompt, answer = f.text("prompt"), f.text("attribute")
        subject = f.text("subject", required=False)
        if prompt is not None and answer is not None:
            out.append(LocalityProbe(prompt.rstrip(), answer, subject))
    problems.raise_if_any()
    return out


def spread(facts: list[LocalityProbe], limit: int, avoid: set[str]) -> list[LocalityProbe]:
    """Every k-th fact, deterministic and spread over the file so the probes span many relations.

    Facts about an edited subject are left out: an edit may rightly change what the model says about them.
    """
    pool = [p for p in facts if p.subject not in avoid]
    if limit <= 0 or not pool:
        return []
    if limit >= len(pool):
        return pool
    return [pool[i * len(pool) // limit] for i in range(limit)]
