"""Benchmark (not a test): the Search insights page's SQL on a large search log.

    .venv/bin/python bench/insights.py [--searches 300000] [--days 90] [--range-days 30]
                                       [--rounds 5] [--fresh]

Fills a scratch database (its own, kept between runs unless --fresh) with a search log of
`--searches` text searches spread over `--days` days: 5,000 distinct queries with a
Zipf-like popularity, 5% finding nothing, a third of those with results clicked (the first
click at position 1 to 5). Then, for the last `--range-days` days, times the page's two
statements (the summary: totals, top and no-click queries, by day; the zero-result
queries) against a baseline measured in the same run: loading the range's searches and clicks into
Python and counting there; and the zero-result queries' themes, their vectors not yet
cached and cached. Prints each one's median, the page's total as a ratio of the
baseline, and the plan's access path to the log (the `created` index or a scan).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop_search.settings.test")
from harness import setup_django  # noqa: E402 (after sys.path is set)

DATABASE = "bench_shop_search_insights"


def fill(searches: int, days: int) -> None:
    """The log, in a few statements (generate_series), if it is not there yet."""
    from django.db import connection

    from catalog.models import Product
    from embeddings.spaces import space_ensure_default
    from search.models import SearchEvent, SearchLog

    if SearchLog.objects.count() == searches:
        return
    SearchEvent.objects.all().delete()
    SearchLog.objects.all().delete()
    space = space_ensure_default()
    Product.objects.bulk_create(
        [Product(sku=f"BENCH-{n}", title=f"bench product {n}", price=1) for n in range(5)],
        ignore_conflicts=True,
    )
    ids = list(
        Product.objects.filter(sku__startswith="BENCH-").order_by("pk").values_list("pk", flat=True)
    )
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {SearchLog._meta.db_table}
                (id, created, kind, channel, query, filters, sort, "offset", product_ids,
                 result_count, session, teams, space_id)
            SELECT gen_random_uuid(), now() - random() * interval '{days} days', 'text',
                   'api', 'query ' || floor(5000 * power(random(), 3))::int, '{{}}', '', 0,
                   CASE WHEN zero THEN '{{}}'::bigint[] ELSE %s::bigint[] END,
                   CASE WHEN zero THEN 0 ELSE 20 END, '', '{{}}', %s
            FROM (SELECT random() < 0.05 AS zero FROM generate_series(1, %s)) g
            """,
            [ids, space.pk, searches],
        )
        cursor.execute(
            f"""
            INSERT INTO {SearchEvent._meta.db_table}
                (search_id, type, product_id, position, created)
            SELECT l.id, 'click', l.product_ids[p.position], p.position,
                   l.created + interval '30 seconds'
            FROM {SearchLog._meta.db_table} l
            CROSS JOIN LATERAL (SELECT 1 + floor(random() * 5)::int AS position) p
            WHERE l.result_count > 0 AND random() < 0.33
            """
        )
        cursor.execute(f"ANALYZE {SearchLog._meta.db_table}")
        cursor.execute(f"ANALYZE {SearchEvent._meta.db_table}")
    print(f"filled {searches:,} searches in {time.perf_counter() - started:.1f} s")


def baseline(window) -> dict:
    """What the page shows, counted in Python from every search of the range."""
    from search.models import SearchEvent, SearchLog

    first, after = window.bounds()
    logs = SearchLog.objects.filter(kind="text", created__gte=first, created__lt=after)
    clicks = defaultdict(list)
    for search_id, position, created in SearchEvent.objects.filter(
        search__in=logs, type="click"
    ).values_list("search_id", "position", "created"):
        clicks[search_id].append((created, position))
    searches, clicked, zero = Counter(), Counter(), Counter()
    for search_id, query, result_count in logs.values_list("id", "query", "result_count"):
        searches[query] += 1
        clicked[query] += bool(clicks.get(search_id))
        zero[query] += result_count == 0
    return {"top": searches.most_common(50), "clicked": clicked, "zero": zero}


def median_seconds(run, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--searches", type=int, default=300_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--range-days", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--fresh", action="store_true", help="rebuild the scratch database")
    args = parser.parse_args()
    setup_django(DATABASE)
    from django.db import connection

    from search import insights

    connection.creation.create_test_db(verbosity=0, keepdb=not args.fresh, serialize=False)
    fill(args.searches, args.days)
    window = insights.InsightsRange.last_days(args.range_days)
    in_range = insights.insights_summary(window=window, limit=1).totals.searches
    print(f"{args.searches:,} searches over {args.days} days; {in_range:,} in the last range")

    def page():
        insights.insights_summary(window=window, limit=50)
        insights.insights_zero_result_queries(window=window, limit=50)

    figures = {
        "summary (one statement)": lambda: insights.insights_summary(window=window, limit=50),
        "zero-result queries": lambda: insights.insights_zero_result_queries(
            window=window, limit=50
        ),
    }
    for name, run in figures.items():
        print(f"{name:>24}: {median_seconds(run, args.rounds) * 1000:8.0f} ms")
    sql = median_seconds(page, args.rounds)
    python = median_seconds(lambda: baseline(window), args.rounds)
    print(f"{'the page, both (SQL)':>24}: {sql * 1000:8.0f} ms")
    print(
        f"{'baseline (in Python)':>24}: {python * 1000:8.0f} ms   SQL/baseline = {sql / python:.2f}"
    )

    from django.core.cache import cache

    from embeddings.spaces import space_active, space_encoder

    space = space_active()
    space_encoder(space)  # loaded once per process, as in a web process
    cache.clear()
    started = time.perf_counter()
    themes = insights.insights_zero_result_clusters(window=window, space=space)
    cold = time.perf_counter() - started
    warm = median_seconds(
        lambda: insights.insights_zero_result_clusters(window=window, space=space), args.rounds
    )
    grouped = sum(len(t.queries) for t in themes)
    print(
        f"{'zero-result themes':>24}: {cold * 1000:8.0f} ms encoding {grouped} queries, "
        f"{warm * 1000:.0f} ms with their vectors cached ({len(themes)} themes)"
    )

    searches, params = insights._searches(window)
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN {searches}", params)
        plan = [row[0] for row in cursor.fetchall()]
    log_access = [line.strip() for line in plan if "search_searchlog" in line]
    print("log read by:", "; ".join(log_access))


if __name__ == "__main__":
    main()
