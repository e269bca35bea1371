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
_SEARCHES = """
    SELECT s.id, s.query, s.session, s.created, s."offset", s.product_ids,
           COALESCE(NULLIF(s.session, ''), s.id::text) AS voter,
           COALESCE(NULLIF(s.client, ''), NULLIF(s.session, ''), s.id::text) AS client
    FROM search_searchlog s
    WHERE s.kind = 'text' AND s.query <> '' AND s.created >= %(since)s
      AND s.filters - 'understood' = '{}'::jsonb
      AND s.session NOT IN (SELECT session FROM robots)
"""

# Sessions that behave like robots give no evidence at all: more than
# SEARCH_ROBOT_SEARCHES_PER_MINUTE searches in a minute; SEARCH_ROBOT_FAST_CLICKS clicks that
# came sooner than SEARCH_ROBOT_MIN_DWELL_SECONDS after their search (nobody reads a page that
# fast); or one product clicked for SEARCH_ROBOT_SAME_CLICK_QUERIES different queries (one
# click pattern stamped on many queries). A threshold of 0 turns its rule off.
_ROBOTS = """
    SELECT r.session FROM (
        SELECT s.session, count(*) OVER (
            PARTITION BY s.session ORDER BY s.created
            RANGE BETWEEN interval '1 minute' PRECEDING AND CURRENT ROW
        ) AS per_minute
        FROM search_searchlog s
        WHERE s.session <> '' AND s.created >= %(since)s
    ) r
    WHERE %(robot_rate)s > 0 AND r.per_minute > %(robot_rate)s
    UNION
    SELECT s.session FROM search_searchlog s
    JOIN search_searchevent e ON e.search_id = s.id AND e.type = 'click'
    WHERE s.session <> '' AND s.created >= %(since)s
      AND e.created < s.created + %(robot_dwell)s * interval '1 second'
    GROUP BY 1 HAVING %(robot_fast_clicks)s > 0 AND count(*) >= %(robot_fast_clicks)s
    UNION
    SELECT p.session FROM (
        SELECT s.session, e.product_id FROM search_searchlog s
        JOIN search_searchevent e ON e.search_id = s.id AND e.type = 'click'
        WHERE s.session <> '' AND s.created >= %(since)s AND s.kind = 'text'
        GROUP BY 1, 2 HAVING count(DISTINCT s.query) >= %(robot_same_click)s
    ) p
    WHERE %(robot_same_click)s > 0
"""


def _with_searches(more: str = "") -> str:
    """`WITH robots AS (...), searches AS (...)`, `more` added to the searches' conditions."""
    return f"WITH robots AS ({_ROBOTS}), searches AS ({_SEARCHES} {more})"


def _params(**params) -> dict:
    return {
        **params,
        "client_cap": settings.SEARCH_JUDGMENT_CLIENT_CAP,
        "robot_rate": settings.SEARCH_ROBOT_SEARCHES_PER_MINUTE,
        "robot_dwell": settings.SEARCH_ROBOT_MIN_DWELL_SECONDS,
        "robot_fast_clicks": settings.SEARCH_ROBOT_FAST_CLICKS,
        "robot_same_click": settings.SEARCH_ROBOT_SAME_CLICK_QUERIES,
    }


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
        cursor.execute(sql, _params(**params))
        return cursor.fetchall()


_CELLS = f"""
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
    {_CAPPED},
    cells AS (
        SELECT query, product_id, position, count(*)::int AS shown,
               count(*) FILTER (WHERE clicked)::int AS clicks
        FROM capped WHERE nth <= %(client_cap)s
        GROUP BY 1, 2, 3
    )
"""


def impression_cells(*, since: datetime) -> list[tuple[str, int, int, int, int]]:
    """(query, product, position, impressions, clicks): the log by display position, in
    voters (a session shown the product, clicked or not), capped per client. One Python row
    a cell: for tests and the bench; `judgments_compute` streams `_pair_cells` instead."""
    return _fetch(
        f"{_with_searches()}, {_CELLS} SELECT * FROM cells ORDER BY 1, 2, 3",
        {"since": since, "max_position": settings.SEARCH_JUDGMENT_MAX_POSITION},
    )


@dataclass
class PairCells:
    """The impression cells as numpy arrays, one entry a cell, indexed by pair: what EM
    needs in 14 bytes a cell, with the pairs (query, product) in (query, product) order."""

    queries: list[str]  # distinct, in order
    pair_query: np.ndarray  # int32 index into queries, one per pair
    pair_product: np.ndarray  # int64, one per pair
    cell_pair: np.ndarray  # int32
    cell_position: np.ndarray  # int16, 1-based
    cell_shown: np.ndarray  # int32
    cell_clicks: np.ndarray  # int32


def _grown(array: np.ndarray, needed: int) -> np.ndarray:
    if needed <= len(array):
        return array
    bigger = np.empty(max(needed, 2 * len(array)), array.dtype)
    bigger[: len(array)] = array
    return bigger


def pair_cells(*, since: datetime, chunk: int = 20_000) -> PairCells:
    """The impression cells, aggregated in SQL to one row per (query, product) with its
    cells as arrays and read through a server-side cursor `chunk` rows at a time, so that
    memory is the pairs and 14 bytes a cell, never a Python row per logged impression."""
    queries: list[str] = []
    pair_query = np.empty(chunk, np.int32)
    pair_product = np.empty(chunk, np.int64)
    cells = {
        "pair": np.empty(chunk, np.int32),
        "position": np.empty(chunk, np.int16),
        "shown": np.empty(chunk, np.int32),
        "clicks": np.empty(chunk, np.int32),
    }
    pairs = filled = 0
    params = _params(since=since, max_position=settings.SEARCH_JUDGMENT_MAX_POSITION)
    with connection.chunked_cursor() as cursor:
        cursor.execute(
            f"""
            {_with_searches()}, {_CELLS}
            SELECT query, product_id, array_agg(position), array_agg(shown),
                   array_agg(clicks)
            FROM cells GROUP BY 1, 2
            ORDER BY query COLLATE "C", product_id
            """,
            params,
        )
        while rows := cursor.fetchmany(chunk):
            pair_query = _grown(pair_query, pairs + len(rows))
            pair_product = _grown(pair_product, pairs + len(rows))
            width = sum(len(row[2]) for row in rows)
            for name in cells:
                cells[name] = _grown(cells[name], filled + width)
            for query, product, positions, shown, clicks in rows:
                if not queries or queries[-1] != query:
                    queries.append(query)
                pair_query[pairs], pair_product[pairs] = len(queries) - 1, product
                end = filled + len(positions)
                cells["pair"][filled:end] = pairs
                cells["position"][filled:end] = positions
                cells["shown"][filled:end] = shown
                cells["clicks"][filled:end] = clicks
                pairs, filled = pairs + 1, end
    return PairCells(
        queries,
        pair_query[:pairs].copy(),
        pair_product[:pairs].copy(),
        cells["pair"][:filled].copy(),
        cells["position"][:filled].copy(),
        cells["shown"][:filled].copy(),
        cells["clicks"][:filled].copy(),
    )


def engagement_counts(*, since: datetime) -> list[tuple[str, int, int, int]]:
    """(query, product, carts, purchases) in voters, capped per client: only a cart or
    purchase that followed a click on the product in the same search counts."""
    return _fetch(
        f"""
        {_with_searches()},
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


def counted_searches_fetch(select: str, *, since: datetime, more: str = "", **params) -> list:
    """Rows of `select`, a statement over `searches`: the text searches the judgments count
    (no shopper filters, no robots; `voter` and `client` columns), `more` added to their
    conditions (the learned ranker's features are read through it)."""
    return _fetch(f"{_with_searches(more)} {select}", {"since": since, **params})


def product_engagement(*, since: datetime) -> list[tuple[int, int, int, int]]:
    """(product, clicking clients, carting clients, buying clients) since `since`: the
    learned ranker's popularity. The judgments' protections hold: text searches without
    shopper filters, robots left out, a cart or purchase only after a click in its search,
    and each client (address, else session) counted once per product, however often it
    clicked."""
    return _fetch(
        f"""
        {_with_searches()}
        SELECT e.product_id,
               count(DISTINCT s.client) FILTER (WHERE e.type = 'click')::int,
               count(DISTINCT s.client) FILTER (WHERE e.type = 'add_to_cart' AND clicked)::int,
               count(DISTINCT s.client) FILTER (WHERE e.type = 'purchase' AND clicked)::int
        FROM searches s JOIN search_searchevent e ON e.search_id = s.id
        CROSS JOIN LATERAL (
            SELECT EXISTS (
                SELECT 1 FROM search_searchevent c
                WHERE c.search_id = s.id AND c.product_id = e.product_id AND c.type = 'click'
            ) AS clicked
        ) c
        GROUP BY 1
        """,
        {"since": since},
    )


def reformulation_clicks(*, since: datetime) -> list[tuple[str, int, int]]:
    """(first query, product, voters): a search without a click whose session's next
    search for other words (without shopper filters), within SEARCH_REFORMULATION_SECONDS,
    clicked the product; in sessions, capped per client."""
    return _fetch(
        f"""
        {_with_searches("AND s.session <> ''")},
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
        {_with_searches()},
        voters AS (SELECT query, voter, min(client) AS client FROM searches GROUP BY 1, 2),
        per_client AS (SELECT query, client, count(*) AS n FROM voters GROUP BY 1, 2)
        SELECT query, sum(LEAST(n, %(client_cap)s))::int FROM per_client GROUP BY 1
        """,
        {"since": since},
    )
    return dict(rows)


def query_client_counts(*, since: datetime) -> dict[str, int]:
    """Per query, the distinct clients (addresses; else sessions) that searched it."""
    rows = _fetch(
        f"{_with_searches()} SELECT query, count(DISTINCT client)::int FROM searches GROUP BY 1",
        {"since": since},
    )
    return dict(rows)


def judgments_discarded(*, since: datetime) -> list[dict]:
    """What the judgments left out of the log since `since`, and why: one row per reason
    with the sessions, searches and events (stored ones) it concerns. Events refused at
    the API (another session's, or a cart without a click) are answered 400 and never
    stored, so they are not here."""
    filtered, robots, capped, unclicked = _fetch(
        f"""
        {_with_searches()},
        text AS (
            SELECT s.id, s.session, s.filters - 'understood' <> '{{}}'::jsonb AS filtered
            FROM search_searchlog s
            WHERE s.kind = 'text' AND s.query <> '' AND s.created >= %(since)s
        ),
        shown AS (
            SELECT s.query, p.product_id, s.voter, s.client
            FROM searches s CROSS JOIN LATERAL unnest(s.product_ids) AS p(product_id)
        ),
        votes AS (SELECT query, product_id, voter, min(client) AS client
                  FROM shown GROUP BY 1, 2, 3),
        {_CAPPED}
        SELECT 'shopper filters', count(DISTINCT NULLIF(t.session, '')),
               count(DISTINCT t.id), count(e.id)
        FROM text t LEFT JOIN search_searchevent e ON e.search_id = t.id
        WHERE t.filtered
        UNION ALL
        SELECT 'robot sessions', count(DISTINCT s.session), count(DISTINCT s.id), count(e.id)
        FROM search_searchlog s LEFT JOIN search_searchevent e ON e.search_id = s.id
        WHERE s.created >= %(since)s AND s.session IN (SELECT session FROM robots)
        UNION ALL
        SELECT 'capped by client', count(DISTINCT voter), NULL, count(*)
        FROM capped WHERE nth > %(client_cap)s
        UNION ALL
        SELECT 'carts and purchases without a click', count(DISTINCT NULLIF(s.session, '')),
               count(DISTINCT s.id), count(*)
        FROM search_searchlog s JOIN search_searchevent e ON e.search_id = s.id
        WHERE s.created >= %(since)s AND e.type IN ('add_to_cart', 'purchase')
          AND NOT EXISTS (
            SELECT 1 FROM search_searchevent c
            WHERE c.search_id = s.id AND c.product_id = e.product_id AND c.type = 'click'
          )
        """,
        {"since": since},
    )
    rows = []
    for reason, sessions, searches, events in (filtered, robots, capped, unclicked):
        row = {"reason": reason, "sessions": sessions, "searches": searches, "events": events}
        if reason == "capped by client":  # (query, product, session) votes, not events
            row["events"], row["votes"] = None, events
        rows.append(row)
    return rows


# --- the click model ----------------------------------------------------------------------


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
