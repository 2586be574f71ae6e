from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.tiny import make_tiny_model

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "llama")


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = Path(os.environ.get("CHRONOSWEEP_DATA", SHARED_DATA))
    assert (root / "dyknow" / "grc_generated.json").exists(), f"evaluation data not found under {root}"
    return root


@pytest.fixture(scope="session")
def fact_llama_dir(tmp_path_factory) -> Path:
    """A tiny LLaMA trained on tests.tiny_facts.FACTS (a few seconds), shared by every test module."""
    from tests.tiny_facts import make_fact_model

    return make_fact_model(tmp_path_factory.mktemp("facts") / "llama", arch="llama")


@pytest.fixture(scope="session")
def fact_gpt2_dir(tmp_path_factory) -> Path:
    """The same facts in a tiny GPT-2 (Conv1D MLPs)."""
    from tests.tiny_facts import make_fact_model

    return make_fact_model(tmp_path_factory.mktemp("facts") / "gpt2", arch="gpt2")
