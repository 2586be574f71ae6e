from chronosweep.editing.methods.rome.options import RomeOptions, RomePreserveOptions
from chronosweep.editing.registry import register_method

_HISTORY = ("edit", "case_id", "layer", "loss", "update_norm", "seconds")

register_method("rome", RomeOptions, "chronosweep.editing.methods.rome.method:ROME", "locate",
                "ROME as published (kmeng01/rome): one rank-one rewrite of an MLP down-projection per edit",
                history_keys=_HISTORY, algorithm="rome")
register_method("rome-preserve", RomePreserveOptions, "chronosweep.editing.methods.rome.method:ROMEPreserve", "locate",
                "chronosweep's ROME variant: each rank-one update kept off earlier edits' keys and the keys after "
                "the subject", history_keys=_HISTORY, algorithm="rome", variant="preserve")
