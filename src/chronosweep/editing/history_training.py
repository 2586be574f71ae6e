"""History-preserving training (TrainingOptions.history_weight): alongside the update, the gradient methods train
time-qualified past facts ("The President of Italy in 2007 was Giorgio Napolitano") and the time-qualified current
fact ("Since 2015, the President of Italy has been Sergio Mattarella"), with their own weight in the same step.

The facts come from core.history's training side: other templates than the history probes, and other years
of each past holder than the one its probe asks, so what is scored is never what was trained.
"""

from __future__ import annotations

from chronosweep.core import history
from chronosweep.core.requests import EditRequest
from chronosweep.core.tokens import encode_example


class HistoryFacts:
    """The training facts of a trial's edits, handed out per edit in turn (history_per_edit per step)."""

    def __init__(self, tokenizer, requests: list[EditRequest], options, suffix: str = ""):
        self.per_edit = options.history_per_edit
        self.facts = history.plan(requests, options.history_holders, options.history_years).training
        self.examples = [encode_example(tokenizer, f.prompt, " " + f.holder.strip() + suffix) for f in self.facts]
        self.by_case: dict[str, list[int]] = {}
        for i, f in enumerate(self.facts):
            self.by_case.setdefault(f.case_id, []).append(i)
        self.cursor = dict.fromkeys(self.by_case, 0)

    def __bool__(self) -> bool:
        return bool(self.facts)

    def prompts(self) -> list[str]:
        return [f.prompt for f in self.facts]

    def take(self, requests: list[EditRequest]) -> list[int]:
        """Indices into examples of the next history_per_edit facts of each of these edits."""
        out = []
        for r in requests:
            mine = self.by_case.get(r.case_id, [])
            for _ in range(min(self.per_edit, len(mine))):
                out.append(mine[self.cursor[r.case_id] % len(mine)])
                self.cursor[r.case_id] += 1
        return out
