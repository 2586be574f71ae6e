"""The one table of architecture differences.

Every method asks this table for module names instead of testing the model type itself, so adding an
architecture means adding one row here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Arch:
    # Attribute path from the *base* model (AutoModelForCausalLM) to the ModuleList of decoder blocks.
    layers: str
    # Leaf module names (as peft's target_modules matches them) inside one block.
    mlp: tuple[str, ...]
    attn: tuple[str, ...]
    # Path inside one block to the MLP output projection that ROME/MEMIT rewrite.
    down_proj: str
    # GPT-2's Conv1D stores weights as (in, out) instead of nn.Linear's (out, in).
    conv1d: bool = False
    # Path inside one block to the MLP module (its output is the "mlp output" MEMIT traces).
    mlp_module: str = "mlp"
    # Path from the base model to the input embedding (used when the output head is tied).
    embed: str = "model.embed_tokens"
    # Path from the base model to the final norm applied before the LM head.
    final_norm: str = "model.norm"


_LLAMA = Arch(
    layers="model.layers",
    mlp=("gate_proj", "up_proj", "down_proj"),
    attn=("q_proj", "k_proj", "v_proj", "o_proj"),
    down_proj="mlp.down_proj",
)

ARCHS: dict[str, Arch] = {
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "qwen3": _LLAMA,
    "gemma": _LLAMA,
    # Gemma 2/3 add norms after attention and after the MLP (post_feedforward_layernorm), which the module names
    # do not show: MEMIT's residual split assumes the MLP output reaches the residual unnormalised (see docs/methods.md).
    "gemma2": _LLAMA,
    "gemma3_text": _LLAMA,
    "gpt2": Arch(
        layers="transformer.h",
        mlp=("c_fc", "c_proj"),
        # GPT-2 names its attention output projection c_proj too; "attn.c_proj" keeps it apart from the MLP's.
        attn=("c_attn", "attn.c_proj"),
        down_proj="mlp.c_proj",
        conv1d=True,
        embed="transformer.wte",
        final_norm="transformer.ln_f",
    ),
    "gptj": Arch(
        layers="transformer.h",
        mlp=("fc_in", "fc_out"),
        attn=("q_proj", "k_proj", "v_proj", "out_proj"),
        down_proj="mlp.fc_out",
        embed="transformer.wte",
        final_norm="transformer.ln_f",
    ),
    "falcon": Arch(
        layers="transformer.h",
        mlp=("dense_h_to_4h", "dense_4h_to_h"),
        attn=("query_key_value", "self_attention.dense"),
        down_proj="mlp.dense_4h_to_h",
        embed="transformer.word_embeddings",
        final_norm="transformer.ln_f",
    ),
}

TARGETS = ("mlp", "attn", "both")


class UnsupportedArchitecture(ValueError):
    pass


def arch_for(model_type: str) -> Arch:
    try:
        return ARCHS[model_type]
    except KeyError:
        raise UnsupportedArchitecture(
            f"model_type {model_type!r} is not in chronosweep.core.archs.ARCHS (known: {', '.join(sorted(ARCHS))}); "
            "add a row there naming its layer list and MLP/attention modules"
        ) from None


def target_modules(model_type: str, targets: str) -> list[str]:
    arch = arch_for(model_type)
    if targets == "mlp":
        return list(arch.mlp)
    if targets == "attn":
        return list(arch.attn)
    if targets == "both":
        return list(arch.mlp + arch.attn)
    raise ValueError(f"targets must be one of {TARGETS}, got {targets!r}")


def get_path(obj, path: str):
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def decoder_layers(model, model_type: str):
    """The ModuleList of blocks of a plain Hugging Face causal LM (before any peft wrapping)."""
    return get_path(model, arch_for(model_type).layers)
