"""A model's shape as numbers (no weights, no torch): where it comes from and how many parameters sit where.

Sizing a sweep before launch needs the numbers of a model's config.json, not the model. They come from, in order:
a local model directory, a built-in model's converted directory, the local Hugging Face cache (no network), and
the shipped table ``known_models.yaml`` of well-known architectures keyed by their Hugging Face ids, so
``meta-llama/Llama-2-7b-hf`` can be sized on a machine that never downloaded it.

Parameter counts follow the modules transformers builds for each family (tests check them against real
randomly initialised models); embeddings tied to the output head are counted once.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

from chronosweep.core.errors import UserError

# Families whose blocks are LLaMA's: attention q/k/v/o (+ optional biases), a gated MLP, RMSNorms.
_LLAMA_LIKE = {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text"}
# Norms per block: Gemma 2/3 also normalise after attention and after the MLP.
_NORMS_PER_BLOCK = {"gemma2": 4, "gemma3_text": 4}


class ShapeError(UserError, ValueError):
    pass


@dataclass(frozen=True)
class ModelShape:
    name: str
    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    tie_word_embeddings: bool
    # q/k/v projections carry biases (Qwen2), and every linear layer (GPT-2, Falcon's LayerNorms aside).
    qkv_bias: bool = False
    linear_bias: bool = False
    # Learned position embeddings (GPT-2's n_positions); 0 for rotary models.
    learned_positions: int = 0
    # Where the numbers came from: a path, "huggingface cache" or "chronosweep table".
    source: str = ""

    # ---------------------------------------------------------------- dimensions

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def gated(self) -> bool:
        """A gated MLP (gate, up, down) rather than two matrices (GPT-2, Falcon)."""
        return self.model_type in _LLAMA_LIKE

    @property
    def layer_norm(self) -> bool:
        """LayerNorm with a bias (GPT-2, Falcon) rather than RMSNorm."""
        return self.model_type in ("gpt2", "falcon")

    # ---------------------------------------------------------------- parameters

    def linear(self, fan_in: int, fan_out: int, bias: bool | None = None) -> int:
        return fan_in * fan_out + (fan_out if (self.linear_bias if bias is None else bias) else 0)

    def module_params(self) -> dict[str, int]:
        """Parameters of each leaf module of one block, by the names chronosweep.core.archs uses."""
        h, q, kv, i = self.hidden_size, self.q_dim, self.kv_dim, self.intermediate_size
        if self.model_type == "gpt2":
            return {"c_attn": self.linear(h, 3 * h), "attn.c_proj": self.linear(h, h), "c_fc": self.linear(h, i),
                    "c_proj": self.linear(i, h)}
        if self.model_type == "falcon":
            return {"query_key_value": self.linear(h, q + 2 * kv), "self_attention.dense": self.linear(q, h),
                    "dense_h_to_4h": self.linear(h, i), "dense_4h_to_h": self.linear(i, h)}
        bias = self.qkv_bias or self.linear_bias
        return {"q_proj": self.linear(h, q, bias), "k_proj": self.linear(h, kv, bias), "v_proj": self.linear(h, kv, bias),
                "o_proj": self.linear(q, h), "gate_proj": self.linear(h, i), "up_proj": self.linear(h, i),
                "down_proj": self.linear(i, h)}

    def module_dims(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each leaf module of one block (what a LoRA adapter on it adds: r * (in + out))."""
        h, q, kv, i = self.hidden_size, self.q_dim, self.kv_dim, self.intermediate_size
        if self.model_type == "gpt2":
            return {"c_attn": (h, 3 * h), "attn.c_proj": (h, h), "c_fc": (h, i), "c_proj": (i, h)}
        if self.model_type == "falcon":
            return {"query_key_value": (h, q + 2 * kv), "self_attention.dense": (q, h), "dense_h_to_4h": (h, i),
                    "dense_4h_to_h": (i, h)}
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h), "gate_proj": (h, i),
                "up_proj": (h, i), "down_proj": (i, h)}

    def norm_params(self) -> int:
        """One norm's parameters."""
        return 2 * self.hidden_size if self.layer_norm else self.hidden_size

    def mlp_params(self) -> int:
        names = ("gate_proj", "up_proj", "down_proj") if self.gated else (
            ("c_fc", "c_proj") if self.model_type == "gpt2" else ("dense_h_to_4h", "dense_4h_to_h"))
        params = self.module_params()
        return sum(params[n] for n in names)

    def down_proj_params(self) -> int:
        """The matrix ROME and MEMIT rewrite (its weight only)."""
        return self.intermediate_size * self.hidden_size

    def layer_params(self) -> int:
        blocks = sum(self.module_params().values())
        if self.model_type == "falcon":
            return blocks + self.norm_params()  # one LayerNorm before the parallel attention and MLP
        if self.model_type in ("gemma3_text", "qwen3"):
            blocks += 2 * self.head_dim  # q_norm and k_norm
        return blocks + _NORMS_PER_BLOCK.get(self.model_type, 2) * self.norm_params()

    def embed_params(self) -> int:
        return (self.vocab_size + self.learned_positions) * self.hidden_size

    def head_params(self) -> int:
        return 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size

    def total_params(self) -> int:
        return self.embed_params() + self.num_layers * self.layer_params() + self.norm_params() + self.head_params()


# ---------------------------------------------------------------- from config.json

def shape_from_config(config: dict, name: str, source: str = "") -> ModelShape:
    """The shape from a config.json mapping; raises ShapeError naming what is missing."""
    text = config.get("text_config") or config
    model_type = text.get("model_type") or config.get("model_type") or ""

    def first(*keys, default=None):
        for key in keys:
            if text.get(key) is not None:
                return text[key]
        return default

    hidden = first("hidden_size", "n_embd", "d_model")
    layers = first("num_hidden_layers", "n_layer", "num_layers")
    heads = first("num_attention_heads", "n_head")
    vocab = first("vocab_size")
    missing = [k for k, v in (("hidden_size", hidden), ("num_hidden_layers", layers), ("num_attention_heads", heads),
                              ("vocab_size", vocab)) if v is None]
    if missing:
        raise ShapeError(f"model {name!r} ({source or 'config'}): config lacks {', '.join(missing)}")
    if model_type == "falcon":
        kv = 1 if text.get("multi_query", True) and not text.get("new_decoder_architecture") else first(
            "num_kv_heads", default=heads)
        inter = first("ffn_hidden_size", default=4 * hidden)
    else:
        kv = first("num_key_value_heads", default=heads)
        inter = first("intermediate_size", "n_inner", default=4 * hidden)
    return ModelShape(
        name=name, model_type=model_type, vocab_size=int(vocab), hidden_size=int(hidden), intermediate_size=int(inter),
        num_layers=int(layers), num_heads=int(heads), num_kv_heads=int(kv),
        head_dim=int(first("head_dim", default=hidden // heads)),
        tie_word_embeddings=bool(config.get("tie_word_embeddings", text.get("tie_word_embeddings",
                                                                         model_type in ("gpt2", "falcon")))),
        qkv_bias=bool(first("attention_bias", default=model_type == "qwen2")) or model_type == "qwen2",
        linear_bias=model_type == "gpt2" or bool(text.get("bias", False)),
        learned_positions=int(first("n_positions", default=1024)) if model_type == "gpt2" else 0,
        source=source,
    )


@cache
def known_models() -> dict[str, dict]:
    """The shipped table: Hugging Face id -> the config.json numbers that size it."""
    return yaml.safe_load((Path(__file__).with_name("known_models.yaml")).read_text())


def _hf_cached_config(repo_id: str, revision: str | None) -> Path | None:
    """config.json of repo_id in the local Hugging Face cache, without touching the network."""
    if "/" not in repo_id or Path(repo_id).expanduser().exists():
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(repo_id, "config.json", revision=revision or "main")
    return Path(found) if isinstance(found, str) else None


def find_shape(name: str, revision: str | None = None) -> ModelShape:
    """The shape of a model name as a trial config gives it (built-in, local directory or Hugging Face id), offline."""
    from chronosweep.core.models import BUILTIN, builtin_dir

    candidates: list[tuple[Path, str]] = []
    if name in BUILTIN:
        candidates.append((builtin_dir(name) / "config.json", "converted built-in model"))
    else:
        local = Path(name).expanduser()
        if local.is_dir():
            if not (local / "config.json").exists():
                raise ShapeError(f"model {name!r}: the directory has no config.json")
            candidates.append((local / "config.json", str(local)))
        cached = _hf_cached_config(name, revision)
        if cached is not None:
            candidates.append((cached, "huggingface cache"))
    for path, source in candidates:
        if path.exists():
            return shape_from_config(json.loads(path.read_text()), name, source)
    table = known_models()
    key = BUILTIN[name]["hf_id"] if name in BUILTIN else name
    if key in table:
        return shape_from_config(table[key], name, "chronosweep table")
    raise ShapeError(
        f"model {name!r}: no config.json found locally (a model directory, the Hugging Face cache under "
        f"{os.environ.get('HF_HOME', '~/.cache/huggingface')}) and not in chronosweep's table of known models "
        f"({', '.join(table)}); download its config.json once (a directory with only config.json is enough)"
    )
