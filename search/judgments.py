"""Relevance judgments from the search log: what shoppers chose, corrected for position.

A shopper clicks what they look at, and they look at the top of the page far more than at
the bottom, so raw click-through rates mostly measure position. The judgments here use the
*position-based click model* (PBM; Chuklin, Markov and de Rijke, "Click Models for Web
Search", 2015, ch. 3.4 and 4.2):

    P(click on product d at position k for query q) = theta_k * gamma_(q,d)

where theta_k is the probability that a shopper examines position k at all (the same for
every query) and gamma_(q,d) the probability that a shopper who sees d for q clicks it
(its *attractiveness*, what we want). Both are estimated together by expectation
maximisation over the log (the book's algorithm, as in Wang et al., "Position Bias
Estimation for Unbiased Learning to Rank in Personal Search", WSDM 2018, without their
regression step):

* E-step, for each impression without a click: the shopper either did not examine it,
  P(E=1 | C=0) = theta_k (1 - gamma) / (1 - theta_k gamma), or examined and did not like
  it, P(A=1 | C=0) = (1 - theta_k) gamma / (1 - theta_k gamma). A click means both.
* M-step: theta_k = (clicks at k + expected examinations without a click at k) /
  impressions at k; gamma_(q,d) = (clicks + expected attractions without a click) /
  impressions of (q, d).

EM runs on the log as SQL aggregated it, one row per (query, product, position) with its
impressions and clicks, never on the raw rows. The model fixes only the product
theta_k * gamma, so the result is scaled to theta_1 = 1 (a shopper always looks at the
first result) and gamma clipped to [0, 1].

Graded relevance (0-3, the gain of nDCG) then adds what shoppers did after the click:
3 purchased, 2 added to the cart or attractive at SEARCH_JUDGMENT_STRONG (0.5), 1
attractive at SEARCH_JUDGMENT_ATTRACTIVE (0.2) or linked by a reformulation, else 0.

Reformulations: in one session, a text search without a click followed within
SEARCH_REFORMULATION_SECONDS by a search for other words whose results were clicked links
the first query to the clicked products (weaker evidence: grade 1, training weight 0.5):
the shopper who typed "rucksack", saw nothing, and then clicked a backpack for "backpack"
wanted that backpack for "rucksack".

The evidence itself (whose counts, which searches) is read by search.engagement.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from django.conf import settings
from django.utils import timezone

from embeddings.training import is_validation_key
from search.engagement import (
    engagement_counts,
    pair_cells,
    query_client_counts,
    query_search_counts,
    reformulation_clicks,
)


@dataclass(frozen=True, slots=True)
class Judgment:
    """What the log says about one product for one query."""

    query: str
    product_id: int
    impressions: int
    clicks: int
    carts: int
    purchases: int
    reformulation_clicks: int  # clicks after a reformulation of this query
    attractiveness: float  # gamma of the click model, position bias removed
    grade: int  # 0-3

    @property
    def weight(self) -> float:
        """How much a training pair of (query, this product) counts: purchase > cart > click."""
        if self.purchases:
            return 3.0
        if self.carts:
            return 2.0
        if self.clicks and self.grade:
            return 1.0
        return 0.5 if self.grade else 0.0


@dataclass(frozen=True)
class QueryJudgments:
    query: str
    searches: int
    products: dict[int, Judgment] = field(default_factory=dict)
    clients: int = 0  # distinct clients (addresses) that searched it: how many agree

    def grades(self) -> dict[int, int]:
        return {pid: j.grade for pid, j in self.products.items() if j.grade > 0}


@dataclass(frozen=True)
class ClickModel:
    """The fitted PBM: examination by position (1-based), attractiveness by (query, product)."""

    examination: dict[int, float]
    attractiveness: dict[tuple[str, int], float]
    iterations: int


# --- SQL aggregates -----------------------------------------------------------------------


# The text searches that judgments learn from. `voter`: its session (a sessionless search is
# a voter of its own); `client`: the keyed hash of its address (else its voter).
# Searches with shopper filters are left out: a filter decides which products compete (a mug
# is shown for "backpack" under category=mugs), so what is chosen there says nothing about
# the query's words; understood filters came from those words and stay.
def click_model_fit(
    cells: Iterable[tuple[str, int, int, int, int]],
    *,
    iterations: int = 500,
    tolerance: float = 1e-7,
) -> ClickModel:
    """PBM parameters by EM (module docstring) from (query, product, position, impressions,
    clicks) cells."""
    cells = list(cells)
    pairs: dict[tuple[str, int], int] = {}
    pair_ix = np.fromiter((pairs.setdefault((q, p), len(pairs)) for q, p, *_ in cells), np.int32)
    theta, gamma, done = click_model_em(
        cell_pair=pair_ix,
        cell_position=np.array([c[2] for c in cells], dtype=np.int16),
        cell_shown=np.array([c[3] for c in cells], dtype=np.int32),
        cell_clicks=np.array([c[4] for c in cells], dtype=np.int32),
        pairs=len(pairs),
        iterations=iterations,
        tolerance=tolerance,
    )
    return ClickModel(
        examination=theta,
        attractiveness={pair: float(gamma[i]) for pair, i in pairs.items()},
        iterations=done,
    )


def click_model_em(
    *,
    cell_pair: np.ndarray,
    cell_position: np.ndarray,
    cell_shown: np.ndarray,
    cell_clicks: np.ndarray,
    pairs: int,
    iterations: int = 500,
    tolerance: float = 1e-7,
    block: int = 1 << 20,
) -> tuple[dict[int, float], np.ndarray, int]:
    """EM over cells as arrays: (examination by position, gamma by pair index, iterations),
    scaled so that position 1 is always examined. Each iteration walks the cells `block`
    at a time, so its float temporaries are bounded whatever the log's size."""
    if not len(cell_pair):
        return {}, np.zeros(pairs), 0
    present = np.unique(cell_position)
    pos_ix = np.searchsorted(present, cell_position).astype(np.int16)
    slices = [slice(i, i + block) for i in range(0, len(cell_pair), block)]

    def sums(weights) -> tuple[np.ndarray, np.ndarray]:
        by_pos, by_pair = np.zeros(len(present)), np.zeros(pairs)
        for part in slices:
            w = weights(part)
            by_pos += np.bincount(pos_ix[part], w[0], len(present))
            by_pair += np.bincount(cell_pair[part], w[1], pairs)
        return by_pos, by_pair

    shown_by_pos, shown_by_pair = sums(lambda part: (cell_shown[part],) * 2)
    theta = np.full(len(present), 0.5)
    gamma = np.full(pairs, 0.5)

    def expected(part):
        clicks = cell_clicks[part].astype(np.float64)
        unclicked = cell_shown[part] - clicks
        t, g = theta[pos_ix[part]], gamma[cell_pair[part]]
        nothing = np.maximum(1.0 - t * g, 1e-12)
        return (
            clicks + unclicked * t * (1.0 - g) / nothing,
            clicks + unclicked * (1.0 - t) * g / nothing,
        )

    done = 0
    while done < iterations:
        done += 1
        examined, attracted = sums(expected)
        new_theta, new_gamma = examined / shown_by_pos, attracted / shown_by_pair
        change = max(np.abs(new_theta - theta).max(), np.abs(new_gamma - gamma).max())
        theta, gamma = new_theta, new_gamma
        if change < tolerance:
            break
    # Only theta * gamma is identified: scale to "the first position is always examined".
    scale = theta[0] if theta[0] > 0 else theta.max() or 1.0
    theta_scaled = theta / scale
    examination = {int(k): float(theta_scaled[i]) for i, k in enumerate(present)}
    return examination, np.clip(gamma * scale, 0.0, 1.0), done


def relevance_grade(*, attractiveness: float, carts: int, purchases: int, reformulated: int) -> int:
    if purchases:
        return 3
    if carts or attractiveness >= settings.SEARCH_JUDGMENT_STRONG:
        return 2
    if attractiveness >= settings.SEARCH_JUDGMENT_ATTRACTIVE or reformulated:
        return 1
    return 0


# --- judgments ----------------------------------------------------------------------------


def judgments_since() -> datetime:
    """The start of the whole log (SEARCH_LOG_DAYS, and a day to spare)."""
    return timezone.now() - timedelta(days=settings.SEARCH_LOG_DAYS + 1)


def judgments_compute(*, since: datetime | None = None) -> dict[str, QueryJudgments]:
    """Judgments per query of the text searches logged since `since` (default: the whole
    log, SEARCH_LOG_DAYS): every product shown or linked, with its counts and grade.

    Memory is bounded by the (query, product) pairs: the impressions arrive aggregated per
    pair through a server-side cursor (`pair_cells`), the click model runs on arrays."""
    since = since or judgments_since()
    cells = pair_cells(since=since)
    _, gamma, _ = click_model_em(
        cell_pair=cells.cell_pair,
        cell_position=cells.cell_position,
        cell_shown=cells.cell_shown,
        cell_clicks=cells.cell_clicks,
        pairs=len(cells.pair_product),
    )
    pairs = len(cells.pair_product)
    shown = np.bincount(cells.cell_pair, cells.cell_shown, pairs).astype(np.int64)
    clicks = np.bincount(cells.cell_pair, cells.cell_clicks, pairs).astype(np.int64)
    del cells.cell_pair, cells.cell_position, cells.cell_shown, cells.cell_clicks
    # The engaged and linked pairs are few (an event or a reformulation each, capped).
    engaged = {(q, p): (carts, buys) for q, p, carts, buys in engagement_counts(since=since)}
    linked = {(q, p): n for q, p, n in reformulation_clicks(since=since)}
    searches = query_search_counts(since=since)
    clients = query_client_counts(since=since)
    by_query: dict[str, QueryJudgments] = {}

    def judge(query: str, product: int, impressions: int, clicked: int, attractive: float):
        carts, purchases = engaged.get((query, product), (0, 0))
        links = linked.get((query, product), 0)
        entry = by_query.get(query)
        if entry is None:
            entry = by_query[query] = QueryJudgments(
                query, searches.get(query, 0), clients=clients.get(query, 0)
            )
        entry.products[product] = Judgment(
            query=query,
            product_id=product,
            impressions=impressions,
            clicks=clicked,
            carts=carts,
            purchases=purchases,
            reformulation_clicks=links,
            attractiveness=attractive,
            grade=relevance_grade(
                attractiveness=attractive, carts=carts, purchases=purchases, reformulated=links
            ),
        )

    for i in range(pairs):
        query, product = cells.queries[cells.pair_query[i]], int(cells.pair_product[i])
        judge(query, product, int(shown[i]), int(clicks[i]), float(gamma[i]))
    # Linked or engaged but never shown (in a counted search): no impressions, no gamma.
    unseen = sorted(
        pair
        for pair in engaged.keys() | linked.keys()
        if pair[1] not in by_query.get(pair[0], QueryJudgments("", 0)).products
    )
    for query, product in unseen:
        judge(query, product, 0, 0, 0.0)
    if unseen:  # back into (query, product) order
        by_query = {
            q: QueryJudgments(q, j.searches, dict(sorted(j.products.items())), clients=j.clients)
            for q, j in sorted(by_query.items())
        }
    return by_query


def judged_queries(
    judgments: dict[str, QueryJudgments], *, min_searches: int | None = None
) -> dict[str, QueryJudgments]:
    """The queries with enough judgments to evaluate or train on: searched at least
    SEARCH_JUDGMENT_MIN_SEARCHES times, with at least one product graded relevant."""
    floor = settings.SEARCH_JUDGMENT_MIN_SEARCHES if min_searches is None else min_searches
    return {q: j for q, j in judgments.items() if j.searches >= floor and j.grades()}


def gate_queries(judged: dict[str, QueryJudgments]) -> dict[str, QueryJudgments]:
    """The held-out queries the promotion gate measures: those whose judgments come from at
    least SEARCH_GATE_MIN_CLIENTS distinct clients, so that a few addresses can neither pick
    nor poison what a candidate is judged on (the others are not trained on either)."""
    floor = settings.SEARCH_GATE_MIN_CLIENTS
    return {q: j for q, j in judged.items() if query_is_held_out(q) and j.clients >= floor}


def query_is_held_out(query: str) -> bool:
    """Whether fine-tuning holds this query out (whole queries, never some of their pairs):
    the same hash split as products, on the query text."""
    return is_validation_key(
        f"query\x00{query}", settings.FINETUNE_VAL_FRACTION, settings.FINETUNE_SPLIT_SEED
    )
