"""Benchmark (not a test): search latency with and without synonyms and merchandising rules.

    .venv/bin/python bench/merchandising.py [--products 20000] [--rounds 15] [--fresh]

Loads demo-catalog products with synthetic 512-d image vectors into a scratch database
(bench/search.py's loader, its own database), then adds 2,000 synonym sets and 2,000
rules that match no benchmark query, plus, for each benchmark query, synonym sets for its
words and a rule that pins three products, hides two, boosts a brand and buries
out-of-stock products. Every scenario runs the same queries (vectors cached, as when
warm), interleaved round by round so that load on the machine hits them alike; the
baseline is the same search with every set and rule disabled (the lookups still run and
find nothing). Prints p50/p99 per scenario and its p50 as a ratio of the baseline's, with
the median CPU time of this process (Python's share, less sensitive to a loaded machine)
and the SQL statements per search (each a round trip to Postgres).
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
from harness import bench_module, percentile, setup_django  # noqa: E402 (after sys.path is set)

DATABASE = "bench_shop_search_merchandising"
QUERIES = [
    "blue bag",
    "red dress",
    "black leather shoes",
    "striped t-shirt",
    "wool scarf",
    "ceramic mug",
    "navy checked coat",
    "红色连衣裙",
]
# Synonyms for the queries' words: (root or "", terms).
SYNONYMS = [
    ("bag", ["handbag", "backpack"]),
    ("", ["t-shirt", "tee"]),
    ("", ["dress", "frock"]),
    ("", ["scarf", "shawl"]),
    ("shoes", ["sneakers", "boots"]),
    ("", ["mug", "cup"]),
    ("", ["coat", "jacket"]),
    ("", ["连衣裙", "裙子"]),
]
RULE_WORDS = ["bag", "dress", "shoes", "t-shirt", "scarf", "mug", "coat", "连衣裙"]
FILLERS = 2000


def add_synonyms_and_rules() -> None:
    """The sets and rules the queries match, and FILLERS of each that they do not."""
    from catalog.models import Product
    from search.models import MerchandisingRule, SynonymSet
    from search.rules import merchandising_rule_create
    from search.synonyms import synonym_set_create

    SynonymSet.objects.all().delete()
    MerchandisingRule.objects.all().delete()
    for root, terms in SYNONYMS:
        synonym_set_create(root=root, terms=terms)
    SynonymSet.objects.bulk_create(
        SynonymSet(root="", terms=[f"filler{i}", f"other{i}"]) for i in range(FILLERS)
    )
    products = list(Product.objects.order_by("id").values_list("id", flat=True)[:5000])
    for n, word in enumerate(RULE_WORDS):
        chosen = Product.objects.filter(pk__in=products[n * 50 : n * 50 + 5])
        pins = [
            (product, position) for product, position in zip(chosen[:3], (1, 2, 5), strict=True)
        ]
        brand = (
            Product.objects.filter(title__icontains=word.split()[0])
            .values_list("brand", flat=True)
            .first()
            or "Northwind"
        )
        merchandising_rule_create(
            name=f"campaign {word}",
            query=word,
            pins=pins,
            hides=list(chosen[3:5]),
            boosts=[
                {"action": "boost", "kind": "brand", "brand": brand, "factor": 2},
                {"action": "bury", "kind": "out_of_stock", "factor": 4},
            ],
        )
    MerchandisingRule.objects.bulk_create(
        MerchandisingRule(
            name=f"filler {i}", query=f"filler{i} words", query_key=f"filler{i} words",
            query_words=[f"filler{i}", "words"],
        )
        for i in range(FILLERS)
    )  # fmt: skip


def set_enabled(*, synonyms: bool, rules: bool) -> None:
    from search.models import MerchandisingRule, SynonymSet

    SynonymSet.objects.update(enabled=synonyms)
    MerchandisingRule.objects.update(enabled=rules)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--fresh", action="store_true", help="rebuild the database")
    args = parser.parse_args()
    setup_django(DATABASE)
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from catalog.models import Product
    from embeddings.models import EmbeddingSpace
    from search.filters import SearchFilters
    from search.pipeline import product_search_by_text, rank, text_query_prepare
    from search.rules import NO_RULES
    from search.selectors import search_page, text_vector
    from search.sorting import Sort
    from search.synonyms import synonyms_expand

    bench = bench_module("search")
    connection.creation.create_test_db(
        verbosity=0, autoclobber=True, keepdb=not args.fresh, serialize=False
    )
    if Product.objects.count() != args.products or args.fresh:
        bench.load(args.products)
    space = EmbeddingSpace.objects.get(name=bench.SPACE)
    add_synonyms_and_rules()
    for query in QUERIES:
        text_vector(space, query)  # warm: the text tower's time is not what is measured
    client = Client()

    def ranking_only(query):
        """The search without the synonym and rule lookups: what it cost before them."""
        prepared = text_query_prepare(query=query, filters=SearchFilters())
        ranked = rank(prepared, space)
        return search_page(space=space, ranked=ranked, limit=24, offset=0, rules=NO_RULES)

    def api(query, **extra):
        response = client.get("/api/search/", {"q": query, "limit": 24, **extra})
        assert response.status_code == 200, response.content
        return response

    scenarios = {
        "baseline: sets and rules disabled": ((False, False), lambda q: search(q)),
        "ranking only, no lookups": ((False, False), ranking_only),
        "synonyms": ((True, False), lambda q: search(q)),
        "rules": ((False, True), lambda q: search(q)),
        "synonyms + rules": ((True, True), lambda q: search(q)),
        "synonyms + rules, sort=price_asc": ((True, True), lambda q: search(q, Sort.PRICE_ASC)),
        "API, sets and rules disabled": ((False, False), lambda q: api(q)),
        "API, synonyms + rules": ((True, True), lambda q: api(q)),
    }

    def search(query, sort=Sort.RELEVANCE):
        return product_search_by_text(query=query, limit=24, sort=sort)

    times: dict[str, list[float]] = {name: [] for name in scenarios}
    cpu: dict[str, list[float]] = {name: [] for name in scenarios}
    queries: dict[str, float] = {}
    for round_number in range(args.rounds + 1):
        order = list(scenarios.items())
        if round_number % 2:
            order.reverse()
        for name, ((synonyms, rules), run) in order:
            set_enabled(synonyms=synonyms, rules=rules)
            if not round_number:  # round 0 warms up, and counts the statements
                with CaptureQueriesContext(connection) as captured:
                    for query in QUERIES:
                        run(query)
                queries[name] = len(captured.captured_queries) / len(QUERIES)
                continue
            for query in QUERIES:
                started, started_cpu = time.perf_counter(), time.process_time()
                run(query)
                times[name].append((time.perf_counter() - started) * 1000)
                cpu[name].append((time.process_time() - started_cpu) * 1000)

    set_enabled(synonyms=True, rules=True)
    page = search("blue bag")
    print(
        f"catalog: {args.products:,} products; {FILLERS + len(SYNONYMS):,} synonym sets, "
        f"{FILLERS + len(RULE_WORDS):,} rules; {len(QUERIES)} queries x {args.rounds} rounds"
    )
    print(
        f"check: 'blue bag' synonyms {page.synonyms}, first hits "
        f"{[(h.product.sku, h.matched) for h in page.results[:2]]}, "
        f"synonym lookup groups {synonyms_expand(query='striped t-shirt').groups}"
    )
    baseline = statistics.median(times["baseline: sets and rules disabled"])
    api_baseline = statistics.median(times["API, sets and rules disabled"])
    for name, values in times.items():
        p50 = statistics.median(values)
        against = api_baseline if name.startswith("API") else baseline
        print(
            f"  {name:36} p50 {p50:6.1f} ms   p99 {percentile(values, 0.99):6.1f} ms   "
            f"{p50 / against:5.2f}x baseline   "
            f"(this process's CPU {statistics.median(cpu[name]):5.1f} ms, "
            f"{queries[name]:.0f} statements)"
        )


if __name__ == "__main__":
    main()
