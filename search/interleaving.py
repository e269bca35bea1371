"""Team-draft interleaving (Radlinski, Kurup and Joachims, CIKM 2008): does a candidate
space find what shoppers choose better than the active one?

A candidate that passed fine-tuning's offline gates is held (filled and indexed, not
active: embeddings.finetuning) and tested here. For SEARCH_INTERLEAVE_FRACTION of text
searches, both spaces rank the query (the same hybrid search, each with its own vectors
and similarity floor) and the page shows the two rankings merged by team draft: in each
round the team with fewer picks (a coin flip when even) adds its best product not yet
shown. The log row records which team contributed each product shown, so a click credits
one space; per search the space with more credited clicks wins, and a two-sided sign test
over wins says whether the difference is chance.

Whether a search is interleaved, and every coin flip, follow from a hash of (test, session,
normalised query, filters, sort): the same search gives the same merged list, and page 2
continues page 1's list without gaps or repeats.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from embeddings.models import EmbeddingSpace
from embeddings.promotion import (
    INTERLEAVING,
    GateResult,
    OnlineResult,
    PromotionDecision,
    Verdict,
    promotion_decide,
)
from embeddings.services import space_activate_start
from embeddings.spaces import space_active, space_drop_indexes
from search.filters import SearchFilters
from search.models import InterleavingTest, Ranker, SearchEvent, SearchLog
from search.ranker import RankerUnusable, ranker_activate, ranker_live_row, ranker_loaded
from search.retrieval import RankedProduct
from search.rules import RuleEffects, rules_apply
from search.sorting import Sort

logger = logging.getLogger(__name__)

# Who contributed a shown product, as SearchLog.teams records it.
TEAM_CONTROL = 0  # the active space (SearchLog.space)
TEAM_CANDIDATE = 1  # SearchLog.interleaved_with
TEAM_NONE = -1  # pinned by a rule, or a related product under the floor: credits nobody
# Any fixed number: the key of the advisory lock that makes "check, then start" one step.
INTERLEAVING_START_LOCK = 7_301_126


class InterleavingError(ValueError):
    """A test that cannot start (another runs, the space is not a candidate) or change."""


# --- the merge ----------------------------------------------------------------------------


def team_draft(
    control: Sequence[int], candidate: Sequence[int], rng: random.Random
) -> list[tuple[int, int]]:
    """The two rankings merged by team draft: (product id, team) in the order shown.

    Each round, the team with fewer picks so far (a coin flip when even) adds its highest
    ranked product not yet in the list. The paper stops when either ranking runs out; here
    the rest of the other follows, credited to it, so no shopper loses results a space found.
    """
    merged: list[tuple[int, int]] = []
    seen: set[int] = set()
    rankings = (list(control), list(candidate))
    cursors = [0, 0]
    picks = [0, 0]
    while True:
        for team in (TEAM_CONTROL, TEAM_CANDIDATE):
            while cursors[team] < len(rankings[team]) and rankings[team][cursors[team]] in seen:
                cursors[team] += 1
        left = [cursors[team] < len(rankings[team]) for team in (0, 1)]
        if not any(left):
            return merged
        if not left[TEAM_CANDIDATE]:
            team = TEAM_CONTROL
        elif not left[TEAM_CONTROL]:
            team = TEAM_CANDIDATE
        elif picks[TEAM_CONTROL] != picks[TEAM_CANDIDATE]:
            team = TEAM_CONTROL if picks[TEAM_CONTROL] < picks[TEAM_CANDIDATE] else TEAM_CANDIDATE
        else:
            team = TEAM_CONTROL if rng.random() < 0.5 else TEAM_CANDIDATE
        product_id = rankings[team][cursors[team]]
        seen.add(product_id)
        picks[team] += 1
        merged.append((product_id, team))


def search_digest(
    *, test_id: int, session: str, query: str, filters: SearchFilters, sort: str
) -> bytes:
    """What decides a search's interleaving and its coin flips: the same for every page of
    the same search in the same session, different for another test."""
    key = json.dumps(
        [test_id, session, " ".join(query.lower().split()), asdict(filters), sort],
        default=str,
        sort_keys=True,
    )
    return hashlib.sha256(key.encode()).digest()


def digest_share(digest: bytes) -> float:
    """A uniform number in [0, 1) from the digest: the search is interleaved below the fraction."""
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class InterleavedRanking:
    """A text search's relevant window merged from two spaces, pins placed, then the active
    space's related products; `teams` says who contributed each product."""

    test: InterleavingTest
    ranked: list[RankedProduct]
    teams: dict[int, int]

    @property
    def candidate(self) -> EmbeddingSpace:
        return self.test.candidate

    def teams_of(self, product_ids: Sequence[int]) -> tuple[int, ...]:
        return tuple(self.teams.get(product_id, TEAM_NONE) for product_id in product_ids)


def interleaving_test_running() -> InterleavingTest | None:
    """The test whose candidate searches are merged with now (one indexed lookup)."""
    return (
        InterleavingTest.objects.filter(status=InterleavingTest.Status.RUNNING)
        .select_related("candidate", "control", "candidate_ranker")
        .first()
    )


def interleaved_ranking(
    *,
    space: EmbeddingSpace,
    ranked: list[RankedProduct],
    rank: Callable[..., list[RankedProduct]],
    rules: RuleEffects,
    session: str,
    query: str,
    filters: SearchFilters,
    sort: str,
) -> InterleavedRanking | None:
    """The merged window when this search is one of the interleaved ones, else None.

    `ranked` is the active space's window (by the live ranker); `rank(space)` ranks the same
    query in another space, `rank(space, ranker)` by another ranker (a test of rankers).
    Only relevance order is interleaved: under a price or date sort the shopper's
    order, not either space's, decides positions, so clicks would say nothing about ranking.
    """
    fraction = settings.SEARCH_INTERLEAVE_FRACTION
    if fraction <= 0 or sort != Sort.RELEVANCE:
        return None
    test = interleaving_test_running()
    if test is None or test.control_id != space.pk:
        return None
    digest = search_digest(
        test_id=test.pk, session=session, query=query, filters=filters, sort=sort
    )
    if digest_share(digest) >= fraction:
        return None
    if test.candidate_ranker_id:
        try:
            candidate = ranker_loaded(test.candidate_ranker)
        except RankerUnusable as exc:
            logger.error("interleaving test %s not merged: %s", test.pk, exc)
            return None
        windows = {TEAM_CONTROL: ranked, TEAM_CANDIDATE: rank(space, candidate)}
    else:
        windows = {TEAM_CONTROL: ranked, TEAM_CANDIDATE: rank(test.candidate)}
    # Hidden products go and boosts apply within each ranking; pins are placed after the
    # merge, at the positions the rules give them, credited to neither space.
    natural: dict[int, list[RankedProduct]] = {}
    pinned: dict[int, RankedProduct] = {}
    for team, rows in windows.items():
        relevant = rules_apply([r for r in rows if r.relevant or r.pinned], rules, place_pins=False)
        natural[team] = [r for r in relevant if not r.pinned]
        for row in relevant:
            if row.pinned:
                pinned.setdefault(row.product_id, row)
    rows_by_id = {(team, row.product_id): row for team, rows in natural.items() for row in rows}
    merged = team_draft(
        [r.product_id for r in natural[TEAM_CONTROL]],
        [r.product_id for r in natural[TEAM_CANDIDATE]],
        random.Random(digest[8:]),
    )
    teams = dict(merged)
    relevant = [rows_by_id[team, product_id] for product_id, team in merged]
    if pinned:
        relevant = rules_apply(
            relevant + list(pinned.values()), RuleEffects(pins=rules.pins), place_pins=True
        )
    shown = {row.product_id for row in relevant}
    related = [
        row
        for row in ranked
        if not row.relevant
        and not row.pinned
        and row.product_id not in rules.hidden
        and row.product_id not in shown
    ]
    return InterleavedRanking(test=test, ranked=relevant + related, teams=teams)


def hits_alike(hits: Sequence, *, offset: int) -> list:
    """An interleaved page's hits, the same in form whichever space placed them: the merged
    rank's score (1 / position) and no similarity. Each space's own score or cosine would
    tell a client which space placed a result, and so which to click to steer the test."""
    return [
        replace(hit, score=1.0 / position, similarity=None)
        for position, hit in enumerate(hits, start=offset + 1)
    ]


# --- the tally ----------------------------------------------------------------------------


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test (binomial, p = 1/2) of wins against losses; ties left out.
    scipy is here anyway, as scikit-learn's dependency (the insights' clustering)."""
    from scipy.stats import binomtest

    if wins + losses == 0:
        return 1.0
    return float(binomtest(wins, wins + losses, 0.5).pvalue)


@dataclass(frozen=True)
class InterleavingTally:
    searches: int  # interleaved searches (pages) shown
    candidate_wins: int  # sessions whose credited clicks went more to the candidate
    control_wins: int
    ties: int  # as many credited clicks for each (at least one)

    @property
    def decided(self) -> int:
        """Sessions with a credited click: what SEARCH_INTERLEAVE_MIN_SEARCHES counts."""
        return self.candidate_wins + self.control_wins + self.ties

    @property
    def p_value(self) -> float:
        return sign_test(self.candidate_wins, self.control_wins)

    def as_dict(self) -> dict:
        return {
            "searches": self.searches,
            "candidate_wins": self.candidate_wins,
            "control_wins": self.control_wins,
            "ties": self.ties,
            "p_value": self.p_value,
        }

    def __str__(self) -> str:
        return (
            f"{self.searches} searches, {self.decided} sessions with clicks: candidate won "
            f"{self.candidate_wins}, active won {self.control_wins}, {self.ties} ties "
            f"(sign test p = {self.p_value:.4f})"
        )


def interleaving_tally(*, test: InterleavingTest) -> InterleavingTally:
    """The test's searches and, per session with clicks, which space won: one aggregate over
    its logged searches (indexed by `interleaved_with`) and their click events.

    A click credits the team that contributed the clicked product (`teams` at the product's
    place on the page); clicks on pinned or related products credit nobody. A session's
    clicks over all its searches decide one win, loss or tie: repeating a search in one
    session cannot outvote other shoppers (a sessionless search is a session of its own).
    """
    log, events = SearchLog._meta.db_table, SearchEvent._meta.db_table
    window = "s.interleaved_with_id = %(candidate)s AND s.space_id = %(control)s"
    window += " AND s.created >= %(started)s"
    params = {
        "candidate": test.candidate_id,
        "control": test.control_id,
        "started": test.started or test.created,
        "click": SearchEvent.Type.CLICK,
        "control_team": TEAM_CONTROL,
        "candidate_team": TEAM_CANDIDATE,
    }
    if test.ended:
        window += " AND s.created <= %(ended)s"
        params["ended"] = test.ended
    sql = f"""
        SELECT
            (SELECT count(*) FROM {log} s WHERE {window}),
            count(*) FILTER (WHERE candidate > control),
            count(*) FILTER (WHERE control > candidate),
            count(*) FILTER (WHERE control = candidate AND control > 0)
        FROM (
            SELECT
                count(*) FILTER (WHERE s.teams[e.position - s.offset] = %(control_team)s)
                    AS control,
                count(*) FILTER (WHERE s.teams[e.position - s.offset] = %(candidate_team)s)
                    AS candidate
            FROM {log} s JOIN {events} e ON e.search_id = s.id AND e.type = %(click)s
            WHERE {window}
            GROUP BY COALESCE(NULLIF(s.session, ''), s.id::text)
        ) per_session
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        searches, candidate_wins, control_wins, ties = cursor.fetchone()
    return InterleavingTally(searches, candidate_wins, control_wins, ties)


def interleaving_test_tally(test: InterleavingTest) -> InterleavingTally:
    """The live tally of an unfinished test, the stored one of an ended test."""
    if test.status in InterleavingTest.UNFINISHED or not test.result:
        return interleaving_tally(test=test)
    stored = test.result
    return InterleavingTally(
        stored["searches"], stored["candidate_wins"], stored["control_wins"], stored["ties"]
    )


# --- the test's life ----------------------------------------------------------------------


def interleaving_test_run(*, test: InterleavingTest) -> InterleavingTest:
    """The candidate is filled and indexed: merge searches from now on."""
    updated = InterleavingTest.objects.filter(
        pk=test.pk, status=InterleavingTest.Status.PREPARING
    ).update(status=InterleavingTest.Status.RUNNING, started=timezone.now())
    test.refresh_from_db()
    if not updated:
        logger.info("interleaving test %s was %s before it was ready", test.pk, test.status)
    return test


def _end(test: InterleavingTest, status: str, decision: str) -> InterleavingTest:
    with transaction.atomic():
        test = InterleavingTest.objects.select_for_update().get(pk=test.pk)
        if test.status not in InterleavingTest.UNFINISHED:
            raise InterleavingError(f"The interleaving test is {test.status} already.")
        test.ended = timezone.now()
        test.result = interleaving_tally(test=test).as_dict()
        test.status = status
        test.decision = decision
        test.save(update_fields=["ended", "result", "status", "decision"])
    logger.info("interleaving test %s %s: %s", test.pk, status, decision)
    return test


def interleaving_test_stop(*, test: InterleavingTest, decision: str) -> InterleavingTest:
    """End the test without promoting; the candidate keeps its vectors (it can still be
    activated by hand) but not its indexes, which only searches of a test or of the active
    space need."""
    test = _end(test, InterleavingTest.Status.STOPPED, decision)
    if test.candidate.status == EmbeddingSpace.Status.CANDIDATE:
        space_drop_indexes(test.candidate)
    return test


def interleaving_test_promote(*, test: InterleavingTest, decision: str) -> InterleavingTest:
    """End the test and make the candidate live: a ranker at once, a space through the space
    activation service (a task on the `train` queue: little is left to fill)."""
    test = _end(test, InterleavingTest.Status.PROMOTED, decision)
    if test.candidate_ranker_id:
        ranker_activate(ranker=test.candidate_ranker)
    else:
        space_activate_start(space=test.candidate)
    return test


def interleaving_check() -> InterleavingTally | None:
    """Beat, every SEARCH_INTERLEAVE_CHECK_INTERVAL: one aggregate over the running test.

    With SEARCH_INTERLEAVE_AUTO_PROMOTE, the shared decision (embeddings.promotion) over
    the candidate's offline gates (fine-tuning's, or the ranker's) and the tally: after
    SEARCH_INTERLEAVE_MIN_SEARCHES sessions with clicks a significant win (sign test p <
    0.05) promotes the candidate, if it passed its offline gates (else staff decide), a
    significant loss stops the test. A test whose control is no longer the active space (or
    the live ranker) is stopped.
    """
    test = interleaving_test_running()
    if test is None:
        return None
    active = EmbeddingSpace.objects.filter(status=EmbeddingSpace.Status.ACTIVE).first()
    if active is None or active.pk != test.control_id:
        interleaving_test_stop(
            test=test, decision=f"stopped: the active space is no longer {test.control}"
        )
        return None
    live = ranker_live_row()
    if test.candidate_ranker_id and getattr(live, "pk", None) != test.control_ranker_id:
        interleaving_test_stop(
            test=test,
            decision=f"stopped: the live ranker is no longer {test.control_ranker or 'fusion'}",
        )
        return None
    tally = interleaving_tally(test=test)
    if not settings.SEARCH_INTERLEAVE_AUTO_PROMOTE:
        return tally
    decision = interleaving_decision(test, tally)
    if decision.verdict == Verdict.HOLD:
        return tally
    if decision.decided_by != INTERLEAVING:  # won, yet it did not pass its offline gates
        # Clicks can be steered by whoever sends them; the offline gates cannot.
        logger.warning(
            "interleaving test %s: %s won but did not pass the offline gates: not promoted",
            test.pk,
            test.candidate_ranker or test.candidate,
        )
        return tally
    if decision.verdict == Verdict.PROMOTE:
        interleaving_test_promote(test=test, decision=f"promoted: the candidate won; {tally}")
    else:
        what = "live ranker" if test.candidate_ranker_id else "active space"
        interleaving_test_stop(test=test, decision=f"stopped: the {what} won; {tally}")
    return tally


def interleaving_decision(test: InterleavingTest, tally: InterleavingTally) -> PromotionDecision:
    """The shared promotion decision on a test's candidate: its offline gates (as its
    training recorded them), then this tally. A significant loss refuses whatever the
    offline gates said (the online say comes first here: the test is what is decided)."""
    candidate = test.candidate_ranker if test.candidate_ranker_id else test.candidate
    online = OnlineResult(tally.candidate_wins, tally.control_wins, tally.decided, tally.p_value)
    online_say = promotion_decide(
        offline=[],
        interleave=True,
        online=online,
        min_sessions=settings.SEARCH_INTERLEAVE_MIN_SEARCHES,
    )
    if online_say.verdict != Verdict.PROMOTE:
        return online_say
    passed = bool((candidate.metrics or {}).get("passed_offline_gates"))
    return promotion_decide(
        offline=[GateResult("offline gates", passed, required=True)],
        interleave=True,
        online=online,
        min_sessions=settings.SEARCH_INTERLEAVE_MIN_SEARCHES,
    )


def ranker_interleaving_start(*, ranker: Ranker) -> str:
    """Test `ranker` against the live one (or fusion) on shoppers: an interleaving test in
    the active space, merging both rankers' orders. What happened, as a sentence."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [INTERLEAVING_START_LOCK])
        unfinished = InterleavingTest.objects.filter(status__in=InterleavingTest.UNFINISHED)
        if unfinished.exists():
            return (
                "no interleaving test started (another one is running): start it from the "
                "ranker's page when that one ends"
            )
        space = space_active()
        now = timezone.now()
        test = InterleavingTest.objects.create(
            candidate=space,
            control=space,
            candidate_ranker=ranker,
            control_ranker=ranker_live_row(),
            status=InterleavingTest.Status.RUNNING,
            created=now,
            started=now,
        )
    logger.info("interleaving test %s: ranker %s", test.pk, ranker)
    return "the interleaving test started"
