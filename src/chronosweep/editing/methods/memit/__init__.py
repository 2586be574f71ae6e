from chronosweep.editing.methods.memit.options import MemitOptions, MemitPreserveOptions
from chronosweep.editing.registry import register_method

# stage: "target" (one row per edit), "update" (one per layer), "total" (the last row).
_HISTORY = ("stage", "seconds")

register_method("memit", MemitOptions, "chronosweep.editing.methods.memit.method:MEMIT", "locate",
                "MEMIT as published (kmeng01/memit): a batch of edits spread over a window of MLP down-projections",
                history_keys=_HISTORY, algorithm="memit")
register_method("memit-preserve", MemitPreserveOptions, "chronosweep.editing.methods.memit.method:MEMITPreserve",
                "locate", "chronosweep's MEMIT variant: the keys after the subject kept in place by the update",
                history_keys=_HISTORY, algorithm="memit", variant="preserve")
