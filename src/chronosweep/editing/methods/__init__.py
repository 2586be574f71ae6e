"""The built-in editing methods, one package each: ``options.py`` (its config, no torch) and ``method.py``."""

# In this order they are listed in messages and docs.
from chronosweep.editing.methods import lora, ptuning, finetune, rome, memit  # noqa: F401, I001
