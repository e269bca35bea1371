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

Whose evidence counts (the log is written by anonymous clients, some of them hostile):
every count is of *voters*, a session (or a sessionless search) counted once per (query,
product) however often it searched or sent events, and of one client (a keyed hash of the
address) at most SEARCH_JUDGMENT_CLIENT_CAP voters; searches with shopper filters are left
out (`_SEARCHES`), and a cart or purchase counts only after a click in its search.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from django.conf import settings
from django.db import connection
from django.utils import timezone

from embeddings.training import is_validation_key


@dataclass(frozen=True)
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
_SEARCHES = """
    SELECT s.id, s.query, s.session, s.created, s."offset", s.product_ids,
           COALESCE(NULLIF(s.session, ''), s.id::text) AS voter,
           COALESCE(NULLIF(s.client, ''), NULLIF(s.session, ''), s.id::text) AS client
    FROM search_searchlog s
    WHERE s.kind = 'text' AND s.query <> '' AND s.created >= %(since)s
      AND s.filters - 'understood' = '{}'::jsonb
"""

# Over `votes` (one row per query, product and voter, with its client): each voter counts
# once, and of one client's voters only the first SEARCH_JUDGMENT_CLIENT_CAP, so that
# repeating searches, events or sessions from one address weighs no more than a few shoppers.
_CAPPED = """
    capped AS (
        SELECT v.*, row_number() OVER (
            PARTITION BY v.query, v.product_id, v.client ORDER BY v.voter
        ) AS nth
        FROM votes v
    )
"""


def _fetch(sql: str, params: dict) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, {**params, "client_cap": settings.SEARCH_JUDGMENT_CLIENT_CAP})
        return cursor.fetchall()


def impression_cells(*, since: datetime) -> list[tuple[str, int, int, int, int]]:
    """(query, product, position, impressions, clicks): the log by display position, in
    voters (a session shown the product, clicked or not), capped per client."""
    return _fetch(
        f"""
        WITH searches AS ({_SEARCHES}),
        shown AS (
            SELECT s.id AS search_id, s.query, s.voter, s.client, p.product_id,
                   LEAST(s."offset" + p.ord, %(max_position)s)::int AS position
            FROM searches s
            CROSS JOIN LATERAL unnest(s.product_ids) WITH ORDINALITY AS p(product_id, ord)
        ),
        votes AS (
            -- A session that searched again is still one shopper: clicked if it ever
            -- clicked (where it clicked), else once unclicked, so skips are capped too.
            SELECT sh.query, sh.product_id, sh.voter, min(sh.client) AS client,
                   bool_or(e.id IS NOT NULL) AS clicked,
                   COALESCE(min(sh.position) FILTER (WHERE e.id IS NOT NULL),
                            min(sh.position)) AS position
            FROM shown sh
            LEFT JOIN search_searchevent e
              ON e.search_id = sh.search_id AND e.product_id = sh.product_id
             AND e.type = 'click'
            GROUP BY 1, 2, 3
        ),
        {_CAPPED}
        SELECT query, product_id, position, count(*)::int,
               count(*) FILTER (WHERE clicked)::int
        FROM capped WHERE nth <= %(client_cap)s
        GROUP BY 1, 2, 3
        ORDER BY 1, 2, 3
        """,
        {"since": since, "max_position": settings.SEARCH_JUDGMENT_MAX_POSITION},
    )


def engagement_counts(*, since: datetime) -> list[tuple[str, int, int, int]]:
    """(query, product, carts, purchases) in voters, capped per client: only a cart or
    purchase that followed a click on the product in the same search counts."""
    return _fetch(
        f"""
        WITH searches AS ({_SEARCHES}),
        votes AS (
            SELECT s.query, e.product_id, s.voter, min(s.client) AS client,
                   bool_or(e.type = 'add_to_cart') AS cart,
                   bool_or(e.type = 'purchase') AS purchase
            FROM searches s JOIN search_searchevent e ON e.search_id = s.id
            WHERE e.type IN ('add_to_cart', 'purchase')
              AND EXISTS (
                SELECT 1 FROM search_searchevent c
                WHERE c.search_id = s.id AND c.product_id = e.product_id AND c.type = 'click'
              )
            GROUP BY 1, 2, 3
        ),
        {_CAPPED}
        SELECT query, product_id, count(*) FILTER (WHERE cart)::int,
               count(*) FILTER (WHERE purchase)::int
        FROM capped WHERE nth <= %(client_cap)s
        GROUP BY 1, 2
        """,
        {"since": since},
    )


def reformulation_clicks(*, since: datetime) -> list[tuple[str, int, int]]:
    """(first query, product, voters): a search without a click whose session's next
    search for other words (without shopper filters), within SEARCH_REFORMULATION_SECONDS,
    clicked the product; in sessions, capped per client."""
    return _fetch(
        f"""
        WITH searches AS ({_SEARCHES} AND s.session <> ''),
        clicked AS (
            SELECT DISTINCT e.search_id FROM search_searchevent e
            JOIN searches s ON s.id = e.search_id WHERE e.type = 'click'
        ),
        votes AS (
            SELECT a.query, e.product_id, a.voter, min(a.client) AS client
            FROM searches a
            CROSS JOIN LATERAL (
                SELECT b.id, b.filters FROM search_searchlog b
                WHERE b.session = a.session AND b.kind = 'text' AND b.query <> a.query
                  AND b.created > a.created
                  AND b.created <= a.created + %(window)s * interval '1 second'
                ORDER BY b.created LIMIT 1
            ) nxt
            JOIN search_searchevent e ON e.search_id = nxt.id AND e.type = 'click'
            WHERE a.id NOT IN (SELECT search_id FROM clicked)
              AND nxt.filters - 'understood' = '{{}}'::jsonb
            GROUP BY 1, 2, 3
        ),
        {_CAPPED}
        SELECT query, product_id, count(*)::int
        FROM capped WHERE nth <= %(client_cap)s
        GROUP BY 1, 2
        """,
        {"since": since, "window": settings.SEARCH_REFORMULATION_SECONDS},
    )


def query_search_counts(*, since: datetime) -> dict[str, int]:
    """Per query, the voters that searched it, at most SEARCH_JUDGMENT_CLIENT_CAP per client:
    what SEARCH_JUDGMENT_MIN_SEARCHES counts, so one address cannot make a query judged."""
    rows = _fetch(
        f"""
        WITH searches AS ({_SEARCHES}),
        voters AS (SELECT query, voter, min(client) AS client FROM searches GROUP BY 1, 2),
        per_client AS (SELECT query, client, count(*) AS n FROM voters GROUP BY 1, 2)
        SELECT query, sum(LEAST(n, %(client_cap)s))::int FROM per_client GROUP BY 1
        """,
        {"since": since},
    )
    return dict(rows)


# --- the click model ----------------------------------------------------------------------


def click_model_fit(
    cells: Iterable[tuple[str, int, int, int, int]],
    *,
    iterations: int = 500,
    tolerance: float = 1e-7,
) -> ClickModel:
    """PBM parameters by EM (module docstring) from (query, product, position, impressions,
    clicks) cells; vectorised over cells, so a log of millions of rows costs its cells."""
    cells = list(cells)
    if not cells:
        return ClickModel({}, {}, 0)
    pairs: dict[tuple[str, int], int] = {}
    positions: dict[int, int] = {}
    pair_ix = np.fromiter((pairs.setdefault((q, p), len(pairs)) for q, p, *_ in cells), np.int64)
    pos_ix = np.fromiter(
        (positions.setdefault(k, len(positions)) for _, _, k, *_ in cells), np.int64
    )
    shown = np.array([c[3] for c in cells], dtype=np.float64)
    clicks = np.array([c[4] for c in cells], dtype=np.float64)
    unclicked = shown - clicks
    shown_by_pos = np.bincount(pos_ix, shown, len(positions))
    shown_by_pair = np.bincount(pair_ix, shown, len(pairs))

    theta = np.full(len(positions), 0.5)
    gamma = np.full(len(pairs), 0.5)
    done = 0
    while done < iterations:
        done += 1
        t, g = theta[pos_ix], gamma[pair_ix]
        nothing = np.maximum(1.0 - t * g, 1e-12)
        examined = clicks + unclicked * t * (1.0 - g) / nothing
        attracted = clicks + unclicked * (1.0 - t) * g / nothing
        new_theta = np.bincount(pos_ix, examined, len(positions)) / shown_by_pos
        new_gamma = np.bincount(pair_ix, attracted, len(pairs)) / shown_by_pair
        change = max(np.abs(new_theta - theta).max(), np.abs(new_gamma - gamma).max())
        theta, gamma = new_theta, new_gamma
        if change < tolerance:
            break
    # Only theta * gamma is identified: scale to "the first position is always examined".
    first = positions.get(min(positions))
    scale = theta[first] if theta[first] > 0 else theta.max() or 1.0
    theta_scaled = theta / scale
    gamma_scaled = np.clip(gamma * scale, 0.0, 1.0)
    return ClickModel(
        examination={k: float(theta_scaled[i]) for k, i in sorted(positions.items())},
        attractiveness={pair: float(gamma_scaled[i]) for pair, i in pairs.items()},
        iterations=done,
    )


def relevance_grade(*, attractiveness: float, carts: int, purchases: int, reformulated: int) -> int:
    if purchases:
        return 3
    if carts or attractiveness >= settings.SEARCH_JUDGMENT_STRONG:
        return 2
    if attractiveness >= settings.SEARCH_JUDGMENT_ATTRACTIVE or reformulated:
        return 1
    return 0


# --- judgments ----------------------------------------------------------------------------


def judgments_compute(*, since: datetime | None = None) -> dict[str, QueryJudgments]:
    """Judgments per query of the text searches logged since `since` (default: the whole
    log, SEARCH_LOG_DAYS): every product shown or linked, with its counts and grade."""
    since = since or timezone.now() - timedelta(days=settings.SEARCH_LOG_DAYS + 1)
    cells = impression_cells(since=since)
    model = click_model_fit(cells)
    counts: dict[tuple[str, int], list[int]] = {}
    for query, product, _, shown, clicks in cells:
        row = counts.setdefault((query, product), [0, 0, 0, 0, 0])
        row[0] += shown
        row[1] += clicks
    for query, product, carts, purchases in engagement_counts(since=since):
        row = counts.setdefault((query, product), [0, 0, 0, 0, 0])
        row[2], row[3] = carts, purchases
    for query, product, linked in reformulation_clicks(since=since):
        counts.setdefault((query, product), [0, 0, 0, 0, 0])[4] = linked
    searches = query_search_counts(since=since)
    by_query: dict[str, QueryJudgments] = {}
    for (query, product), (shown, clicks, carts, purchases, linked) in sorted(counts.items()):
        gamma = model.attractiveness.get((query, product), 0.0)
        judgment = Judgment(
            query=query,
            product_id=product,
            impressions=shown,
            clicks=clicks,
            carts=carts,
            purchases=purchases,
            reformulation_clicks=linked,
            attractiveness=gamma,
            grade=relevance_grade(
                attractiveness=gamma, carts=carts, purchases=purchases, reformulated=linked
            ),
        )
        entry = by_query.setdefault(query, QueryJudgments(query, searches.get(query, 0)))
        entry.products[product] = judgment
    return by_query


def judged_queries(
    judgments: dict[str, QueryJudgments], *, min_searches: int | None = None
) -> dict[str, QueryJudgments]:
    """The queries with enough judgments to evaluate or train on: searched at least
    SEARCH_JUDGMENT_MIN_SEARCHES times, with at least one product graded relevant."""
    floor = settings.SEARCH_JUDGMENT_MIN_SEARCHES if min_searches is None else min_searches
    return {q: j for q, j in judgments.items() if j.searches >= floor and j.grades()}


def query_is_held_out(query: str) -> bool:
    """Whether fine-tuning holds this query out (whole queries, never some of their pairs):
    the same hash split as products, on the query text."""
    return is_validation_key(
        f"query\x00{query}", settings.FINETUNE_VAL_FRACTION, settings.FINETUNE_SPLIT_SEED
    )
