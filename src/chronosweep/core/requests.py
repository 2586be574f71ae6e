"""The typed edit-request record every dataset adapter produces and every method consumes."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Hop:
    """One single-hop cloze of a multi-hop chain, with the answer expected after the edit."""

    # The prompt the answer follows; "" when the source gives the hop as a question only (MQuAKE-Remastered).
    cloze: str
    answer: str
    aliases: tuple[str, ...] = ()
    question: str | None = None
    # The hop the case's edit rewrites (its answer is the new object); the others must keep their answers.
    changed: bool = False


@dataclass(frozen=True)
class MultiHop:
    """MQuAKE-style multi-hop probe of one case: any question answered with the new answer counts."""

    case_id: str
    questions: tuple[str, ...]
    answer: str
    aliases: tuple[str, ...] = ()
    hops: tuple[Hop, ...] = ()
    # The questions are clozes the answer follows (KnowEdit's Reasoning probes), asked as they are rather than
    # wrapped in the question template.
    cloze: bool = False


@dataclass(frozen=True)
class LocalityProbe:
    """An unrelated prompt whose answer the edit must leave alone; ``answer`` is informational. ``subject``, where
    the source names it (known_1000, a user's record), keeps texts that name it out of the retain prompts."""

    prompt: str
    answer: str | None = None
    subject: str | None = None


@dataclass(frozen=True)
class Holding:
    """One holder of the edited relation over a span of time: DyKnow's ``NAME |S: start |E: end`` (a ``|P:`` point
    is start == end), or a user record's ``history`` entry. Times are ISO-like strings; None: unknown (or, for the
    current holder's end, still holding)."""

    holder: str
    start: str | None = None
    end: str | None = None


@dataclass(frozen=True)
class EditRequest:
    # Stable id: "<dataset>:<record>[:<rewrite>]", unique within a dataset.
    case_id: str
    subject: str
    # The edit prompt, ending where the object should follow ("The President of Italy is").
    prompt: str
    target_new: str
    target_new_aliases: tuple[str, ...] = ()
    # None for injection edits (s, r, nothing) -> (s, r, o').
    target_true: str | None = None
    # Evaluation paraphrases (generalization probes): never trained on.
    paraphrases: tuple[str, ...] = ()
    # Other phrasings a method may train on (a field of their own, disjoint from paraphrases).
    train_paraphrases: tuple[str, ...] = ()
    relation: str = ""
    # ISO-like strings as the source gives them; either end may be unknown.
    time_start: str | None = None
    time_end: str | None = None
    # Shared by every edit of one MQuAKE case; evaluation counts each case once.
    multihop: MultiHop | None = None
    # Further cases that rest on this edit alone (MQuAKE-Remastered: one edit recurs in several cases; KnowEdit:
    # each Reasoning probe is a case), so an edit shared by cases is trained once.
    cases: tuple[MultiHop, ...] = ()
    # Probes that come with the record (CounterFact/zsRE); used when data.locality is "dataset".
    locality: tuple[LocalityProbe, ...] = ()
    # Prompts about the edited subject (or, for CounterFact, its neighbours) whose answers the edit must not
    # change: DyKnow's other elements of the subject, KnowEdit's Relation_Specificity. load_edits drops those
    # another edit of the trial rewrites.
    neighborhood: tuple[LocalityProbe, ...] = ()
    # Every holder of the relation with its time span, the current one included (DyKnow's answers, a user's
    # ``history`` list): the source of the time-qualified history probes (core.history).
    history: tuple[Holding, ...] = ()
    # "file:record" where the edit came from, for error messages and predictions.
    source: str = ""

    @property
    def kind(self) -> str:
        return "modification" if self.target_true else "injection"

    @property
    def answers(self) -> tuple[str, ...]:
        return (self.target_new, *self.target_new_aliases)

    @property
    def multihop_cases(self) -> tuple[MultiHop, ...]:
        return ((self.multihop,) if self.multihop is not None else ()) + self.cases


@dataclass
class EditSet:
    """What a dataset adapter returns: the edits plus the locality probes to evaluate them with."""

    name: str
    requests: list[EditRequest]
    locality: list[LocalityProbe] = field(default_factory=list)
    # Records that could not form an edit, by reason, so nothing is silently lost.
    skipped: dict[str, int] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    # Probes of the file no metric reads, by kind.
    unused: dict[str, int] = field(default_factory=dict)
    # How the edits were chosen from the file (data.hygiene.describe says it on every run): the file's edit count,
    # the offset and limit applied, duplicates among the chosen edits, and those data.dedupe dropped.
    total: int | None = None
    offset: int = 0
    limit: int | None = None
    duplicates: int = 0
    dedupe: bool = False
    dropped_duplicates: int = 0
