"""The one promotion decision of spaces and rankers: gates' results in, promote/hold/refuse
out (a pure function: no database)."""

from embeddings.promotion import GateResult, OnlineResult, Verdict, promotion_decide

PASSED = GateResult("held-out nDCG@10", True, "0.84 against fusion's 0.78", required=True)
WIN = OnlineResult(wins=40, losses=12, decided=60, p_value=0.0001)


def test_a_failed_gate_refuses_and_names_itself_even_after_an_online_win():
    failed = GateResult("query nDCG", False, "0.61 -> 0.55")
    decision = promotion_decide(offline=[PASSED, failed], interleave=True, online=WIN)
    assert decision.verdict == Verdict.REFUSE
    assert decision.decided_by == "query nDCG"
    assert "0.61 -> 0.55" in decision.reason


def test_a_required_gate_with_nothing_to_measure_refuses_an_optional_one_does_not():
    empty = GateResult("catalog recall", None, "no validation products", required=True)
    assert promotion_decide(offline=[empty], interleave=False).verdict == Verdict.REFUSE
    optional = GateResult("query nDCG", None, "no judged queries")
    decision = promotion_decide(offline=[PASSED, optional], interleave=False)
    assert (decision.verdict, decision.decided_by) == (Verdict.PROMOTE, "every gate passed")


def test_with_interleaving_the_online_test_decides():
    def online(wins, losses, p, decided=60):
        return promotion_decide(
            offline=[PASSED],
            interleave=True,
            online=OnlineResult(wins, losses, decided, p),
            min_sessions=50,
        ).verdict

    assert promotion_decide(offline=[PASSED], interleave=True).verdict == Verdict.HOLD
    assert online(40, 12, 0.0001) == Verdict.PROMOTE
    assert online(12, 40, 0.0001) == Verdict.REFUSE
    assert online(30, 25, 0.6) == Verdict.HOLD  # not significant
    assert online(40, 12, 0.0001, decided=20) == Verdict.HOLD  # too few sessions yet
    assert (
        promotion_decide(offline=[PASSED], interleave=True, online=WIN).as_dict()["verdict"]
        == "promote"
    )
