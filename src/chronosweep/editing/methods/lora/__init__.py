from chronosweep.editing.methods.lora.options import LoraOptions
from chronosweep.editing.registry import register_method

register_method("lora", LoraOptions, "chronosweep.editing.methods.lora.method:LoRA", "gradient",
                "LoRA (peft) on the MLP, attention or both of a window of layers")
