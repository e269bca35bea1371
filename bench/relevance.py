"""Benchmark of relevance work (not a test): what understanding and the matching strategy
cost per search, and what they give on the demo's judged query set, in one run.

    .venv/bin/python bench/relevance.py [--products 100000] [--rounds 5]

On bench/search.py's catalog (demo products with synthetic 512-d photo vectors, in its own
scratch database; loaded once, kept for the next run):
1. `product_search_by_text` with `understand` on and off for shopper queries (plurals,
   sentences with unknown words, price phrases, Chinese), query vectors cached, and the
   stages before retrieval alone (`text_query_prepare`: analysis, understanding and the
   matching probes), and the matching strategy's probes alone: p50/p99, on - off.
2. The judged set (search/data/judged/demo.tsv) scored on that catalog with understanding
   on and off: the synthetic vectors carry no meaning, so this is the words' share alone.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop_search.settings.test")
from harness import bench_module, p50_p99, setup_django  # noqa: E402 (after sys.path is set)

DATABASE = "bench_shop_search_relevance"
QUERIES = [
    "dresses",
    "mugs",
    "red dress",
    "cheap mug",
    "lamp for my desk",
    "i need a red dress for a wedding",
    "navy checked skirt under 50",
    "wool coat between 100 and 200",
    "低于50的半身裙",
    "便宜的马克杯",
    "Northwind dresses",
    "DEMO-001234",
]


def stage_timings(products: int, rounds: int) -> None:
    from embeddings.models import EmbeddingSpace
    from search.filters import SearchFilters
    from search.matching import match_plan
    from search.pipeline import product_search_by_text, text_query_prepare
    from search.selectors import text_vector

    space = EmbeddingSpace.objects.get(name=bench_module("search").SPACE)
    for query in QUERIES:  # warm: query vectors cached, speller and jieba loaded, plans
        text_vector(space, query)
        for understand in (False, True):
            product_search_by_text(query=query, limit=24, understand=understand)
    searches: dict[bool, list[float]] = {False: [], True: []}
    prepare: dict[bool, list[float]] = {False: [], True: []}
    matching: list[float] = []
    for _ in range(rounds):
        for query in QUERIES:
            prepared = text_query_prepare(query=query, filters=SearchFilters())
            started = time.perf_counter()
            match_plan(prepared.analysis, prepared.filters, understood=True)
            matching.append((time.perf_counter() - started) * 1000)
            for understand in (False, True):
                started = time.perf_counter()
                text_query_prepare(query=query, filters=SearchFilters(), understand=understand)
                prepare[understand].append((time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                product_search_by_text(query=query, limit=24, understand=understand)
                searches[understand].append((time.perf_counter() - started) * 1000)
    print(f"{products:,} products, {rounds} x {len(QUERIES)} queries (query vectors cached):")
    for name, timings in (("search", searches), ("stages 1-3", prepare)):
        off, on = p50_p99(timings[False]), p50_p99(timings[True])
        print(
            f"  {name:10}: understand off p50 {off[0]:6.1f} ms p99 {off[1]:6.1f} ms | "
            f"on p50 {on[0]:6.1f} ms p99 {on[1]:6.1f} ms | on - off p50 {on[0] - off[0]:+.1f} ms"
        )
    p50, p99 = p50_p99(matching)
    print(f"  the matching strategy alone (its EXISTS probes): p50 {p50:.2f} ms  p99 {p99:.2f} ms")


def judged_scores() -> None:
    from search.judged import judged_set_evaluate, judged_set_read

    queries = judged_set_read(ROOT / "search" / "data" / "judged" / "demo.tsv")
    for understand in (False, True):
        overall = judged_set_evaluate(queries, understand=understand).overall
        print(
            f"  judged set, understand {'on ' if understand else 'off'}: nDCG@10 "
            f"{overall.ndcg:.3f}  P@10 {overall.precision:.3f}  "
            f"zero-result {overall.zero_result_rate:.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    setup_django(DATABASE)
    from django.db import connection

    from catalog.models import Product
    from search.vocabulary import vocabulary_rebuild

    connection.creation.create_test_db(verbosity=0, keepdb=True, serialize=False)
    if Product.objects.count() != args.products:
        started = time.perf_counter()
        bench_module("search").load(args.products)
        vocabulary_rebuild(from_scratch=True)
        print(f"catalog loaded and its vocabulary counted in {time.perf_counter() - started:.0f} s")
    stage_timings(args.products, args.rounds)
    judged_scores()


if __name__ == "__main__":
    main()
