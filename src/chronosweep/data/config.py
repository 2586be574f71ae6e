"""Which edits a trial reads: the data section of a trial config (no I/O until load_edits)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from chronosweep.data.catalog import BUNDLED


@dataclass
class DataConfig:
    # A bundled dataset name, or a path to a file in one of the supported layouts.
    name: str = "dyknow"
    # Explicit file for the named dataset, instead of the one under the data root.
    path: str | None = None
    # Folder holding the bundled files (default: $CHRONOSWEEP_DATA, then ../shared/data beside the checkout).
    root: str | None = None
    # First N edits (after offset); null keeps all.
    limit: int | None = 20
    offset: int = 0
    # Where locality probes come from: time-invariant known_1000 facts, the dataset's own probes, or none.
    locality: Literal["known_1000", "dataset", "none"] = "known_1000"
    locality_limit: int = 50
    # Drop edits whose prompt and target repeat an earlier edit's (they are counted and reported either way).
    dedupe: bool = False

    def check(self, where: str, problems: list[str]) -> None:
        if self.limit is not None and self.limit < 1:
            problems.append(f"{where}.limit: must be >= 1 or null, got {self.limit}")
        if self.offset < 0:
            problems.append(f"{where}.offset: must be >= 0, got {self.offset}")
        if self.locality_limit < 0:
            problems.append(f"{where}.locality_limit: must be >= 0, got {self.locality_limit}")
        if self.name not in BUNDLED and not (self.name.endswith((".json", ".jsonl", ".txt"))):
            problems.append(
                f"{where}.name: {self.name!r} is neither a bundled dataset ({', '.join(BUNDLED)}) nor a "
                f".json/.jsonl (or MQuAKE-Remastered .txt) path"
            )
