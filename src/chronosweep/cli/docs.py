"""The generated parts of the docs: the metric table (docs/run-dir.md) and every method's options (docs/methods.md).

Each part sits between ``<!-- generated:NAME -->`` and ``<!-- end generated:NAME -->``. ``python -m
chronosweep.cli.docs`` rewrites them from the registries; tests/test_docs.py fails when a doc is out of date.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

from chronosweep.editing.options import help_of
from chronosweep.editing.registry import METHODS
from chronosweep.evaluation import metrics as registry


def _value(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return _value(f.default)
    if f.default_factory is not dataclasses.MISSING:
        return _value(f.default_factory())
    return ""


def options_table(cls: type) -> str:
    """One row per option: the class's own options first, then those it shares with other methods."""
    fields = [f for f in dataclasses.fields(cls) if f.init]
    own = set(cls.__annotations__)
    shared_bases = [b for b in cls.__mro__[1:] if dataclasses.is_dataclass(b)]
    base_names = {n for b in shared_bases for n in b.__annotations__}
    first = [f for f in fields if f.name in own and f.name not in base_names]
    rest = [f for f in fields if f not in first]
    lines = ["| option | default | meaning |", "|---|---|---|"]
    for f in first + rest:
        text = help_of(cls, f.name).replace("|", "\\|")
        lines.append(f"| `{f.name}` | `{_default(f)}` | {text} |")
    return "\n".join(lines)


def metric_table() -> str:
    lines = ["| metric | kind | unit | interval | better | objective | meaning |", "|---|---|---|---|---|---|---|"]
    for m in registry.METRICS.values():
        lines.append(f"| `{m.name}` | {m.kind} | {m.unit or ''} | {m.interval or ''} | "
                     f"{'higher' if m.direction == 'max' else 'lower'} | {'yes' if m.objective else 'no'} | "
                     f"{m.meaning} |")
    return "\n".join(lines)


def history_table() -> str:
    lines = ["| method | keys every history row carries |", "|---|---|"]
    for spec in METHODS.values():
        lines.append(f"| `{spec.name}` | {', '.join(f'`{k}`' for k in spec.history_keys)} |")
    return "\n".join(lines)


def sections() -> dict[str, dict[str, str]]:
    """doc file (relative to the repository) -> generated part name -> its text."""
    methods = {f"options:{name}": options_table(spec.options) for name, spec in METHODS.items()}
    return {"docs/run-dir.md": {"metrics": metric_table(), "history": history_table()}, "docs/methods.md": methods}


def _pattern(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- generated:{re.escape(name)} -->\n)(.*?)(<!-- end generated:{re.escape(name)} -->)",
                      re.S)


def render(text: str, parts: dict[str, str]) -> tuple[str, list[str]]:
    """text with every generated part replaced; the names of parts whose markers are missing."""
    missing = []
    for name, body in parts.items():
        pattern = _pattern(name)
        if not pattern.search(text):
            missing.append(name)
            continue
        text = pattern.sub(lambda m, body=body: m.group(1) + body + "\n" + m.group(3), text)
    return text, missing


def main(root: str | Path = ".") -> int:
    root = Path(root)
    code = 0
    for rel, parts in sections().items():
        path = root / rel
        text, missing = render(path.read_text(), parts)
        if missing:
            print(f"{rel}: no markers for {', '.join(missing)}", file=sys.stderr)
            code = 1
        path.write_text(text)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "."))
