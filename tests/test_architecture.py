"""The package's shape: one installed package, imports in one direction, validation without model libraries."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "chronosweep"

# Sub-packages from the ground floor up: a module may import its own sub-package and those of lower rank only.
RANKS = {"core": 0, "data": 1, "evaluation": 1, "editing": 1, "trial": 2, "sweep": 3, "report": 3, "cli": 4}


def _subpackage(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "chronosweep":
        return None
    return parts[1] if len(parts) > 1 and parts[1] in RANKS else "(top)"


def _imports(path: Path) -> set[str]:
    """Every chronosweep module a file imports, at module level or inside functions."""
    tree = ast.parse(path.read_text(), str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {m for m in found if m.startswith("chronosweep.")}


def _edges() -> dict[tuple[str, str], list[str]]:
    edges: dict[tuple[str, str], list[str]] = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("")
        here = _subpackage(".".join(rel.parts))
        for target in _imports(path):
            there = _subpackage(target)
            if there and there != "(top)" and here != there:
                edges.setdefault((here, there), []).append(str(path.relative_to(SRC)))
    return edges


def test_every_subpackage_has_a_rank():
    found = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert found == set(RANKS)


def test_imports_go_one_way_and_form_no_cycle():
    edges = _edges()
    wrong = {f"{a} -> {b}": files for (a, b), files in edges.items()
             if a != "(top)" and RANKS[b] >= RANKS[a]}
    assert not wrong, f"imports against the layering {RANKS}: {wrong}"
    # With every edge going down in rank there can be no cycle; check it directly too.
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            assert state.get(nxt) != 1, f"import cycle: {' -> '.join([*trail, node, nxt])}"
            if nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = 2

    for node in list(graph):
        if node not in state:
            visit(node, [])


@pytest.mark.parametrize("name", ["report", "evaluation", "editing", "sweep", "cluster"])
def test_one_top_level_package_is_installed(name, tmp_path):
    # From an empty folder only the installed packages are importable.
    run = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode != 0 and "No module named" in run.stderr


def test_config_validation_imports_no_model_library(tmp_path):
    code = ("import sys\nfrom chronosweep.cli import main\n"
            f"code = main(['edit', '--check', '--set', 'lora.rank=abc', '--out', {str(tmp_path / 'x')!r}])\n"
            "assert code == 2, code\n"
            "heavy = [m for m in ('torch', 'peft', 'transformers', 'deepspeed', 'ray', 'polars') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "lora.rank: expected an integer, got 'abc'" in run.stderr


def test_the_method_registry_types_options_without_importing_them():
    code = ("import sys\nfrom chronosweep.editing.registry import METHODS\n"
            "assert list(METHODS) == ['lora', 'lora-local', 'ptuning', 'full', 'freeze', 'rome', 'rome-preserve', "
            "'memit', 'memit-preserve'], "
            "list(METHODS)\n"
            "assert all(s.options.__module__.endswith('.options') for s in METHODS.values())\n"
            "assert 'torch' not in sys.modules and 'peft' not in sys.modules\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
