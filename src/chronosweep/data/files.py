"""Where the bundled evaluation files come from: the data root, the cache, or their public origin.

Resolution for a bundled file REL (e.g. ``dyknow/grc_generated.json``):
1. the data root: ``data.root``, else ``$CHRONOSWEEP_DATA``, else ``../shared/data`` beside the checkout
   (or beside the working directory) when it exists;
2. the download cache ``$CHRONOSWEEP_CACHE/data/REL``;
3. a download from the file's public origin (repository + commit below) into that cache, accepted only
   when its SHA-256 matches. The data root is never written to.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import chronosweep
from chronosweep.data.errors import DataError


@dataclass(frozen=True)
class Origin:
    sha256: str
    # GitHub repository, commit and path of the byte-identical public copy; None when there is none.
    repo: str | None = None
    commit: str | None = None
    path: str | None = None
    # Said in the error when the file cannot be found or fetched.
    note: str = ""

    @property
    def url(self) -> str | None:
        if not self.repo:
            return None
        return f"https://raw.githubusercontent.com/{self.repo}/{self.commit}/{self.path}"


# Digests from shared/data/SHA256SUMS; origins from shared/data/README.md (short commits as published there).
ORIGINS: dict[str, Origin] = {
    "dyknow/grc_generated.json": Origin(
        "8f5a8b8af4e9b62333ede181ae96d24182701f48873291042ceb70f305db7f99",
        "sislab-unitn/DyKnow", "1182dd89", "grc_generated.json"),
    "mquake/MQuAKE-T.sample3.json": Origin(
        "acdb73258f2b3ec79310bfeaef038bb0c1705226c42d8606c954351d4625c070",
        note="it is a re-serialized 3-case sample (case_id 1, 2, 1868) of MQuAKE-T with no public copy of its own; "
             "for the full benchmark get datasets/MQuAKE-T.json from https://github.com/princeton-nlp/MQuAKE "
             "and pass it with data.path (--path)"),
    "mquake/MQuAKE-hard.json": Origin(
        "fc78dc7bec4625d3ce6e2923acae7f1920691b0b23e663182bf799f2856f2a11",
        "wangywUST/DeepEdit", "c90b2958", "datasets/MQuAKE-hard.json"),
    # MQuAKE-Remastered (Zhong et al., 2024), derived from MQuAKE (Zhong et al., 2023); CC BY 4.0.
    "mquake-remastered/mquake-T.txt": Origin(
        "9d6f0b0994414d91b00ce24fb476fc1978a3b09ba52b0795a638e9946d48cc9d",
        "leo-liuzy/mend", "96c5d60729e2ce3a5b2918f3a12df44af92e84b5", "spotcheck/mquake-T.txt"),
    "knowedit/recent_train.json": Origin(
        "e918ad6fdf7dedb1bb06358ae478d054767a27afae11fff1c83a2b5c187359d3",
        "5456es/Edit_Evaluation", "61fbce928af13bd89cb3586e20ee712ed4ddff7d",
        "KnowEdit/benchmark/wiki_recent/recent_train.json"),
    "counterfact/counterfact-edit-1k.json": Origin(
        "a76ca148f3d7214d2939aaa023da12f400770898de1d6bb45ba8b04cf2d88db7",
        "Jometeorie/KnowledgeSpread", "51d7402617c2e52bde0dc11b76e400c3725a181a",
        "data/counterfact/counterfact-edit-1k.json"),
    "zsre/zsre_mend_train-1k.json": Origin(
        "e62596101d8ed551889c26c0d2a5277f92eaef3b14416d8eaee39b04a244ab60",
        "Jometeorie/KnowledgeSpread", "51d7402617c2e52bde0dc11b76e400c3725a181a",
        "data/zsre/zsre_mend_train-1k.json"),
    "known_1000/known_1000.json": Origin(
        "7ccd1d2649eaa94db24bdf2bcc19f6305bdd51ff47bc981641ed8bd973f9d5e2",
        "lab-paper-code/dual_path_attribution", "411720aa", "data/known_1000.json"),
}

ENV_ROOT = "CHRONOSWEEP_DATA"


def data_root(root: str | None) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The data root to read, and every place considered with why (for the error when a file is missing).

    An explicit root (data.root or $CHRONOSWEEP_DATA) is the only one looked at: a user who names a folder
    means that folder, not a copy that happens to sit beside the checkout.
    """
    if root:
        path = Path(root).expanduser()
        return path, [(path, "data.root")]
    env = os.environ.get(ENV_ROOT)
    if env:
        path = Path(env).expanduser()
        return path, [(path, f"${ENV_ROOT}")]
    beside = [Path(chronosweep.__file__).resolve().parents[3] / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    for path in beside:
        if path.is_dir():
            return path, [(path, "beside the checkout")]
    return None, [(p, "absent") for p in dict.fromkeys(beside)]


def cache_root() -> Path:
    from chronosweep.core.models import cache_dir

    return cache_dir() / "data"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest: Path) -> None:
    """Fetch url to dest (raises OSError on any network failure); tests replace this to stay offline."""
    with urllib.request.urlopen(url, timeout=30) as resp, open(dest, "wb") as out:
        while block := resp.read(1 << 20):
            out.write(block)


def fetch(rel: str, progress=None) -> Path:
    """Download a bundled file into the cache, verified against its digest; returns the cached path."""
    origin = ORIGINS[rel]
    target = cache_root() / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda msg: print(msg, file=sys.stderr))
    say(f"chronosweep: {rel} not found locally; downloading {origin.url}")
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".part-")
    os.close(fd)
    try:
        # Looked up on the module so tests can replace it.
        sys.modules[__name__].download(origin.url, Path(tmp))
        digest = sha256(Path(tmp))
        if digest != origin.sha256:
            raise OSError(f"SHA-256 mismatch (got {digest}, expected {origin.sha256})")
        os.replace(tmp, target)  # atomic: concurrent trials never see a half-written file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def bundled_file(rel: str, root: str | None, progress=None) -> Path:
    """Path of a bundled file: data root, then cache, then download; a DataError says where to put it."""
    base, looked = data_root(root)
    if base is not None and (base / rel).is_file():
        return base / rel
    origin = ORIGINS[rel]
    cached = cache_root() / rel
    if cached.is_file() and sha256(cached) == origin.sha256:
        return cached
    reason = ""
    if origin.url:
        try:
            return fetch(rel, progress)
        except OSError as err:  # URLError and HTTPError are OSErrors
            reason = f"downloading {origin.url} failed: {err}"
    else:
        reason = f"it cannot be downloaded: {origin.note}"
    places = "; ".join([*(f"{p / rel} ({why})" for p, why in looked), f"{cached} (download cache)"])
    raise DataError(
        f"data file {rel} not found. Looked in: {places}.\n{reason}.\n"
        f"Fix: put the file at <DIR>/{rel} and pass --root DIR (data.root) or set ${ENV_ROOT}=DIR, "
        f"or pass the file itself with --path (data.path)."
    )


def read_json(path: Path):
    """Parsed JSON, or a DataError naming the file, line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a JSON file") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON at line {err.lineno}, column {err.colno}: {err.msg}") from None


def read_jsonl(path: Path) -> list[tuple[int, object]]:
    """(line number, parsed object) for every non-blank line; all bad lines reported together."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err})") from None
    out, bad = [], []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append((n, json.loads(line)))
        except json.JSONDecodeError as err:
            bad.append(f"line {n}, column {err.colno}: not valid JSON: {err.msg}")
    if bad:
        raise DataError(f"invalid JSONL in {path} ({len(bad)} bad line{'s' if len(bad) != 1 else ''}):", bad)
    return out
