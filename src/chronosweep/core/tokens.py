"""Turn edit requests into training examples whose loss falls on the new object's tokens only."""

from __future__ import annotations

from chronosweep.core.requests import EditRequest


def target_text(request: EditRequest, suffix: str = "") -> str:
    # The object follows the prompt after one space, as in "... is Sergio Mattarella".
    return " " + request.target_new.strip() + suffix


def encode_example(tokenizer, prompt: str, target: str) -> dict[str, list[int]]:
    prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    full_ids = tokenizer(prompt + target, add_special_tokens=True)["input_ids"]
    # Tokenizers may merge across the prompt/target boundary; count the prompt by its own encoding
    # and fall back to encoding the target separately if the full encoding does not extend it.
    if full_ids[: len(prompt_ids)] == prompt_ids and len(full_ids) > len(prompt_ids):
        target_ids = full_ids[len(prompt_ids):]
    else:
        target_ids = tokenizer(target, add_special_tokens=False)["input_ids"]
    input_ids = prompt_ids + target_ids
    labels = [-100] * len(prompt_ids) + target_ids
    return {"input_ids": input_ids, "labels": labels, "n_prompt": len(prompt_ids)}


def edit_examples(tokenizer, requests: list[EditRequest], suffix: str = "") -> list[dict[str, list[int]]]:
    return [encode_example(tokenizer, r.prompt, target_text(r, suffix)) for r in requests]


def collate(examples: list[dict], pad_id: int) -> dict:
    """Right-pad a batch for training (positions stay aligned with the unpadded sequences)."""
    import torch  # here, so sizing a trial (sweep --dry-run) can read target_text without torch

    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[i, :n] = torch.tensor(e["input_ids"])
        labels[i, :n] = torch.tensor(e["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}
