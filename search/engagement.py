"""The search log's evidence of relevance, aggregated in SQL: impressions and clicks per
(query, product, position) for the click model (search.judgments), engagement per query
and product, reformulations, who searched, and what was left out and why.

Whose evidence counts (the log is written by anonymous clients, some of them hostile):
every count is of *voters*, a session (or a sessionless search) counted once per (query,
product) however often it searched or sent events, and of one client (a keyed hash of the
address) at most SEARCH_JUDGMENT_CLIENT_CAP voters; searches with shopper filters are left
out (`_SEARCHES`), and a cart or purchase counts only after a click in its search.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
from django.conf import settings
from django.db import connection

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
