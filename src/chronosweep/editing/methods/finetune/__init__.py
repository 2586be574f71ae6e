from chronosweep.editing.methods.finetune.options import FreezeOptions, FullOptions
from chronosweep.editing.registry import register_method

register_method("full", FullOptions, "chronosweep.editing.methods.finetune.method:Full", "gradient",
                "full fine-tuning of every weight, or of every weight of a window of layers")
register_method("freeze", FreezeOptions, "chronosweep.editing.methods.finetune.method:Freeze", "gradient",
                "freeze tuning: only a window of layers (their MLPs, or all their weights) trains")
