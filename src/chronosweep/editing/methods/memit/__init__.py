from chronosweep.editing.methods.memit.options import MemitOptions
from chronosweep.editing.registry import register_method

register_method("memit", MemitOptions, "chronosweep.editing.methods.memit.method:MEMIT", "locate",
                "MEMIT: a batch of edits spread over a window of MLP down-projections",
                # stage: "target" (one row per edit), "update" (one per layer), "total" (the last row).
                history_keys=("stage", "seconds"))
