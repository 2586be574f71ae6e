"""Batched greedy generation and teacher-forced top-token predictions."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm


def _batches(order: list[int], size: int):
    for start in range(0, len(order), size):
        yield order[start:start + size]


@torch.no_grad()
def greedy_continuations(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int,
                         device, desc: str = "generate") -> list[str]:
    """Greedy continuation of every prompt; batches are formed from prompts of similar length to waste little padding."""
    if not prompts:
        return []
    tokenizer.padding_side = "left"
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[str] = [""] * len(prompts)
    kwargs = {"do_sample": False, "max_new_tokens": max_new_tokens, "pad_token_id": tokenizer.pad_token_id}
    for idx in tqdm(list(_batches(order, batch_size)), desc=desc, unit="batch", leave=False, dynamic_ncols=True):
        enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True).to(device)
        gen = model.generate(**enc, **kwargs)
        new = gen[:, enc["input_ids"].shape[1]:]
        for i, text in zip(idx, tokenizer.batch_decode(new, skip_special_tokens=True)):
            out[i] = text
    return out


def teacher_forced_example(tokenizer, prompt: str, target: str) -> dict[str, list[int] | int]:
    """EasyEdit's teacher-forced encoding (test_prediction_acc): prompt and target tokenised as one text, the
    target's tokens being whatever follows the prompt's own token count.

    target carries its leading space (" Sergio Mattarella"); special tokens are added as the tokenizer adds them
    (a BOS for LLaMA-2, none for SmolLM2). Where the tokenizer merges across the boundary, the split still falls at
    len(tokenize(prompt)), as in EasyEdit.
    """
    ids = tokenizer(prompt + target, add_special_tokens=True)["input_ids"]
    n_prompt = len(tokenizer(prompt, add_special_tokens=True)["input_ids"])
    return {"input_ids": ids, "labels": [-100] * min(n_prompt, len(ids)) + ids[n_prompt:], "n_prompt": n_prompt}


@torch.no_grad()
def teacher_forced_top_tokens(model, tokenizer, prompts: list[str], targets: list[str], batch_size: int,
                              device) -> list[tuple[list[int], list[int]]]:
    """For each (prompt, target): the target's token ids and the model's top token at each of their positions.

    The token accuracy is the share of positions where the two agree (EasyEdit's rewrite_acc / rephrase_acc), and
    for locality the share where the post-edit top tokens equal the pre-edit ones (EasyEdit's locality).
    """
    from chronosweep.core.tokens import collate

    examples = [teacher_forced_example(tokenizer, p, t) for p, t in zip(prompts, targets)]
    results: list[tuple[list[int], list[int]]] = [([], [])] * len(examples)
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
    for idx in _batches(order, batch_size):
        batch = collate([examples[i] for i in idx], tokenizer.pad_token_id)
        length = batch["input_ids"].shape[1]
        logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).logits
        # Prompt-learning adapters prepend virtual tokens: keep the positions of the real input only.
        logits = logits[:, -length:]
        top = logits.argmax(-1).cpu()
        for row, i in enumerate(idx):
            n_prompt = examples[i]["n_prompt"]
            target_ids = examples[i]["input_ids"][n_prompt:]
            # Logit at position t predicts token t+1.
            predicted = top[row, n_prompt - 1:n_prompt - 1 + len(target_ids)].tolist()
            results[i] = (target_ids, predicted)
    return results
