from chronosweep.editing.methods.ptuning.options import PtuningOptions
from chronosweep.editing.registry import register_method

register_method("ptuning", PtuningOptions, "chronosweep.editing.methods.ptuning.method:Ptuning", "gradient",
                "P-tuning (peft prompt encoder): trainable virtual tokens before every input")
