"""Dataset adapters: every supported layout becomes an EditSet of typed EditRequests (docs/data.md).

``load_edits(cfg)`` reads and validates everything before returning, so bad data fails before a model loads.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from chronosweep.core.requests import EditRequest, EditSet, LocalityProbe
from chronosweep.data import dyknow, easyedit, hygiene, jsonl, knowedit, known, mquake, mquake_remastered
from chronosweep.data.catalog import BUNDLED, KNOWN_1000
from chronosweep.data.config import DataConfig
from chronosweep.data.errors import DataError, type_name
from chronosweep.data.files import bundled_file, read_json, read_jsonl
from chronosweep.data.parsed import Parsed

__all__ = ["BUNDLED", "DataError", "LAYOUTS", "detect_layout", "load_edits", "read_edits", "write_jsonl"]

write_jsonl = jsonl.write_jsonl


LAYOUTS = ("dyknow", "mquake", "mquake-remastered", "counterfact", "zsre", "knowedit", "chronosweep")


def detect_layout(data) -> str:
    """Layout of parsed file content, from its shape and the keys of its first record."""
    if isinstance(data, dict):
        return "dyknow"
    first = data[0] if isinstance(data, list) and data else None
    if isinstance(first, dict):
        if "requested_rewrite" in first:
            return "mquake"
        if "rephrase_prompt" in first:
            return "counterfact"
        if "src" in first and "alt" in first:
            return "zsre"
        if "questions" in first and "answers" in first and "target" in first:
            return "dyknow"  # DyKnow's per-model editing_dataset.json
        if isinstance(first.get("portability"), dict) or isinstance(first.get("locality"), dict):
            return "knowedit"
    return "chronosweep"


PARSERS = {
    "dyknow": dyknow.parse,
    "mquake": mquake.parse,
    "counterfact": easyedit.parse_counterfact,
    "zsre": easyedit.parse_zsre,
    "knowedit": knowedit.parse,
}


def read_edits(path: Path, layout: str | None = None, prefix: str | None = None) -> tuple[str, Parsed]:
    """(layout, parsed edits) of one .json or .jsonl file; layout None detects it from the content."""
    prefix = prefix or path.stem
    if layout == "mquake-remastered" or (layout is None and path.suffix == ".txt"):
        return "mquake-remastered", mquake_remastered.read(path, prefix)
    if path.suffix == ".jsonl":
        lines = read_jsonl(path)
        data = [rec for _, rec in lines]
        where = [f"line {n}" for n, _ in lines]
    else:
        data = read_json(path)
        where = [f"record {i}" for i in range(len(data))] if isinstance(data, list) else []
    layout = layout or detect_layout(data)
    if layout == "chronosweep":
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a list of edit records, got {type_name(data)}")
        return layout, jsonl.parse(list(zip(where, data)), path, prefix)
    return layout, PARSERS[layout](data, path, prefix)


def _units(requests: list[EditRequest]) -> list[list[EditRequest]]:
    """Consecutive edits of one multi-hop case stay together; every other edit is a unit of its own."""
    units: list[list[EditRequest]] = []
    for r in requests:
        prev = units[-1][-1] if units else None
        if r.multihop is not None and prev is not None and prev.multihop is not None \
                and prev.multihop.case_id == r.multihop.case_id:
            units[-1].append(r)
        else:
            units.append([r])
    return units


def select(requests: list[EditRequest], offset: int, limit: int | None) -> list[EditRequest]:
    """Skip `offset` units, then take whole units while the edit count stays within `limit` (at least one)."""
    chosen: list[EditRequest] = []
    for unit in _units(requests)[offset:]:
        if limit is not None and chosen and len(chosen) + len(unit) > limit:
            break
        chosen.extend(unit)
        if limit is not None and len(chosen) >= limit:
            break
    return chosen


def _locality(cfg: DataConfig, requests: list[EditRequest], source: str, files: list[str], progress) -> list[LocalityProbe]:
    if cfg.locality == "none" or cfg.locality_limit == 0:
        return []
    if cfg.locality == "dataset":
        probes = list({p.prompt: p for r in requests for p in r.locality}.values())
        if not probes:
            raise DataError(f"{source}: data.locality is 'dataset' but its records carry no locality probes; "
                            f"use data.locality=known_1000 or none")
        return probes[: cfg.locality_limit]
    path = bundled_file(KNOWN_1000, cfg.root, progress)
    files.append(str(path))
    facts = known.parse(read_json(path), path)
    probes = known.spread(facts, cfg.locality_limit, {r.subject for r in requests})
    if not probes:
        raise DataError(f"{path}: no locality probes left (every fact is about an edited subject)")
    return probes


def load_edits(cfg: DataConfig, progress=None) -> EditSet:
    """The edits named by cfg (after offset/limit) with their locality probes; raises DataError on bad data.

    progress: callable for the one message a download prints (default: stderr).
    """
    if cfg.name in BUNDLED:
        layout, rel = BUNDLED[cfg.name]
        path = Path(cfg.path).expanduser() if cfg.path else bundled_file(rel, cfg.root, progress)
        prefix = cfg.name
        if cfg.path and not path.is_file():
            raise DataError(f"data.path {cfg.path}: no such file")
    else:
        path = Path(cfg.path or cfg.name).expanduser()
        layout, prefix = None, None
        if not path.is_file():
            raise DataError(f"data.name {cfg.name!r}: neither a bundled dataset ({', '.join(BUNDLED)}) "
                            f"nor an existing file ({path.resolve()})")
    layout, parsed = read_edits(path, layout, prefix)
    files = [str(path)]
    total = len(parsed.requests)
    if total == 0:
        skipped = ", ".join(f"{k}: {v}" for k, v in parsed.skipped.items()) or "none"
        raise DataError(f"{path}: no edits in the file (layout {layout}; skipped records: {skipped})")
    pool, dropped = parsed.requests, 0
    if cfg.dedupe:
        deduped = hygiene.dedupe(pool)
        pool, dropped = deduped.requests, deduped.dropped
    requests = select(pool, cfg.offset, cfg.limit)
    if not requests:
        raise DataError(f"{path}: no edits left after data.offset={cfg.offset} (the file has {len(pool)} edits "
                        f"in {len(_units(pool))} units)")
    requests = untouched_neighbours(requests)
    locality = _locality(cfg, requests, str(path), files, progress)
    return EditSet(name=cfg.name, requests=requests, locality=locality, skipped=dict(parsed.skipped), files=files,
                   unused=dict(parsed.unused), total=total, offset=cfg.offset, limit=cfg.limit,
                   duplicates=len(hygiene.duplicates(requests)), dedupe=cfg.dedupe, dropped_duplicates=dropped)


def untouched_neighbours(requests: list[EditRequest]) -> list[EditRequest]:
    """Drop neighborhood probes another edit of the trial rewrites: their answers are meant to change."""
    edited = {p for r in requests for p in (r.prompt, *r.paraphrases)}
    return [r if all(n.prompt not in edited for n in r.neighborhood)
            else replace(r, neighborhood=tuple(n for n in r.neighborhood if n.prompt not in edited))
            for r in requests]

