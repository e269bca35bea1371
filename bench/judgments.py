"""Benchmark (not a test): `judgments_compute` on a large search log, time and peak memory.

    .venv/bin/python bench/judgments.py [--rows 1000000 10000000] [--baseline-rows 1000000]
                                        [--fresh]

For each `--rows`, fills a scratch database of its own (kept between runs unless --fresh)
with that many logged (search, product, position) rows in a few statements
(generate_series): 50 products a search, each query searched about 10 times, each search
showing 50 of its query's 60 products in a random order (so a (query, product) pair has
cells at several positions), one session a search, five searches a client, one click a
search (positions 1-5, 30 s after the search), a cart after one click in ten. Then, each in
a fresh process so that peak memory is its own, times `judgments_compute` (aggregated in
SQL per (query, product), streamed through a server-side cursor, EM on arrays) and, up to
`--baseline-rows`, the Python-row approach it replaced (one tuple per (query, product,
position) cell, fetched at once, EM over lists; kept here, as `judgments_compute_rows`),
measured in the same run: seconds, the growth of peak RSS over the process's RSS before the
call, and tracemalloc's peak (a second pass, as tracing slows the call). Prints ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop_search.settings.test")
from harness import setup_django  # noqa: E402 (after sys.path is set)

PER_SEARCH = 50
POOL = 60  # products a query's searches draw from
SEARCHES_PER_QUERY = 10
PRODUCTS = 20_000


def database(rows: int) -> str:
    return f"bench_shop_search_judgments_{rows}"


def fill(rows: int) -> None:
    """The log, in a few statements, if it is not there yet."""
    from django.db import connection

    from catalog.models import Product
    from search.models import SearchEvent, SearchLog

    searches = rows // PER_SEARCH
    if SearchLog.objects.count() == searches:
        return
    SearchEvent.objects.all().delete()
    SearchLog.objects.all().delete()
    Product.objects.bulk_create(
        [Product(sku=f"BENCH-{n}", title=f"bench product {n}", price=1) for n in range(PRODUCTS)],
        ignore_conflicts=True,
        batch_size=5000,
    )
    ids = list(
        Product.objects.filter(sku__startswith="BENCH-").order_by("pk").values_list("pk", flat=True)
    )
    queries = max(1, searches // SEARCHES_PER_QUERY)
    log, events = SearchLog._meta.db_table, SearchEvent._meta.db_table
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {log}
                (id, created, kind, channel, query, filters, sort, "offset", product_ids,
                 result_count, session, client, teams, space_id)
            SELECT gen_random_uuid(), now() - random() * interval '80 days', 'text', 'api',
                   'query ' || g.q, '{{}}', '', 0,
                   ARRAY(SELECT (%(ids)s::bigint[])[1 + (g.q * 7 + j) %% %(products)s]
                         FROM generate_series(0, %(pool)s - 1) j
                         ORDER BY random() LIMIT %(per_search)s),
                   %(per_search)s, 's' || g.n, 'c' || g.n / 5, '{{}}', NULL
            FROM (SELECT n, n %% %(queries)s AS q FROM generate_series(1, %(searches)s) n) g
            """,
            {
                "ids": ids,
                "products": len(ids),
                "pool": POOL,
                "per_search": PER_SEARCH,
                "queries": queries,
                "searches": searches,
            },
        )
        logged = time.perf_counter()
        cursor.execute(
            f"""
            INSERT INTO {events} (search_id, type, product_id, position, created)
            SELECT l.id, t.type, l.product_ids[p.position], p.position,
                   l.created + interval '30 seconds'
            FROM {log} l
            CROSS JOIN LATERAL (SELECT 1 + floor(5 * random() ^ 2)::int AS position,
                                       random() < 0.1 AS carted) p
            CROSS JOIN LATERAL (VALUES ('click'), ('add_to_cart')) t(type)
            WHERE t.type = 'click' OR p.carted
            """
        )
        cursor.execute(f"ANALYZE {log}")
        cursor.execute(f"ANALYZE {events}")
    print(
        f"filled {rows:,} rows ({searches:,} searches, {queries:,} queries) in "
        f"{time.perf_counter() - started:.0f} s (log {logged - started:.0f} s)",
        flush=True,
    )


# --- the Python-row approach it replaced (search/judgments.py before bounded memory) ----------


def judgments_compute_rows(*, since):
    """The previous `judgments_compute`: every cell a Python tuple, EM over lists."""
    import numpy as np
    from django.conf import settings

    from search import engagement as e
    from search import judgments as j

    cells = e.impression_cells(since=since)
    pairs: dict = {}
    positions: dict = {}
    pair_ix = np.fromiter((pairs.setdefault((q, p), len(pairs)) for q, p, *_ in cells), np.int64)
    pos_ix = np.fromiter(
        (positions.setdefault(k, len(positions)) for _, _, k, *_ in cells), np.int64
    )
    shown = np.array([c[3] for c in cells], dtype=np.float64)
    clicks = np.array([c[4] for c in cells], dtype=np.float64)
    unclicked = shown - clicks
    shown_by_pos = np.bincount(pos_ix, shown, len(positions))
    shown_by_pair = np.bincount(pair_ix, shown, len(pairs))
    theta, gamma = np.full(len(positions), 0.5), np.full(len(pairs), 0.5)
    for _ in range(500):
        t, g = theta[pos_ix], gamma[pair_ix]
        nothing = np.maximum(1.0 - t * g, 1e-12)
        examined = clicks + unclicked * t * (1.0 - g) / nothing
        attracted = clicks + unclicked * (1.0 - t) * g / nothing
        new_theta = np.bincount(pos_ix, examined, len(positions)) / shown_by_pos
        new_gamma = np.bincount(pair_ix, attracted, len(pairs)) / shown_by_pair
        change = max(np.abs(new_theta - theta).max(), np.abs(new_gamma - gamma).max())
        theta, gamma = new_theta, new_gamma
        if change < 1e-7:
            break
    scale = theta[positions[min(positions)]]
    attractiveness = {
        pair: float(v) for pair, v in zip(pairs, np.clip(gamma * scale, 0, 1), strict=True)
    }
    counts: dict = {}
    for query, product, _, n, c in cells:
        row = counts.setdefault((query, product), [0, 0, 0, 0, 0])
        row[0] += n
        row[1] += c
    for query, product, carts, purchases in e.engagement_counts(since=since):
        row = counts.setdefault((query, product), [0, 0, 0, 0, 0])
        row[2], row[3] = carts, purchases
    for query, product, linked in e.reformulation_clicks(since=since):
        counts.setdefault((query, product), [0, 0, 0, 0, 0])[4] = linked
    searches = e.query_search_counts(since=since)
    by_query: dict = {}
    for (query, product), (n, c, carts, purchases, linked) in sorted(counts.items()):
        gamma_qd = attractiveness.get((query, product), 0.0)
        entry = by_query.setdefault(query, j.QueryJudgments(query, searches.get(query, 0)))
        entry.products[product] = j.Judgment(
            query, product, n, c, carts, purchases, linked, gamma_qd,
            j.relevance_grade(
                attractiveness=gamma_qd, carts=carts, purchases=purchases, reformulated=linked
            ),
        )  # fmt: skip
    del settings
    return by_query


# --- one measurement, in a process of its own ---------------------------------------------------


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure(rows: int, way: str, traced: bool) -> dict:
    setup_django(database(rows))
    from datetime import timedelta

    from django.db import connection
    from django.utils import timezone

    from search.judgments import judgments_compute

    connection.creation.create_test_db(verbosity=0, keepdb=True, serialize=False)
    compute = judgments_compute if way == "new" else judgments_compute_rows
    since = timezone.now() - timedelta(days=91)
    before = rss_kib("VmRSS")
    if traced:
        tracemalloc.start()
    started = time.perf_counter()
    result = compute(since=since)
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] if traced else None
    pairs = sum(len(q.products) for q in result.values())
    graded = sum(1 for q in result.values() for jd in q.products.values() if jd.grade)
    return {
        "seconds": seconds,
        "rss_mib": (rss_kib("VmHWM") - before) / 1024,
        "traced_mib": peak / 2**20 if traced else None,
        "queries": len(result),
        "pairs": pairs,
        "graded": graded,
    }


def measured(rows: int, way: str, traced: bool) -> dict:
    command = [sys.executable, __file__, "--measure", way, "--rows", str(rows)]
    out = subprocess.run(command + (["--traced"] if traced else []), capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--baseline-rows", type=int, default=1_000_000)
    parser.add_argument("--fresh", action="store_true", help="rebuild the scratch databases")
    parser.add_argument("--no-traced", action="store_true", help="skip the tracemalloc pass")
    parser.add_argument("--measure", choices=["new", "old"], help=argparse.SUPPRESS)
    parser.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.rows[0], args.measure, args.traced)))
        return
    for rows in args.rows:
        fill_command = [sys.executable, __file__, "--fill", str(rows)] + (
            ["--fresh"] if args.fresh else []
        )
        subprocess.run(fill_command, check=True)
        ways = ["new"] + (["old"] if rows <= args.baseline_rows else [])
        figures = {}
        for way in ways:
            figures[way] = measured(rows, way, traced=False)
            if not args.no_traced:
                figures[way]["traced_mib"] = measured(rows, way, traced=True)["traced_mib"]
            f = figures[way]
            traced = f"{f['traced_mib']:7.0f}" if f["traced_mib"] is not None else "      -"
            print(
                f"{rows:>11,} rows  {way:>3}: {f['seconds']:7.1f} s  peak RSS +{f['rss_mib']:6.0f}"
                f" MiB  traced {traced} MiB  ({f['queries']:,} queries, {f['pairs']:,} pairs,"
                f" {f['graded']:,} graded)",
                flush=True,
            )
        if "old" in figures:
            new, old = figures["new"], figures["old"]
            same = (new["pairs"], new["graded"]) == (old["pairs"], old["graded"])
            rss = new["rss_mib"] / max(old["rss_mib"], 1)
            ratios = f"time {new['seconds'] / old['seconds']:.2f}x, RSS {rss:.2f}x"
            if new["traced_mib"] is not None:
                ratios += f", traced {new['traced_mib'] / old['traced_mib']:.2f}x"
            print(f"{rows:>11,} rows  new/old: {ratios}; same pairs and grades: {same}")


def fill_main(rows: int, fresh: bool) -> None:
    setup_django(database(rows))
    from django.db import connection

    connection.creation.create_test_db(verbosity=0, keepdb=not fresh, serialize=False)
    fill(rows)


if __name__ == "__main__":
    if "--fill" in sys.argv:
        fill_main(int(sys.argv[sys.argv.index("--fill") + 1]), "--fresh" in sys.argv)
    else:
        main()
