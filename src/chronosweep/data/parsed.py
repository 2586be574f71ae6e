"""What every adapter returns before offset/limit and locality are applied."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from chronosweep.core.requests import EditRequest


@dataclass
class Parsed:
    requests: list[EditRequest] = field(default_factory=list)
    # Records that cannot form an edit, by reason (counted over the whole file, before offset/limit).
    skipped: Counter = field(default_factory=Counter)
    # Probes of the file that no metric reads, by kind (KnowEdit's Logical_Generalization...), so they are said.
    unused: Counter = field(default_factory=Counter)
