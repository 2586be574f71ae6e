"""The method registry: name -> options class + lazily imported implementation.

Each method package (editing/methods/<name>/) registers itself from its ``__init__``, which imports only its
options module; the implementation (torch, peft) is imported the first time a trial runs the method. So
validating a config never imports a model library.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class MethodSpec:
    name: str
    # The dataclass typing the method's config section.
    options: type
    # "module:Class" of the implementation.
    impl: str
    family: Literal["gradient", "locate"]
    summary: str = ""
    # Keys every row of the method's history.jsonl carries (docs/run-dir.md).
    history_keys: tuple[str, ...] = ()
    # The published algorithm the method implements (its own name for the gradient methods), and the named
    # chronosweep variant of it (None: the algorithm as published). Both are recorded with every result.
    algorithm: str = ""
    variant: str | None = None

    def load(self):
        module, _, cls = self.impl.partition(":")
        return getattr(importlib.import_module(module), cls)()


METHODS: dict[str, MethodSpec] = {}


# What the shared training loop writes per epoch: the edit loss, the mean locality KL and key-statistics penalty (null
# when off), the share of edits whose targets were all the argmax, tokens run (edit and retain rows), seconds since
# training started.
GRADIENT_HISTORY = ("epoch", "loss", "kl", "key", "learned", "tokens", "seconds")


def register_method(name: str, options: type, impl: str, family: Literal["gradient", "locate"],
                    summary: str = "", history_keys: tuple[str, ...] | None = None, algorithm: str | None = None,
                    variant: str | None = None) -> MethodSpec:
    if name in METHODS:
        raise ValueError(f"method {name!r} is registered twice")
    if history_keys is None:
        history_keys = GRADIENT_HISTORY if family == "gradient" else ()
    spec = MethodSpec(name, options, impl, family, summary, tuple(history_keys), algorithm or name, variant)
    METHODS[name] = spec
    return spec


def get_spec(name: str) -> MethodSpec:
    try:
        return METHODS[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r} (known: {', '.join(METHODS)})") from None


def algorithm_of(name: str) -> str:
    """The published algorithm a registered method implements (a variant such as rome-preserve answers rome)."""
    return get_spec(name).algorithm


def get_method(name: str):
    """The implementation of a registered method (imports it)."""
    return get_spec(name).load()


# The built-in methods register themselves on import (their options modules only).
from chronosweep.editing import methods as _builtin  # noqa: E402,F401
