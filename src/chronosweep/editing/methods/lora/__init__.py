from chronosweep.editing.methods.lora.options import LoraLocalOptions, LoraOptions
from chronosweep.editing.registry import register_method

register_method("lora", LoraOptions, "chronosweep.editing.methods.lora.method:LoRA", "gradient",
                "LoRA (peft) on the MLP, attention or both of a window of layers")
register_method("lora-local", LoraLocalOptions, "chronosweep.editing.methods.lora.method:LoRA", "gradient",
                "chronosweep's LoRA variant: the locality KL on retain prompts and early stopping on by default",
                algorithm="lora", variant="local")
