"""Search insights for merchandisers (Admin › Search insights): what shoppers search, what
finds nothing, what finds results nobody clicks, and how click-through and the rank of the
first click move by day.

Reads only, in SQL: every figure is a GROUP BY over the text searches of a date range
(the `created` index bounds the scan) joined to their clicks, never the log in Python.
Only the zero-result queries' grouping by meaning runs in Python, on the
SEARCH_INSIGHTS_CLUSTER_QUERIES most searched of them.

Definitions (README, "Search insights"): every logged page of text results is a search;
a search is *clicked* when it has at least one click event; CTR = clicked searches /
searches; MRR of the first click = the mean of 1 / position of each clicked search's first
click (in time), over clicked searches.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db import connection
from django.utils import timezone

from catalog.importing.selectors import spreadsheet_safe
from catalog.text import text_printable
from embeddings.models import EmbeddingSpace
from search.models import SearchEvent, SearchLog
from search.selectors import text_vectors

MAX_RANGE_DAYS = 366
CLOCK_MARGIN = dt.timedelta(hours=1)  # events stamped by another machine's clock
# Below this many queries their median distance says little about the model's spread.
MIN_QUERIES_FOR_RELATIVE = 4


class InsightsRangeInvalid(ValueError):
    """A date range the page cannot show (end before start, longer than a year)."""


@dataclass(frozen=True)
class InsightsRange:
    """The searches insights look at: text searches from `start` to `end` (whole days in
    the shop's time zone, both included), optionally only those answered by one space."""

    start: dt.date
    end: dt.date
    space_id: int | None = None

    def __post_init__(self):
        if self.end < self.start:
            raise InsightsRangeInvalid(f"The end date {self.end} is before the start {self.start}.")
        if (self.end - self.start).days >= MAX_RANGE_DAYS:
            raise InsightsRangeInvalid(f"Choose at most {MAX_RANGE_DAYS} days.")

    @classmethod
    def last_days(cls, days: int = 30, *, space_id: int | None = None) -> InsightsRange:
        today = timezone.localdate()
        return cls(start=today - dt.timedelta(days=days - 1), end=today, space_id=space_id)

    @property
    def days(self) -> list[dt.date]:
        return [self.start + dt.timedelta(days=n) for n in range((self.end - self.start).days + 1)]

    def bounds(self) -> tuple[dt.datetime, dt.datetime]:
        """[first moment, moment after the last day) as aware datetimes."""
        zone = timezone.get_current_timezone()
        first = dt.datetime.combine(self.start, dt.time.min, tzinfo=zone)
        after = dt.datetime.combine(self.end + dt.timedelta(days=1), dt.time.min, tzinfo=zone)
        return first, after


@dataclass(frozen=True)
class QueryStats:
    """A query's searches in the range and what shoppers clicked."""

    query: str
    searches: int
    clicked: int  # searches with at least one click
    clicks: int  # click events

    @property
    def ctr(self) -> float:
        return self.clicked / self.searches if self.searches else 0.0


@dataclass(frozen=True)
class QueryCount:
    """A query that found nothing (or nothing clicked): how often, and when last."""

    query: str
    searches: int
    last_searched: dt.datetime


@dataclass(frozen=True)
class DayStats:
    day: dt.date
    searches: int
    clicked: int
    zero_results: int
    mrr: float | None  # None: no clicked search that day

    @property
    def ctr(self) -> float | None:
        return self.clicked / self.searches if self.searches else None


@dataclass(frozen=True)
class Totals:
    searches: int
    clicked: int
    zero_results: int
    mrr: float | None

    @property
    def ctr(self) -> float | None:
        return self.clicked / self.searches if self.searches else None


@dataclass(frozen=True)
class Insights:
    totals: Totals
    top: list[QueryStats]  # the most searched queries
    no_clicks: list[QueryCount]  # searches with results, never a click
    days: list[DayStats]  # the days of the range with searches


@dataclass(frozen=True)
class QueryCluster:
    """Zero-result queries close in meaning, named by the most central of them."""

    name: str
    searches: int
    queries: list[QueryCount]


# One row per text search of the range, with its clicks. The clicks are counted per search
# in one pass over the events since the range began (the events' `created` index; a click
# comes after its search, an hour's margin for clocks; the log's retention bounds it), then
# hash-joined to the range's searches: 4.6x faster than looking up each search's events
# (bench/README.md, "Search insights").
_SEARCHES_SQL = """
    SELECT l.id, l.query, l.result_count, l.created,
           coalesce(c.clicks, 0) AS clicks, c.first_position
    FROM {log} l
    LEFT JOIN (
        SELECT e.search_id, count(*) AS clicks,
               (array_agg(e.position ORDER BY e.created, e.position))[1] AS first_position
        FROM {event} e
        WHERE e.type = %s AND e.created >= %s
        GROUP BY e.search_id
    ) c ON c.search_id = l.id
    WHERE l.kind = %s AND l.created >= %s AND l.created < %s {space}
"""


def _searches(window: InsightsRange) -> tuple[str, list]:
    first, after = window.bounds()
    sql = _SEARCHES_SQL.format(
        log=SearchLog._meta.db_table,
        event=SearchEvent._meta.db_table,
        space="AND l.space_id = %s" if window.space_id is not None else "",
    )
    params = [SearchEvent.Type.CLICK, first - CLOCK_MARGIN, SearchLog.Kind.TEXT, first, after]
    if window.space_id is not None:
        params.append(window.space_id)
    return sql, params


def _rows(sql: str, params: list) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def insights_summary(*, window: InsightsRange, limit: int) -> Insights:
    """The page's figures but the zero-result queries, in one statement: the range's
    searches and their clicks are read once (materialised), then summed up per query, per
    day and in all; the top and no-click lists keep their `limit` most searched queries."""
    searches, params = _searches(window)
    ((totals, top, no_clicks, days),) = _rows(
        f"""
        WITH s AS MATERIALIZED ({searches}),
        q AS MATERIALIZED (
            SELECT query, count(*) AS searches, count(*) FILTER (WHERE clicks > 0) AS clicked,
                   sum(clicks) AS clicks, count(*) FILTER (WHERE result_count > 0) AS found,
                   sum(clicks) FILTER (WHERE result_count > 0) AS found_clicks,
                   max(created) FILTER (WHERE result_count > 0) AS last_found
            FROM s WHERE query <> '' GROUP BY query
        )
        SELECT
            (SELECT json_build_array(
                count(*), count(*) FILTER (WHERE clicks > 0),
                count(*) FILTER (WHERE result_count = 0), avg(1.0 / first_position))
             FROM s),
            (SELECT json_agg(json_build_array(query, searches, clicked, clicks))
             FROM (SELECT * FROM q ORDER BY searches DESC, query LIMIT %s) t),
            (SELECT json_agg(json_build_array(query, found, last_found))
             FROM (SELECT * FROM q WHERE found > 0 AND found_clicks = 0
                   ORDER BY found DESC, query LIMIT %s) t),
            (SELECT json_agg(json_build_array(day, n, c, z, mrr) ORDER BY day)
             FROM (SELECT (created AT TIME ZONE %s)::date AS day, count(*) AS n,
                          count(*) FILTER (WHERE clicks > 0) AS c,
                          count(*) FILTER (WHERE result_count = 0) AS z,
                          avg(1.0 / first_position) AS mrr
                   FROM s GROUP BY day) t)
        """,
        [*params, limit, limit, timezone.get_current_timezone_name()],
    )
    count, clicked, zero, mrr = totals
    return Insights(
        totals=Totals(searches=count, clicked=clicked, zero_results=zero, mrr=mrr),
        top=[QueryStats(query=q, searches=n, clicked=c, clicks=k) for q, n, c, k in top or ()],
        no_clicks=[
            QueryCount(query=q, searches=n, last_searched=dt.datetime.fromisoformat(t))
            for q, n, t in no_clicks or ()
        ],
        days=[
            DayStats(day=dt.date.fromisoformat(d), searches=n, clicked=c, zero_results=z, mrr=m)
            for d, n, c, z, m in days or ()
        ],
    )


def insights_zero_result_queries(*, window: InsightsRange, limit: int) -> list[QueryCount]:
    """Queries whose searches found nothing, the most searched first (the events are not
    read: Postgres leaves their join out)."""
    searches, params = _searches(window)
    rows = _rows(
        f"""
        WITH s AS ({searches})
        SELECT query, count(*) AS searches, max(created)
        FROM s WHERE query <> '' AND result_count = 0
        GROUP BY query ORDER BY searches DESC, query LIMIT %s
        """,
        [*params, limit],
    )
    return [QueryCount(query=q, searches=n, last_searched=t) for q, n, t in rows]


def insights_zero_result_clusters(
    *,
    window: InsightsRange,
    space: EmbeddingSpace,
    limit: int | None = None,
    distance: float | None = None,
) -> list[QueryCluster]:
    """The `limit` most searched zero-result queries grouped by meaning in `space`'s text
    tower, the biggest group first; each group named by its most central query.

    scikit-learn's agglomerative clustering with complete linkage on cosine distance: no
    number of groups to guess, and a query joins a group only when it is closer than the
    threshold to every query in it. The threshold is `distance`, or less where this model
    finds the queries close anyway: a small model puts all words it does not know near one
    another, so the threshold is at most SEARCH_INSIGHTS_CLUSTER_RELATIVE of the queries'
    median distance to each other. A query close to no other is a theme of its own.
    """
    limit = settings.SEARCH_INSIGHTS_CLUSTER_QUERIES if limit is None else limit
    distance = settings.SEARCH_INSIGHTS_CLUSTER_DISTANCE if distance is None else distance
    queries = insights_zero_result_queries(window=window, limit=limit)
    if not queries:
        return []
    vectors = text_vectors(space, [q.query for q in queries])
    distances = 1.0 - vectors @ vectors.T  # the vectors are normalised
    if len(queries) < 2:
        labels = np.zeros(len(queries), dtype=int)
    else:
        # Imported here: scikit-learn takes a second to import, in every process otherwise.
        from sklearn.cluster import AgglomerativeClustering

        if len(queries) >= MIN_QUERIES_FOR_RELATIVE:
            pairs = distances[np.triu_indices(len(queries), k=1)]
            relative = settings.SEARCH_INSIGHTS_CLUSTER_RELATIVE * float(np.median(pairs))
            distance = min(distance, relative)
        labels = AgglomerativeClustering(
            n_clusters=None, metric="precomputed", linkage="complete", distance_threshold=distance
        ).fit_predict(np.clip(distances, 0.0, None))
    groups: dict[int, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        groups[int(label)].append(index)  # each group keeps the most searched first
    clusters = []
    for members in groups.values():
        # The most central: the least summed distance to the others (ties: most searched).
        central = min(
            members, key=lambda i: (round(float(distances[i, members].sum()), 4), members.index(i))
        )
        group = [queries[i] for i in members]
        clusters.append(
            QueryCluster(
                name=queries[central].query,
                searches=sum(q.searches for q in group),
                queries=group,
            )
        )
    return sorted(clusters, key=lambda c: (-c.searches, c.name))


# --- CSV export ---------------------------------------------------------------------------

EXPORT_TABLES = ("top", "zero", "no_clicks", "days", "clusters")


def _csv_cell(value) -> str:
    """A cell a spreadsheet shows as typed: shoppers' queries are untrusted, and one that
    starts like a formula ("=HYPERLINK(...)") would run as one; control and bidi characters
    (ESC, BEL, U+202E) would colour a terminal or reorder the cell."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, dt.datetime):
        return timezone.localtime(value).isoformat(timespec="seconds")
    return spreadsheet_safe(text_printable(str(value)))


def insights_export_rows(
    *, table: str, window: InsightsRange, limit: int, space: EmbeddingSpace | None
) -> list[list[str]]:
    """One table of the page as CSV rows, header first (`space`: the text tower that
    groups the zero-result queries)."""
    if table in ("top", "no_clicks", "days"):
        summary = insights_summary(window=window, limit=limit)
    if table == "top":
        rows = [["query", "searches", "clicked_searches", "clicks", "ctr"]]
        rows += [[q.query, q.searches, q.clicked, q.clicks, q.ctr] for q in summary.top]
    elif table in ("zero", "no_clicks"):
        rows = [["query", "searches", "last_searched"]]
        listed = (
            summary.no_clicks
            if table == "no_clicks"
            else insights_zero_result_queries(window=window, limit=limit)
        )
        rows += [[q.query, q.searches, q.last_searched] for q in listed]
    elif table == "days":
        rows = [["day", "searches", "clicked_searches", "zero_result_searches", "ctr", "mrr"]]
        rows += [
            [d.day.isoformat(), d.searches, d.clicked, d.zero_results, d.ctr, d.mrr]
            for d in summary.days
        ]
    elif table == "clusters":
        rows = [["cluster", "cluster_searches", "query", "searches"]]
        if space is not None:
            rows += [
                [cluster.name, cluster.searches, q.query, q.searches]
                for cluster in insights_zero_result_clusters(window=window, space=space)
                for q in cluster.queries
            ]
    else:
        raise ValueError(f"Unknown table {table!r}: choose one of {', '.join(EXPORT_TABLES)}.")
    return [[_csv_cell(cell) for cell in row] for row in rows]
