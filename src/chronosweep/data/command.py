"""`chronosweep data DATASET`: load a dataset the way a trial would and summarize what it holds."""

from __future__ import annotations

import argparse
from collections import Counter


def register(subparsers) -> None:
    from chronosweep.data.catalog import BUNDLED

    p = subparsers.add_parser(
        "data", help="load and summarize a dataset (counts by relation and kind, skipped records, probes)",
        description="Load DATASET exactly as a trial's data: section would and print what it holds. "
                    f"DATASET is a bundled name ({', '.join(BUNDLED)}) or a .json/.jsonl (MQuAKE-Remastered: .txt) file.")
    p.add_argument("dataset", metavar="DATASET")
    p.add_argument("--root", help="folder holding the bundled files (data.root; default $CHRONOSWEEP_DATA, then ../shared/data)")
    p.add_argument("--path", help="read this file for the named dataset (data.path)")
    p.add_argument("--limit", type=int, default=None, help="first N edits after --offset (default: all)")
    p.add_argument("--offset", type=int, default=0, help="skip this many edits (MQuAKE: cases) first")
    p.add_argument("--locality", choices=("known_1000", "dataset", "none"), default="known_1000",
                   help="where locality probes come from (data.locality)")
    p.add_argument("--locality-limit", type=int, default=50, help="at most this many locality probes")
    p.add_argument("--dedupe", action="store_true", help="drop edits repeating an earlier one's prompt and target "
                   "(data.dedupe)")
    p.add_argument("--export", metavar="FILE.jsonl", help="also write the selected edits in chronosweep's JSONL format")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from chronosweep.core.typed import ConfigError, build
    from chronosweep.data import load_edits, write_jsonl
    from chronosweep.data.config import DataConfig

    problems: list[str] = []
    raw = {"name": args.dataset, "path": args.path, "root": args.root, "limit": args.limit, "offset": args.offset,
           "locality": args.locality, "locality_limit": args.locality_limit, "dedupe": args.dedupe}
    cfg = build(DataConfig, raw, "data", problems)
    if problems:
        raise ConfigError(problems)
    edits = load_edits(cfg)
    print(summarize(edits, cfg))
    if args.export:
        path = write_jsonl(edits.requests, args.export)
        print(f"wrote {len(edits.requests)} edits to {path}")
    return 0


def summarize(edits, cfg) -> str:
    reqs = edits.requests
    kinds = Counter(r.kind for r in reqs)
    by_relation: dict[str, Counter] = {}
    for r in reqs:
        by_relation.setdefault(r.relation or "(none)", Counter())[r.kind] += 1
    cases = {m.case_id: m for r in reqs for m in r.multihop_cases}
    from chronosweep.data.hygiene import describe

    lines = [
        f"dataset {edits.name}: {', '.join(edits.files[:1])}",
        describe(edits),
        f"edits: {len(reqs)} (modification {kinds['modification']}, injection {kinds['injection']}; "
        f"offset {cfg.offset}, limit {cfg.limit if cfg.limit is not None else 'all'})",
        f"paraphrases: {sum(len(r.paraphrases) for r in reqs)}",
        f"by relation ({len(by_relation)}):",
    ]
    width = max(len("relation"), *(len(k) for k in by_relation))
    lines.append(f"  {'relation':<{width}}  modification  injection")
    for rel, c in sorted(by_relation.items(), key=lambda kv: (-sum(kv[1].values()), kv[0])):
        lines.append(f"  {rel:<{width}}  {c['modification']:>12}  {c['injection']:>9}")
    skipped = sum(edits.skipped.values())
    lines.append(f"skipped records (whole file): {skipped}")
    for reason, n in sorted(edits.skipped.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {reason}: {n}")
    for reason, n in sorted(edits.unused.items(), key=lambda kv: -kv[1]):
        lines.append(f"  not used: {reason}: {n}")
    hops = [h for m in cases.values() for h in m.hops]
    changed = sum(h.changed for h in hops)
    lines.append(f"multi-hop: {len(cases)} cases ({sum(len(r.multihop_cases) > 0 for r in reqs)} edits), {len(hops)} "
                 f"hops ({changed} edited, {len(hops) - changed} unchanged), "
                 f"{sum(len(m.questions) for m in cases.values())} questions")
    lines.append(f"neighborhood probes: {sum(len(r.neighborhood) for r in reqs)} "
                 f"(about {len({r.subject for r in reqs if r.neighborhood})} edited subjects)")
    from chronosweep.core.history import plan

    hist = plan(reqs)
    lines.append(f"history probes (eval.history_holders 3): {hist.n_with_probes} of {len(reqs)} edits, "
                 f"{sum(f.kind == 'history' for f in hist.evaluation)} past-holder and "
                 f"{sum(f.kind == 'temporal' for f in hist.evaluation)} current-holder probes")
    for reason, n in sorted(hist.skipped.items(), key=lambda kv: -kv[1]):
        lines.append(f"  edits without: {reason}: {n}")
    for reason, n in sorted(hist.holders_skipped.items(), key=lambda kv: -kv[1]):
        lines.append(f"  past holders without: {reason}: {n}")
    source = {"known_1000": edits.files[-1] if len(edits.files) > 1 else "known_1000",
              "dataset": "the records' own", "none": "none"}[cfg.locality]
    lines.append(f"locality probes: {len(edits.locality)} ({source})")
    return "\n".join(lines)
