"""The registry of editing methods: name -> implementation, one small module each."""

from __future__ import annotations

from editing.methods.finetune import Freeze, Full
from editing.methods.lora import LoRA
from editing.methods.memit import MEMIT
from editing.methods.ptuning import Ptuning
from editing.methods.rome import ROME

METHODS = {m.name: m() for m in (LoRA, Ptuning, Full, Freeze, ROME, MEMIT)}


def get_method(name: str):
    try:
        return METHODS[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r} (known: {', '.join(METHODS)})") from None
