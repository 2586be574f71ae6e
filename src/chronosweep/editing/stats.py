"""Second-moment statistics C = E[k k^T] of the MLP down-projection input, cached on disk.

ROME whitens its key with C^-1; MEMIT regularises its least-squares update with lambda * C. C depends
only on the model, the layer and the corpus, so it is computed once and shared by every trial:
``<cache>/stats/<model fingerprint>/<corpus>-<tokens>t/layerNNN.pt``. Writers hold a per-file lock
and publish with os.replace, so concurrent trials wait for each other instead of computing twice.

Corpora are packed into full rows of SEQ_LEN tokens (no padding), and a forward pass stops right
after the deepest layer it needs, so neither later layers nor the LM head run.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from chronosweep.core.archs import Arch
from chronosweep.core.errors import UserError
from chronosweep.core.models import file_lock
from chronosweep.editing.locate import StopForward, down_proj

SEQ_LEN = 128
# The model-sampled corpus is a property of the model, not of a trial: a fixed seed lets every trial share it.
CORPUS_SEED = 1234
# Words the sampled passages start from when the tokenizer has no BOS token.
OPENINGS = ("The", "In", "A", "It", "This", "When", "There", "He", "She", "We", "One", "After", "I", "As", "Many", "On")


class StatsCorpusError(UserError, RuntimeError):
    pass


@dataclass
class LayerStats:
    mom2: torch.Tensor  # (mlp width, mlp width) float32, on CPU
    count: int  # tokens it was estimated over
    cached: bool  # read from the cache rather than computed by this call
    path: Path


def corpus_slug(corpus: str) -> str:
    """A short file-name-safe key for the corpus; files are keyed by their content."""
    if corpus == "model":
        return f"model-s{CORPUS_SEED}"
    if corpus.startswith("hf:"):
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", corpus[3:])[:40]
        return f"hf-{name}-{hashlib.sha256(corpus.encode()).hexdigest()[:8]}"
    path = Path(corpus).expanduser()
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return f"file-{re.sub(r'[^A-Za-z0-9_.-]+', '_', path.stem)[:24]}-{digest.hexdigest()[:12]}"


def stats_dir(cache_dir: Path, fingerprint: str, corpus: str, samples: int) -> Path:
    return Path(cache_dir) / "stats" / fingerprint / f"{corpus_slug(corpus)}-{samples}t"


def atomic_save(obj, path: Path) -> None:
    """Write beside the target, then rename: a reader sees the old file, no file, or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def drop_stale_temps(path: Path) -> None:
    """Remove what a writer killed mid-save left beside path; call only while holding path's lock."""
    for tmp in path.parent.glob(f"{path.name}*.tmp"):
        tmp.unlink(missing_ok=True)


def read_cached(path: Path):
    """A cached tensor file, or None when it cannot be read (it is then computed again).

    weights_only: these files are plain tensors and dicts; nothing in the cache is ever unpickled as code.
    """
    try:
        return torch.load(path, weights_only=True)
    except FileNotFoundError:
        return None
    except Exception as err:  # noqa: BLE001 - a truncated or foreign file raises many kinds
        print(f"chronosweep: ignoring unreadable cache file {path} ({type(err).__name__}: {err}); recomputing it",
              file=sys.stderr)
        return None


# ---------------------------------------------------------------- corpora as token streams

def _sample_from_model(model, tokenizer, samples: int, device) -> torch.Tensor:
    """Rows of SEQ_LEN tokens sampled from the model (temperature 1, top-p 0.95), seeded."""
    # Plain-text openings (with whatever special tokens the tokenizer adds by itself); only those of the
    # most common length, so a batch needs no padding and every row is exactly SEQ_LEN long.
    encoded = [tokenizer(w, add_special_tokens=True)["input_ids"] for w in OPENINGS]
    lengths = [len(e) for e in encoded]
    common = max(set(lengths), key=lengths.count)
    starts = [e for e in encoded if len(e) == common]
    n_rows = -(-samples // SEQ_LEN)
    batch = 128 if torch.device(device).type == "cuda" else 32
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = []
    devices = [device] if torch.device(device).type == "cuda" else []
    bar = tqdm(total=n_rows * SEQ_LEN, desc="stats corpus (sampling the model)", unit="tok", dynamic_ncols=True)
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(CORPUS_SEED)
        for first in range(0, n_rows, batch):
            k = min(batch, n_rows - first)
            ids = torch.tensor([starts[(first + i) % len(starts)] for i in range(k)], device=device)
            # min_new_tokens keeps every row full length: the corpus packs without padding.
            new = SEQ_LEN - common
            gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=0,
                                 top_p=0.95, temperature=1.0, max_new_tokens=new, min_new_tokens=new, pad_token_id=pad)
            out.append(gen[:, :SEQ_LEN].cpu())
            bar.update(k * SEQ_LEN)
    bar.close()
    return torch.cat(out).reshape(-1)[:samples].to(torch.int32)


def _passages_from_file(path: Path):
    text = path.read_text(encoding="utf-8", errors="replace")
    for passage in re.split(r"\n\s*\n", text):
        passage = passage.strip()
        if passage:
            yield passage


def _passages_from_hf(spec: str):
    parts = spec[3:].split(":")
    name, config, split = parts[0], (parts[1] if len(parts) > 1 and parts[1] else None), (parts[2] if len(parts) > 2 else "train")
    try:
        import datasets
    except ImportError:
        raise StatsCorpusError(f"stats_corpus {spec!r} needs the `datasets` package (pip install datasets)") from None
    try:
        ds = datasets.load_dataset(name, config, split=split, streaming=True)
        for record in ds:
            text = record.get("text") if isinstance(record, dict) else None
            if text is None:
                raise StatsCorpusError(f"stats_corpus {spec!r}: records have no 'text' field (fields: {sorted(record)})")
            if text.strip():
                yield text.strip()
    except StatsCorpusError:
        raise
    except Exception as err:  # noqa: BLE001 - datasets/network raise many kinds
        raise StatsCorpusError(
            f"stats_corpus {spec!r}: could not read the Hugging Face dataset ({type(err).__name__}: {err}). "
            "Without network access use stats_corpus: model (text sampled from the model) or a local text file."
        ) from err


def _pack(tokenizer, passages, samples: int, where: str) -> torch.Tensor:
    """Passages joined by EOS into one stream of (up to) `samples` tokens."""
    sep = tokenizer.eos_token_id
    stream: list[int] = []
    bar = tqdm(total=samples, desc=f"stats corpus ({where})", unit="tok", dynamic_ncols=True)
    for passage in passages:
        ids = tokenizer(passage, add_special_tokens=False)["input_ids"]
        if sep is not None:
            ids = ids + [sep]
        take = ids[: samples - len(stream)]
        stream.extend(take)
        bar.update(len(take))
        if len(stream) >= samples:
            break
    bar.close()
    if not stream:
        raise StatsCorpusError(f"stats_corpus {where}: holds no text")
    return torch.tensor(stream, dtype=torch.int32)


def corpus_tokens(model, tokenizer, corpus: str, samples: int, folder: Path, device) -> torch.Tensor:
    """The corpus as one token stream, built once per (model, corpus, size) and cached beside the statistics."""
    path = folder / "corpus.pt"
    with file_lock(folder / "corpus.lock"):
        drop_stale_temps(path)
        tokens = read_cached(path)
        if isinstance(tokens, torch.Tensor) and tokens.ndim == 1 and len(tokens):
            return tokens
        if corpus == "model":
            tokens = _sample_from_model(model, tokenizer, samples, device)
        elif corpus.startswith("hf:"):
            tokens = _pack(tokenizer, _passages_from_hf(corpus), samples, corpus)
        else:
            file = Path(corpus).expanduser()
            if not file.is_file():
                raise StatsCorpusError(f"stats_corpus {corpus!r}: no such file")
            tokens = _pack(tokenizer, _passages_from_file(file), samples, str(file))
        atomic_save(tokens, path)
        return tokens


# ---------------------------------------------------------------- accumulation

def accumulate_moments(model, modules: dict, tokens: torch.Tensor, device, desc: str, whole: bool = False) -> dict:
    """E[x x^T] of each module's input over the token stream; every forward stops once all of them have read theirs,
    so neither the later layers nor the LM head run. modules: {key: module} (ROME/MEMIT: layer -> down-projection);
    whole: run the whole model (a module may be the LM head), not only its decoder."""
    sums: dict = {}
    seen: set = set()

    def make_hook(key):
        def hook(module, args):
            x = args[0].reshape(-1, args[0].shape[-1]).float()
            # fp32 products of one batch, summed across batches in fp64.
            part = (x.T @ x).double()
            sums[key] = part if key not in sums else sums[key] + part
            seen.add(key)
            if len(seen) == len(modules):
                raise StopForward
        return hook

    handles = [m.register_forward_pre_hook(make_hook(key)) for key, m in modules.items()]
    n_full = len(tokens) // SEQ_LEN
    rows = tokens[: n_full * SEQ_LEN].reshape(n_full, SEQ_LEN).long()
    chunks = list(rows.split(max(1, (16384 if torch.device(device).type == "cuda" else 2048) // SEQ_LEN)))
    rest = tokens[n_full * SEQ_LEN:].long()
    if len(rest):
        chunks.append(rest[None])
    bar = tqdm(total=len(tokens), desc=desc, unit="tok", dynamic_ncols=True)
    try:
        for chunk in chunks:
            chunk = chunk.to(device)
            seen.clear()
            try:
                with torch.no_grad():
                    (model if whole else model.base_model)(input_ids=chunk, attention_mask=torch.ones_like(chunk),
                                                           use_cache=False)
            except StopForward:
                pass
            bar.update(chunk.numel())
    finally:
        bar.close()
        for h in handles:
            h.remove()
    return {key: (s / len(tokens)).float().cpu() for key, s in sums.items()}


def second_moments(model, tokenizer, arch: Arch, layers: list[int], *, corpus: str, samples: int, fingerprint: str,
                   cache_dir: Path, device) -> dict[int, LayerStats]:
    """C for each layer, from the cache where it is there; the missing layers are computed in one pass."""
    folder = stats_dir(cache_dir, fingerprint, corpus, samples)
    paths = {layer: folder / f"layer{layer:03d}.pt" for layer in sorted(set(layers))}
    out: dict[int, LayerStats] = {}

    def load(layer: int) -> LayerStats | None:
        blob = read_cached(paths[layer])
        if not (isinstance(blob, dict) and isinstance(blob.get("mom2"), torch.Tensor) and blob["mom2"].ndim == 2
                and blob["mom2"].shape[0] == blob["mom2"].shape[1] and isinstance(blob.get("count"), int)):
            return None
        return LayerStats(mom2=blob["mom2"], count=blob["count"], cached=True, path=paths[layer])

    for layer in paths:
        if paths[layer].exists() and (stats := load(layer)) is not None:
            out[layer] = stats
    missing = [layer for layer in paths if layer not in out]
    if not missing:
        return out
    with contextlib.ExitStack() as stack:
        # Locks in layer order, so two trials wanting overlapping layers cannot deadlock.
        for layer in missing:
            stack.enter_context(file_lock(folder / f"layer{layer:03d}.lock"))
        still = []
        for layer in missing:
            drop_stale_temps(paths[layer])
            stats = load(layer) if paths[layer].exists() else None
            if stats is None:
                still.append(layer)
            else:
                out[layer] = stats
        if still:
            tokens = corpus_tokens(model, tokenizer, corpus, samples, folder, device)
            moments = accumulate_moments(model, {layer: down_proj(model, arch, layer) for layer in still}, tokens,
                                         device, desc=f"stats C (layer{'s' if len(still) > 1 else ''} "
                                                      f"{', '.join(map(str, still))})")
            for layer in still:
                atomic_save({"mom2": moments[layer], "count": len(tokens), "layer": layer, "corpus": corpus,
                              "module": arch.down_proj, "fingerprint": fingerprint}, paths[layer])
                out[layer] = LayerStats(mom2=moments[layer], count=len(tokens), cached=False, path=paths[layer])
    return out
