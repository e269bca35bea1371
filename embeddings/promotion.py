"""One promotion decision for everything learned that can go live: embedding spaces
(embeddings.finetuning, search.interleaving) and learned rankers (search.ranker_training).

A pure function from the gates' results to promote, hold or refuse; no Django, no I/O, so
the fine-tune report and the ranker report show the same decision the code took:

1. an offline gate that failed refuses (the first one decides);
2. a required offline gate that had nothing to measure refuses too (a space without
   catalog validation products, a ranker without held-out queries);
3. every offline gate passed and no online test is wanted: promote;
4. else the interleaving test decides: not yet conclusive (too few sessions with clicks,
   or the sign test's p at or above `significance`): hold; a significant win: promote; a
   significant loss: refuse. A win never promotes what failed offline (step 1 comes first):
   whoever sends clicks can steer an online test, nobody can steer the offline gates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum

SIGNIFICANCE = 0.05
INTERLEAVING = "interleaving"


class Verdict(StrEnum):
    PROMOTE = "promote"
    HOLD = "hold"
    REFUSE = "refuse"


@dataclass(frozen=True)
class GateResult:
    """An offline gate's say: passed True/False, None when it had nothing to measure."""

    name: str
    passed: bool | None
    detail: str = ""
    required: bool = False  # nothing to measure refuses, rather than not blocking


@dataclass(frozen=True)
class OnlineResult:
    """An interleaving test's tally: sessions won by the candidate and by the live one."""

    wins: int
    losses: int
    decided: int  # sessions with a credited click
    p_value: float


@dataclass(frozen=True)
class PromotionDecision:
    verdict: Verdict
    decided_by: str  # the gate that decided, "every gate passed" or "interleaving"
    reason: str

    def as_dict(self) -> dict:
        return {**asdict(self), "verdict": str(self.verdict)}


def promotion_decide(
    *,
    offline: Sequence[GateResult],
    interleave: bool,
    online: OnlineResult | None = None,
    min_sessions: int = 0,
    significance: float = SIGNIFICANCE,
) -> PromotionDecision:
    """Promote, hold or refuse (module docstring). `interleave`: an online test must
    confirm what passed offline; `online`: its tally so far (None: not started)."""
    for gate in offline:
        if gate.passed is False:
            return PromotionDecision(Verdict.REFUSE, gate.name, _said(gate, "failed"))
    for gate in offline:
        if gate.passed is None and gate.required:
            return PromotionDecision(
                Verdict.REFUSE, gate.name, _said(gate, "had nothing to measure")
            )
    if not interleave:
        return PromotionDecision(Verdict.PROMOTE, "every gate passed", "every offline gate passed")
    if online is None:
        return PromotionDecision(
            Verdict.HOLD, INTERLEAVING, "every offline gate passed; an interleaving test decides"
        )
    tally = (
        f"candidate won {online.wins}, live won {online.losses} of {online.decided} sessions "
        f"with clicks (sign test p = {online.p_value:.4f})"
    )
    if online.decided < min_sessions or online.p_value >= significance:
        return PromotionDecision(Verdict.HOLD, INTERLEAVING, f"not decided yet: {tally}")
    if online.wins > online.losses:
        return PromotionDecision(Verdict.PROMOTE, INTERLEAVING, f"the candidate won: {tally}")
    return PromotionDecision(Verdict.REFUSE, INTERLEAVING, f"the live one won: {tally}")


def _said(gate: GateResult, what: str) -> str:
    return f"the {gate.name} gate {what}" + (f": {gate.detail}" if gate.detail else "")
