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
