"""Benchmark of the learned ranker (not a test): what re-ranking and feature logging cost
per search, in one run.

    .venv/bin/python bench/ranker.py [--products 100000] [--queries 200]

On bench/search.py's catalog (demo products with synthetic 512-d photo vectors, loaded into
this bench's own scratch database and kept for the next run):
1. GET /api/search/ with a live ranker and with SEARCH_RANKER_ENABLED off, alternating
   query by query (which goes first alternates too): p50/p99 each and the median paired
   difference. The ranker is LightGBM LambdaMART of the size train_ranker makes (150 trees
   of 15 leaves), trained here on random features: its cost, not its quality, is measured.
2. Feature logging: computing the window's features (search.features) alone per search, and
   the search log's INSERT with the shown products' features and without.
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
from harness import bench_module, percentiles, setup_django  # noqa: E402 (after sys.path)

DATABASE = "bench_shop_search_ranker"
QUERIES = ["dresses", "red dress", "blue linen shirt", "mugs", "leather bag", "wool coat"]


def timed(function):
    started = time.perf_counter()
    result = function()
    return result, (time.perf_counter() - started) * 1000


def live_ranker_made():
    """A live ranker of train_ranker's size, trained on random features."""
    import lightgbm
    import numpy as np

    from search.features import FEATURES
    from search.models import Ranker
    from search.ranker import ranker_activate
    from search.ranker_training import PARAMS, ROUNDS

    rng = np.random.default_rng(0)
    groups = [20] * 200
    features = rng.standard_normal((sum(groups), len(FEATURES))).astype(np.float32)
    labels = rng.integers(0, 4, sum(groups))
    booster = lightgbm.train(
        PARAMS,
        lightgbm.Dataset(features, label=labels, group=groups, feature_name=list(FEATURES)),
        num_boost_round=ROUNDS,
    )
    Ranker.objects.filter(name="bench").delete()
    ranker = Ranker.objects.create(
        name="bench", model_text=booster.model_to_string(), features=list(FEATURES)
    )
    return ranker_activate(ranker=ranker)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--fresh", action="store_true", help="rebuild the database")
    args = parser.parse_args()
    setup_django(DATABASE, SEARCH_RANKER_REFRESH_SECONDS=3600.0)
    from django.conf import settings
    from django.db import connection
    from django.test import Client

    from catalog.models import Product
    from embeddings.models import EmbeddingSpace
    from search.features import features_attached
    from search.filters import SearchFilters
    from search.pipeline import cut_off, fuse, text_query_prepare
    from search.ranker import ranker_live, ranker_rerank
    from search.retrieval import retrieve
    from search.searchlog import search_log_record
    from search.selectors import text_vector

    search = bench_module("search")
    connection.creation.create_test_db(verbosity=0, keepdb=not args.fresh, serialize=False)
    if Product.objects.count() != args.products or args.fresh:
        search.load(args.products)
    space = EmbeddingSpace.objects.get(name=search.SPACE)
    ranker = live_ranker_made()
    print(
        f"catalog: {args.products:,} products; ranker window {settings.SEARCH_RANKER_WINDOW}, "
        f"result window {settings.SEARCH_MAX_RESULTS}; ranker {ranker.name}: "
        f"{len(ranker.model_text) // 1024} KiB of model text"
    )
    client = Client()
    for text in QUERIES:
        text_vector(space, text)
        client.get("/api/search/", {"q": text})  # warm: model loaded, vectors cached

    # 1. Re-ranking on and off.
    times: dict[bool, list[float]] = {True: [], False: []}
    for i in range(args.queries):
        params = {"q": QUERIES[i % len(QUERIES)]}
        for enabled in (True, False) if i % 2 else (False, True):
            settings.SEARCH_RANKER_ENABLED = enabled
            response, ms = timed(lambda params=params: client.get("/api/search/", params))
            assert response.status_code == 200, response.content
            times[enabled].append(ms)
    settings.SEARCH_RANKER_ENABLED = True
    on, off = statistics.median(times[True]), statistics.median(times[False])
    paired = statistics.median(a - b for a, b in zip(times[True], times[False], strict=True))
    print(
        f"GET /api/search/  re-ranking off: {percentiles(times[False])}   "
        f"on: {percentiles(times[True])}   p50 {on - off:+.2f} ms ({on / off:.3f}x), "
        f"median paired difference {paired:+.2f} ms"
    )

    # 2. Feature logging: the window's features, then the INSERT with and without them.
    feature_ms, rows_seen, rerank_ms = [], [], []
    live = ranker_live()
    for i in range(args.queries):
        prepared = text_query_prepare(query=QUERIES[i % len(QUERIES)], filters=SearchFilters())
        rows = cut_off(
            fuse(
                retrieve(
                    space=space,
                    vector=text_vector(space, prepared.meaning),
                    filters=prepared.filters,
                    match=prepared.plan.match,
                )
            ),
            floor=-1.0,
        )
        attached, ms = timed(
            lambda rows=rows, prepared=prepared: features_attached(rows, prepared.features)
        )
        feature_ms.append(ms)
        rows_seen.append(len(rows))
        _, ms = timed(lambda attached=attached: ranker_rerank(attached, live))
        rerank_ms.append(ms)
    print(
        f"features of the window ({statistics.median(rows_seen):.0f} rows): "
        f"{percentiles(feature_ms, 2)}   re-ranking its first {settings.SEARCH_RANKER_WINDOW} "
        f"alone: {percentiles(rerank_ms, 2)}"
    )
    shown = list(Product.objects.values_list("pk", flat=True)[:20])
    features = features_attached(rows[:20], prepared.features)
    flat = [value for row in features for value in row.features]
    inserts: dict[bool, list[float]] = {True: [], False: []}
    for i in range(args.queries):
        for with_features in (True, False) if i % 2 else (False, True):
            _, ms = timed(
                lambda with_features=with_features: search_log_record(
                    kind="text",
                    channel="api",
                    space=space,
                    product_ids=shown,
                    result_count=len(shown),
                    query="red dress",
                    session="bench-session",
                    features=flat if with_features else (),
                )
            )
            inserts[with_features].append(ms)
    print(
        f"search log INSERT ({len(shown)} products)  without features: "
        f"{percentiles(inserts[False], 2)}   with {len(flat)} float4: "
        f"{percentiles(inserts[True], 2)}"
    )
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT avg(pg_column_size(features)) FROM search_searchlog "
            "WHERE cardinality(features) > 0"
        )
        (size,) = cursor.fetchone()
    print(f"features column: {float(size or 0):.0f} bytes a logged search on disk (TOAST included)")


if __name__ == "__main__":
    main()
