from chronosweep.editing.methods.rome.options import RomeOptions
from chronosweep.editing.registry import register_method

register_method("rome", RomeOptions, "chronosweep.editing.methods.rome.method:ROME", "locate",
                "ROME: one rank-one rewrite of an MLP down-projection per edit",
                history_keys=("edit", "case_id", "layer", "loss", "update_norm", "seconds"))
