"""The docs say what the code does: generated tables are current, README defaults match the dataclasses."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from chronosweep.cli.docs import metric_table, render, sections
from chronosweep.data.config import DataConfig
from chronosweep.editing.registry import METHODS
from chronosweep.editing.runtime import DeepSpeedConfig
from chronosweep.evaluation import metrics as registry
from chronosweep.evaluation.config import EvalConfig
from chronosweep.evaluation.objective import Objective
from chronosweep.trial.config import TrialConfig

ROOT = Path(__file__).resolve().parents[1]


def test_generated_docs_are_up_to_date():
    for rel, parts in sections().items():
        text = (ROOT / rel).read_text()
        rendered, missing = render(text, parts)
        assert not missing, f"{rel}: no markers for {missing}"
        assert rendered == text, f"{rel} is out of date: run python -m chronosweep.cli.docs"


def test_the_metric_table_lists_every_registered_metric_once():
    text = (ROOT / "docs" / "run-dir.md").read_text()
    table = re.search(r"<!-- generated:metrics -->\n(.*?)<!-- end generated:metrics -->", text, re.S).group(1)
    names = re.findall(r"^\| `([a-z_0-9]+)` \|", table, re.M)
    assert names == list(registry.METRICS)


def test_adding_a_metric_is_one_registry_entry_and_its_unit_function():
    from chronosweep.evaluation.scoring import aggregate, unit_values

    def first_word_units(rows, side):
        return {r["case_id"]: float(r["post" if side == "post" else "pre"].split()[:1] == ["yes"])
                for r in rows if r["probe"] == "rewrite"}

    metric = registry.Metric("first_word_yes", "first word is yes", "share of edit prompts answered 'yes'", "quality",
                             probe="rewrite", unit="edit", interval="wilson", units=first_word_units)
    registry.register(metric)
    try:
        rows = [{"probe": "rewrite", "case_id": "a", "pre": "no", "post": "yes sir", "correct": True},
                {"probe": "rewrite", "case_id": "b", "pre": "yes", "post": "no", "correct": False}]
        assert aggregate(unit_values(rows))["first_word_yes"] == 0.5
        assert aggregate(unit_values(rows, "pre"), "pre")["first_word_yes"] == 0.5
        problems: list[str] = []
        Objective(metric="first_word_yes").check("objective", problems)
        assert problems == []
        assert "| `first_word_yes` | quality | edit | wilson | higher | yes |" in metric_table()
        # ... and the checked-in docs no longer match until they are regenerated.
        text = (ROOT / "docs" / "run-dir.md").read_text()
        assert render(text, sections()["docs/run-dir.md"])[0] != text
    finally:
        del registry.METRICS["first_word_yes"]


def test_every_method_option_has_help_text():
    from chronosweep.editing.options import help_of

    for spec in METHODS.values():
        for f in dataclasses.fields(spec.options):
            assert help_of(spec.options, f.name), f"{spec.name}.{f.name} has no help text"


# The README's key table: `key`[, `key` ...] | `default`[, `default` ...] | meaning
_ROW = re.compile(r"^\| ((?:`[^`]+`(?:, )?)+) \| ((?:`[^`]*`(?:, )?)+) \|", re.M)


def _field(key: str):
    head, _, rest = key.partition(".")
    if head in METHODS and rest:
        return METHODS[head].options, rest
    for section, cls in (("data", DataConfig), ("eval", EvalConfig), ("deepspeed", DeepSpeedConfig)):
        if head == section and rest:
            return cls, rest
    return TrialConfig, key


def _default(cls, name):
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def test_readme_option_defaults_match_the_dataclasses():
    text = (ROOT / "README.md").read_text()
    checked = 0
    for keys, defaults in _ROW.findall(text):
        keys = re.findall(r"`([^`]+)`", keys)
        values = re.findall(r"`([^`]*)`", defaults)
        if len(keys) != len(values) or not all(re.fullmatch(r"[a-z_][a-z_0-9.]*", k) for k in keys):
            continue
        for key, shown in zip(keys, values):
            cls, name = _field(key)
            if name not in {f.name for f in dataclasses.fields(cls)}:
                pytest.fail(f"README names {key}, which is not an option")
            want = _default(cls, name)
            got = yaml.safe_load(shown) if shown not in ("auto", ".", '"."') else shown.strip('"')
            if isinstance(want, float) or isinstance(got, float):
                assert float(got) == pytest.approx(float(want)), key
            else:
                assert got == want or str(got) == str(want), (key, got, want)
            checked += 1
    assert checked >= 20
