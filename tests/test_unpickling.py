"""No user file is ever unpickled: every torch.load says weights_only=True, and no code imports a pickler.

A cached statistics file, an adapter or a run dir can come from someone else; unpickling one runs its code.
The scan reads the source of the package, the tests and the benchmarks.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCANNED = [ROOT / "src", ROOT / "tests", ROOT / "benchmarks"]
PICKLERS = {"pickle", "cPickle", "_pickle", "cloudpickle", "dill", "joblib"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def unsafe_loads(source: str, filename: str = "<source>") -> list[str]:
    """'file:line: what' for every torch.load without weights_only=True and every import of a pickler."""
    tree = ast.parse(source, filename)
    aliases: dict[str, str] = {}
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                aliases[alias.asname or alias.name] = alias.name
                if alias.name.split(".")[-1] in PICKLERS:
                    found.append((node.lineno, f"imports {alias.name}"))
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
                if node.module.split(".")[-1] in PICKLERS or alias.name in PICKLERS:
                    found.append((node.lineno, f"imports {node.module}.{alias.name}"))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        head, _, rest = _dotted(node.func).partition(".")
        name = ".".join(p for p in (aliases.get(head, head), rest) if p)
        module, _, attr = name.rpartition(".")
        if attr == "load" and module.split(".")[-1] == "torch":
            safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                       for k in node.keywords)
            if not safe:
                found.append((node.lineno, "torch.load without weights_only=True"))
    return [f"{filename}:{line}: {what}" for line, what in sorted(found)]


def test_the_scan_catches_what_it_looks_for():
    bad = ("import torch\nfrom torch import load\nimport ray.cloudpickle as cp\nfrom pickle import loads\n"
           "torch.load(p)\ntorch.load(p, weights_only=False)\nload(p)\nt = torch\nt.load(p)\n")
    assert unsafe_loads(bad) == [
        "<source>:3: imports ray.cloudpickle", "<source>:4: imports pickle.loads",
        "<source>:5: torch.load without weights_only=True", "<source>:6: torch.load without weights_only=True",
        "<source>:7: torch.load without weights_only=True"]  # t = torch is beyond a scan; nothing does that
    assert unsafe_loads("import torch as th\nth.load(p, map_location='cpu', weights_only=True)\n") == []
    assert unsafe_loads("import torch as th\nth.load(p)\n") == ["<source>:2: torch.load without weights_only=True"]


def test_no_source_file_unpickles():
    files = [p for folder in SCANNED for p in folder.rglob("*.py") if p != Path(__file__)]
    assert len(files) > 50
    problems = [line for path in files for line in unsafe_loads(path.read_text(), str(path.relative_to(ROOT)))]
    assert not problems, "\n".join(problems)
