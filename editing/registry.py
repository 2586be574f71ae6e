"""The registry of editing methods: name -> implementation, one small module each."""

from __future__ import annotations

from editing.methods.lora import LoRA

METHODS = {m.name: m() for m in (LoRA,)}


def get_method(name: str):
    try:
        return METHODS[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r} (known: {', '.join(METHODS)})") from None
