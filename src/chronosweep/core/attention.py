"""Attention without copied key/value heads on CPU: transformers' SDPA path under another name.

Models with grouped key/value heads (SmolLM2: 9 query heads, 3 key/value heads) reach
`scaled_dot_product_attention` through transformers' `sdpa_attention_forward`, which copies each key/value head
to every query head of its group (`repeat_kv`) whenever an attention mask is passed, on every device; only
CUDA needs that (its fast kernels refuse a mask with grouped heads). Every padded batch and every cached step of
v* passes a mask, so on CPU each layer copied its keys and values forward and summed the copies' gradients
backward. torch's CPU kernel takes grouped heads directly (`enable_gqa=True`) and gives bit-identical outputs
and gradients. Measured on the default model: one layer's attention forward and backward 0.56 ms against 1.0-1.4
ms (AVX-512 machine); a whole MEMIT batch of 20 0.91x, ROME and LoRA unchanged (AVX2 machine, docs/benchmarks.md).

"sdpa_gqa" is that one change: the CPU call with a mask and grouped heads goes straight to the kernel; every
other case (CUDA, a position bias, softcap, attention weights asked for, no grouped heads) is transformers' own
function, unchanged.
"""

from __future__ import annotations

# torch and transformers are imported where used: config validation imports core.models without them.
NAME = "sdpa_gqa"


def _sdpa_gqa_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None,
                      position_bias=None, **kwargs):
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = getattr(module, "num_key_value_groups", 1)
    if (query.device.type != "cpu" or attention_mask is None or groups <= 1 or position_bias is not None
            or kwargs.get("softcap") is not None or kwargs.get("output_attentions", False)):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, position_bias=position_bias, **kwargs)
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling, enable_gqa=True
    )
    return out.transpose(1, 2).contiguous(), None


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, sdpa_mask

    if NAME not in ALL_MASK_ATTENTION_FUNCTIONS._global_mapping:
        AttentionInterface.register(NAME, _sdpa_gqa_forward)
        AttentionMaskInterface.register(NAME, sdpa_mask)


def share_kv_heads(model) -> bool:
    """Switch a CPU model that uses transformers' SDPA on grouped heads to "sdpa_gqa"; True if it was switched.

    Models on other devices, with another attention implementation, or that cannot change theirs are left as
    they are."""
    config = model.config
    text = getattr(config, "text_config", None) or config
    heads, kv_heads = getattr(text, "num_attention_heads", None), getattr(text, "num_key_value_heads", None)
    if (model.device.type != "cpu" or config._attn_implementation != "sdpa" or not heads or not kv_heads
            or heads == kv_heads or not model._can_set_attn_implementation()):
        return False
    _register()
    model.set_attn_implementation(NAME)
    return config._attn_implementation == NAME
