"""Benchmark (not a test): shopper events ingested per second through POST /api/events/.

    .venv/bin/python bench/events.py [--products 5000] [--searches 200] [--events 2000] [--fresh]

Loads demo-catalog products with synthetic image vectors into a scratch database
(bench/search.py's loader, its own database), logs `--searches` searches through
GET /api/search/ (20 results each), then posts `--events` events spread over them
(clicks, carts and purchases of products they showed, at their positions) through
Django's test client, one at a time, as a front end would. Baselines in the same run,
interleaved in rounds so that load on the machine hits all alike: a plain GET (/healthz:
one query), and GET /api/search/ (query vectors cached, as when warm). Also the same
events posted again (duplicates: stored once, answered 200) and the no-JavaScript click
link (/click/<search_id>/<product_id>/, a redirect). Prints requests/s, p50/p99 and the
SQL statements per request.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop_search.settings.test")
from harness import bench_module, percentiles, setup_django  # noqa: E402 (after sys.path is set)

DATABASE = "bench_shop_search_events"
QUERIES = ["red dress", "black leather shoes", "striped cotton t-shirt", "wool scarf", "blue denim"]
TYPES = ["click", "click", "click", "add_to_cart", "purchase"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=5000)
    parser.add_argument("--searches", type=int, default=200)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--fresh", action="store_true", help="rebuild the database")
    args = parser.parse_args()
    setup_django(DATABASE)
    from django.conf import settings
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from catalog.models import Product
    from embeddings.models import EmbeddingSpace
    from search.models import SearchEvent, SearchLog
    from search.selectors import text_vector

    bench_search = bench_module("search")
    connection.creation.create_test_db(verbosity=0, keepdb=not args.fresh, serialize=False)
    if Product.objects.count() != args.products or args.fresh:
        bench_search.load(args.products)
    settings.API_EVENTS_ANON_RATE = ""  # no throttle: the rate of the service is measured
    SearchEvent.objects.all().delete()
    SearchLog.objects.all().delete()
    space = EmbeddingSpace.objects.get(name=bench_search.SPACE)
    for text in QUERIES:
        text_vector(space, text)
    client = Client()

    def logged_searches(count: int) -> list[tuple[str, list[int]]]:
        found = []
        for i in range(count):
            params = {"q": QUERIES[i % len(QUERIES)], "limit": 20}
            body = client.get("/api/search/", params).json()
            if body["results"]:  # an event needs a product the search showed
                found.append((body["search_id"], [r["id"] for r in body["results"]]))
        if not found:
            sys.exit(f"none of {count} searches showed a product: load more (--products)")
        return found

    def spread(searches, count: int, types: list[str]) -> list[dict]:
        """`count` distinct events: a new product of each search, round after round."""
        events = []
        for i in range(count):
            search_id, shown = searches[i % len(searches)]
            position = (i // len(searches)) % len(shown)
            kind = types[(i // (len(searches) * len(shown))) % len(types)]
            events.append(
                {
                    "search_id": search_id,
                    "type": kind,
                    "product_id": shown[position],
                    "position": position + 1,
                }
            )
        return events

    searches = logged_searches(args.searches)
    events = spread(searches, args.events, TYPES)
    # The no-JS link's clicks are of searches of their own: each one is new too.
    clicks = spread(logged_searches(args.searches), args.events, ["click"])
    print(
        f"catalog: {args.products:,} products; {len(searches)} logged searches, "
        f"{len(events)} distinct events to post"
    )

    def post(event):
        return client.post("/api/events/", event, content_type="application/json")

    def click(event):
        # Followed from the shop's own page, as a browser says: the click is recorded.
        return client.get(
            f"/click/{event['search_id']}/{event['product_id']}/",
            headers={"Sec-Fetch-Site": "same-origin"},
        )

    # Each scenario runs one request per round, round after round: load hits all alike.
    scenarios = {
        "GET /healthz (plain GET)": (lambda i: client.get("/healthz"), 200),
        "GET /api/search/ (warm)": (
            lambda i: client.get("/api/search/", {"q": QUERIES[i % len(QUERIES)]}),
            200,
        ),
        "POST /api/events/ (new)": (lambda i: post(events[i]), 201),
        "POST /api/events/ (again)": (lambda i: post(events[i]), 200),
        "GET /click/ (no-JS link)": (lambda i: click(clicks[i]), 302),
    }
    times: dict[str, list[float]] = {name: [] for name in scenarios}
    # This process's CPU (Django's share, not Postgres'): less sensitive to a loaded machine.
    cpu_times: dict[str, list[float]] = {name: [] for name in scenarios}
    queries: dict[str, int] = {}
    for i in range(len(events)):
        for name, (request, status) in scenarios.items():
            if i == 0:
                with CaptureQueriesContext(connection) as captured:
                    response = request(i)
                queries[name] = len(captured)
            else:
                started, cpu = time.perf_counter(), time.process_time()
                response = request(i)
                times[name].append((time.perf_counter() - started) * 1000)
                cpu_times[name].append((time.process_time() - cpu) * 1000)
            assert response.status_code == status, (name, response.content)
    baseline = statistics.median(times["GET /healthz (plain GET)"])
    for name, milliseconds in times.items():
        p50 = statistics.median(milliseconds)
        print(
            f"{name:28} {1000 / p50:7.0f} req/s   {percentiles(milliseconds, digits=2)}   "
            f"{queries[name]} SQL   {p50 / baseline:5.2f}x the plain GET's time   "
            f"CPU p50 {statistics.median(cpu_times[name]):5.2f} ms"
        )
    stored = SearchEvent.objects.count()
    print(
        f"events stored: {stored:,} ({len(events):,} posted twice each, "
        f"{len(clicks):,} clicks through the link)"
    )


if __name__ == "__main__":
    main()
