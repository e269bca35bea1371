"""Benchmark of search (not a test): latency of the search SQL and API, recall of HNSW.

    .venv/bin/python bench/search.py [--products 100000] [--queries 200] [--fresh]

Loads demo-catalog products (titles, brands, categories, Chinese titles; no image files)
with 1-3 images each into a scratch database on the embedded server, and synthetic
512-d image vectors clustered like CLIP's (category + colour + pattern + material
directions, a product's own offset, a small per-photo offset). The database is kept
between runs (`--fresh` rebuilds it). Then prints, per path, p50/p99 latency and
recall@10 at product level against exact search (the same SQL without the index):

- the vector search SQL, unfiltered: the goal is p50 < 10 ms at recall@10 >= 0.95;
- the whole hybrid SQL (vector + text + SKU, fused), with text queries;
- a filter that keeps about 1% of the catalog, three ways: pgvector's iterative index
  scan (what the code does), over-fetching the unfiltered HNSW window (ef_search 1000,
  then filter), and exact search over the filtered rows;
- GET /api/search/ through Django's test client (query vectors cached, as when warm);
- the overhead of the search log: GET /api/search/ and the shop page with logging on and
  off (SEARCH_LOG_ENABLED), alternating query by query in the same run, and the log's
  INSERT alone (`--only recording` runs just this part).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop_search.settings.test")
DATABASE = "bench_shop_search_search"
DIM = 512
SPACE = "bench-ViT-B-32@random-seed0"
TEXT_QUERIES = [
    "red dress",
    "black leather shoes",
    "striped cotton t-shirt",
    "红色连衣裙",
    "黑色皮鞋",
    "willow",
    "wool scarf",
    "blue denim",
    "DEMO-001234",
    "asdfgh",
]


def setup_django() -> None:
    import django
    from django.conf import settings

    settings.DATABASES["default"]["TEST"] = {"NAME": DATABASE}
    django.setup()


# --- loading ------------------------------------------------------------------------------


def directions(rng, names) -> dict[str, np.ndarray]:
    vectors = rng.standard_normal((len(names), DIM)).astype(np.float32)
    return dict(zip(names, vectors / np.linalg.norm(vectors, axis=1, keepdims=True), strict=True))


def unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


class Clusters:
    """Where a product's photos lie: the sum of its attributes' directions, plus its own."""

    def __init__(self, seed: int = 0):
        from catalog.demo_catalog import CATEGORIES, COLOURS, MATERIALS, PATTERNS

        rng = np.random.default_rng(seed)
        self.parts = {
            "category": (directions(rng, list(CATEGORIES)), 1.0),
            "colour": (directions(rng, list(COLOURS)), 0.9),
            "pattern": (directions(rng, list(PATTERNS)), 0.5),
            "material": (directions(rng, list(MATERIALS)), 0.35),
        }

    def centre(self, attributes: dict) -> np.ndarray:
        return sum(
            weight * table[attributes[name]]
            for name, (table, weight) in self.parts.items()
            if name in attributes
        )

    def query(self, rng) -> np.ndarray:
        """A text-like query: a category and a colour, and noise (queries are vaguer)."""
        picked = {name: rng.choice(list(table)) for name, (table, _) in self.parts.items()}
        del picked["material"]
        return unit(self.centre(picked) + 0.5 * unit(rng.standard_normal(DIM)))


def load(products: int) -> None:
    from django.db import connection, transaction
    from pgvector import HalfVector
    from pgvector.psycopg import register_vector

    from catalog.demo_catalog import demo_products
    from catalog.services import category_get_or_create_path
    from embeddings.encoder import ModelSpec
    from embeddings.models import EmbeddingSpace
    from embeddings.spaces import space_build_indexes, space_create

    started = time.perf_counter()
    EmbeddingSpace.objects.filter(status=EmbeddingSpace.Status.ACTIVE).update(
        status=EmbeddingSpace.Status.RETIRED
    )
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE catalog_product, catalog_productimage CASCADE")
    space = EmbeddingSpace.objects.filter(name=SPACE).first() or space_create(
        name=SPACE,
        spec=ModelSpec("ViT-B-32", seed=0),
        status=EmbeddingSpace.Status.ACTIVE,
        build_indexes=False,
    )
    EmbeddingSpace.objects.filter(pk=space.pk).update(status=EmbeddingSpace.Status.ACTIVE)
    categories: dict[tuple, int] = {}
    clusters = Clusters()
    rng = np.random.default_rng(1)
    now = datetime.now(UTC)
    raw = connection.connection
    register_vector(raw)
    batch = 10_000
    for start in range(0, products, batch):
        demos = list(demo_products(min(batch, products - start), start=start))
        for demo in demos:
            if demo.category not in categories:
                categories[demo.category] = category_get_or_create_path(demo.category).pk
        with transaction.atomic(), raw.cursor() as cursor:
            with cursor.copy(
                "COPY catalog_product (sku, title, description, brand, category_id, price, "
                "currency, in_stock, attributes, created, updated) FROM STDIN"
            ) as copy:
                for demo in demos:
                    attributes = {**demo.attributes, "titles": {"zh": demo.title_zh}}
                    copy.write_row(
                        (demo.sku, demo.title, demo.description, demo.brand,
                         categories[demo.category], demo.price, demo.currency, demo.in_stock,
                         _json(attributes), now, now)
                    )  # fmt: skip
            cursor.execute(
                "SELECT sku, id FROM catalog_product WHERE sku = ANY(%s)", [[d.sku for d in demos]]
            )
            ids = dict(cursor.fetchall())
            with cursor.copy(
                "COPY catalog_productimage (product_id, file, sha256, width, height, position) "
                "FROM STDIN"
            ) as copy:
                for demo in demos:
                    for position in range(demo.image_count):
                        name = f"{demo.sku}-{position}"
                        copy.write_row((ids[demo.sku], f"bench/{name}.jpg", name, 64, 64, position))
            cursor.execute(
                "SELECT i.id, p.sku FROM catalog_productimage i "
                "JOIN catalog_product p ON p.id = i.product_id WHERE p.sku = ANY(%s) ORDER BY i.id",
                [[d.sku for d in demos]],
            )
            images = cursor.fetchall()
            by_sku = {demo.sku: demo for demo in demos}
            own = {
                demo.sku: clusters.centre(demo.attributes) + 0.6 * unit(rng.standard_normal(DIM))
                for demo in demos
            }
            noise = unit(rng.standard_normal((len(images), DIM))) * 0.25
            with cursor.copy(
                "COPY embeddings_imageembedding (image_id, space_id, vector, source_sha256, "
                "error, updated) FROM STDIN WITH (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["int8", "int8", "halfvec", "varchar", "text", "timestamptz"])
                for (image_id, sku), offset in zip(images, noise, strict=True):
                    vector = unit(own[sku] + offset).astype(np.float32)
                    copy.write_row((image_id, space.pk, HalfVector(vector), sku, "", now))
            del by_sku
        print(f"  loaded {start + len(demos):,} products", flush=True)
    index_started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL maintenance_work_mem = '1GB'")
        cursor.execute("SET LOCAL max_parallel_maintenance_workers = 2")
        space_build_indexes(space)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    print(
        f"loaded {products:,} products in {time.perf_counter() - started:.0f} s "
        f"(HNSW build {time.perf_counter() - index_started:.0f} s)"
    )


def _json(value) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)


# --- measuring ----------------------------------------------------------------------------


def timed(function, repeat: int = 1):
    started = time.perf_counter()
    for _ in range(repeat):
        result = function()
    return result, (time.perf_counter() - started) * 1000 / repeat


def percentiles(milliseconds: list[float]) -> str:
    ordered = sorted(milliseconds)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return f"p50 {statistics.median(ordered):6.1f} ms   p99 {p99:6.1f} ms"


def run_sql(sql: str, params: dict, *, settings: dict[str, str]) -> list:
    from django.db import connection, transaction

    with transaction.atomic(), connection.cursor() as cursor:
        for name, value in settings.items():
            cursor.execute("SELECT set_config(%s, %s, true)", [name, value])
        cursor.execute(sql, params)
        return cursor.fetchall()


def top_products(rows, k: int = 10) -> list[int]:
    return [row[0] for row in rows[:k]]


def recall(found: list[int], exact: list[int]) -> float:
    return len(set(found) & set(exact)) / len(exact) if exact else 1.0


EXACT = {"enable_indexscan": "off", "enable_bitmapscan": "on"}


def overfetch_sql(space, filters) -> str:
    """The unfiltered HNSW window of 1000 images, filtered afterwards."""
    where, _ = filters.sql("p")
    vector = f"e.vector::{space.vector_type}"
    return f"""
        WITH hits AS MATERIALIZED (
            SELECT e.image_id, {vector} <=> %(query)s::{space.vector_type} AS distance
            FROM embeddings_imageembedding e
            WHERE e.space_id = {int(space.pk)} AND e.vector IS NOT NULL
            ORDER BY {vector} <=> %(query)s::{space.vector_type}
            LIMIT 1000
        )
        SELECT i.product_id, min(h.distance) FROM hits h
        JOIN catalog_productimage i ON i.id = h.image_id
        JOIN catalog_product p ON p.id = i.product_id
        WHERE true{where}
        GROUP BY i.product_id ORDER BY min(h.distance), i.product_id LIMIT %(window)s
    """


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--fresh", action="store_true", help="rebuild the database")
    parser.add_argument(
        "--only", choices=["recording"], help="measure only the search log's overhead"
    )
    args = parser.parse_args()
    setup_django()
    from django.conf import settings
    from django.db import connection
    from django.test import Client

    from catalog.models import Product
    from embeddings.models import EmbeddingSpace
    from search.ranking import (
        MAX_EF_SEARCH,
        SearchFilters,
        hybrid_search_params,
        hybrid_search_sql,
        image_window,
    )
    from search.selectors import text_vector

    # serialize=False: no copy of 100k products for TransactionTestCase rollbacks.
    connection.creation.create_test_db(verbosity=0, keepdb=not args.fresh, serialize=False)
    if Product.objects.count() != args.products or args.fresh:
        load(args.products)
    space = EmbeddingSpace.objects.get(name=SPACE)
    images = space_images(space)
    print(
        f"catalog: {args.products:,} products, {images:,} image vectors ({DIM}-d halfvec), "
        f"result window {settings.SEARCH_MAX_RESULTS} products "
        f"(ef_search {image_window(settings.SEARCH_MAX_RESULTS)})"
    )
    if args.only == "recording":
        measure_recording(space, args.queries)
        return
    rng = np.random.default_rng(7)
    clusters = Clusters()
    queries = [clusters.query(rng) for _ in range(args.queries)]
    hnsw = {"hnsw.ef_search": str(image_window(settings.SEARCH_MAX_RESULTS))}

    # 1. The vector search SQL, unfiltered.
    none = SearchFilters()
    sql = hybrid_search_sql(space, none, text=False)
    times, recalls = [], []
    for query in queries:
        params = hybrid_search_params(space=space, vector=query, filters=none)
        rows, ms = timed(lambda params=params: run_sql(sql, params, settings=hnsw))
        exact = run_sql(sql, params, settings=EXACT)
        times.append(ms)
        recalls.append(recall(top_products(rows), top_products(exact)))
    print(f"vector SQL, unfiltered:        {percentiles(times)}   recall@10 {np.mean(recalls):.3f}")

    # 2. The hybrid SQL (vector + text + SKU), as text search runs it.
    times = []
    for i, query in enumerate(queries):
        text = TEXT_QUERIES[i % len(TEXT_QUERIES)]
        params = hybrid_search_params(
            space=space, vector=query, filters=none, text=text, floor=-2.0
        )
        _, ms = timed(lambda params=params: run_sql(hybrid_sql(space), params, settings=hnsw))
        times.append(ms)
    print(f"hybrid SQL (text + vector):    {percentiles(times)}")

    # 3. A filter that keeps about 1% of the catalog, three ways.
    filters, kept = one_percent_filter()
    print(f"1% filter: {filters} keeps {kept:,} products ({kept / args.products:.2%})")
    sql = hybrid_search_sql(space, filters, text=False)
    iterative = {
        **hnsw,
        "hnsw.iterative_scan": "relaxed_order",
        "hnsw.max_scan_tuples": str(settings.SEARCH_MAX_SCAN_TUPLES),
    }
    overfetch = {"hnsw.ef_search": str(MAX_EF_SEARCH)}
    ways = {
        "planner's choice (the code)": (sql, iterative),
        # No sort allowed: the rows must come in HNSW order, i.e. from the iterative scan.
        "iterative index scan": (sql, {**iterative, "enable_sort": "off"}),
        "over-fetch 1000, then filter": (overfetch_sql(space, filters), overfetch),
        "exact over filtered rows": (sql, EXACT),
    }
    exact_tops = {}
    for name, (way_sql, way_settings) in ways.items():
        times, recalls, returned = [], [], []
        for i, query in enumerate(queries):
            params = hybrid_search_params(space=space, vector=query, filters=filters)
            rows, ms = timed(lambda s=way_sql, p=params, w=way_settings: run_sql(s, p, settings=w))
            if i not in exact_tops:
                exact_tops[i] = top_products(run_sql(sql, params, settings=EXACT))
            times.append(ms)
            returned.append(min(len(rows), 20))
            recalls.append(recall(top_products(rows), exact_tops[i]))
        print(
            f"  {name:29}{percentiles(times)}   recall@10 {np.mean(recalls):.3f}   "
            f"results for limit=20: min {min(returned)}, mean {np.mean(returned):.1f}"
        )
    for name, (way_sql, way_settings) in ways.items():
        print(f"  {name}: {plan_summary(way_sql, params, way_settings)}")

    # 4. GET /api/search/, warm: the model loaded and the query vectors cached.
    client = Client()
    for text in TEXT_QUERIES:
        text_vector(space, text)
    for extra, label in (({}, "unfiltered"), (filter_params(filters), "1% filter")):
        times = []
        for i in range(args.queries):
            params = {"q": TEXT_QUERIES[i % len(TEXT_QUERIES)], **extra}
            response, ms = timed(lambda params=params: client.get("/api/search/", params))
            assert response.status_code == 200, response.content
            times.append(ms)
        print(f"GET /api/search/ ({label}):{' ' * (12 - len(label))}{percentiles(times)}")

    # 5. What recording every search costs.
    measure_recording(space, args.queries)


def measure_recording(space, queries: int) -> None:
    """p50 of the same searches with the search log on and off, alternating query by query
    (which goes first alternates too), so that load on the machine hits both alike; then
    the log's INSERT alone."""
    from django.conf import settings
    from django.db import connection
    from django.test import Client

    from search.models import SearchLog
    from search.searchlog import search_log_record
    from search.selectors import text_vector

    client = Client()
    for text in TEXT_QUERIES:
        text_vector(space, text)
    paths = {"GET /api/search/": "/api/search/", "GET / (shop page)": "/"}
    for label, path in paths.items():
        times: dict[bool, list[float]] = {True: [], False: []}
        # This process's CPU time too (Django's share; Postgres' is not in it): far less
        # sensitive than wall time to a loaded machine.
        cpu: dict[bool, list[float]] = {True: [], False: []}
        for i in range(queries):
            params = {"q": TEXT_QUERIES[i % len(TEXT_QUERIES)]}
            for enabled in (True, False) if i % 2 else (False, True):
                settings.SEARCH_LOG_ENABLED = enabled
                started = time.process_time()
                response, ms = timed(lambda p=path, params=params: client.get(p, params))
                cpu[enabled].append((time.process_time() - started) * 1000)
                assert response.status_code == 200, response.content
                times[enabled].append(ms)
        settings.SEARCH_LOG_ENABLED = True
        on, off = statistics.median(times[True]), statistics.median(times[False])
        # The same query on and off, back to back: the pair's difference is the least noisy.
        paired = statistics.median(a - b for a, b in zip(times[True], times[False], strict=True))
        print(
            f"{label:20} logging off: {percentiles(times[False])}   "
            f"on: {percentiles(times[True])}   p50 {on - off:+.2f} ms ({on / off:.3f}x), "
            f"median paired difference {paired:+.2f} ms; this process's CPU p50 "
            f"{statistics.median(cpu[False]):.2f} -> {statistics.median(cpu[True]):.2f} ms"
        )
    shown = list(SearchLog.objects.values_list("product_ids", flat=True)[:1]) or [[]]
    started = time.process_time()
    inserts = [
        timed(
            lambda: search_log_record(
                kind="text",
                channel="api",
                space=space,
                product_ids=shown[0],
                result_count=len(shown[0]),
                query="red dress",
                filters={"brand": "Acme"},
                sort="relevance",
                session="bench-session",
            )
        )[1]
        for _ in range(queries)
    ]
    cpu_each = (time.process_time() - started) * 1000 / queries
    print(
        f"search_log_record alone ({len(shown[0])} products): {percentiles(inserts)}   "
        f"this process's CPU {cpu_each:.2f} ms each"
    )
    with connection.cursor() as cursor:
        started = time.perf_counter()
        for _ in range(queries):
            cursor.execute("SELECT 1")
        print(f"a round trip (SELECT 1): {(time.perf_counter() - started) * 1000 / queries:.2f} ms")


def hybrid_sql(space):
    from search.ranking import SearchFilters, hybrid_search_sql

    return hybrid_search_sql(space, SearchFilters(), text=True)


def space_images(space) -> int:
    from embeddings.models import ImageEmbedding

    return ImageEmbedding.objects.filter(space=space).count()


def one_percent_filter():
    """The (category, brand) pair whose products are closest to 1% of the catalog."""
    from django.db.models import Count

    from catalog.models import Category, Product
    from catalog.selectors import category_subtree_ids
    from search.ranking import SearchFilters

    total = Product.objects.count()
    counts = Product.objects.values("category_id", "brand").annotate(n=Count("id"))
    best = min(counts, key=lambda row: abs(row["n"] - total / 100))
    category = Category.objects.get(pk=best["category_id"])
    filters = SearchFilters(
        category_ids=tuple(category_subtree_ids(category=category)), brand=best["brand"]
    )
    return filters, best["n"]


def filter_params(filters) -> dict:
    from catalog.models import Category

    category = Category.objects.get(pk=filters.category_ids[0])
    return {"category": category.slug, "brand": filters.brand}


def plan_summary(sql: str, params: dict, settings: dict) -> str:
    rows = run_sql("EXPLAIN " + sql, params, settings=settings)
    plan = "\n".join(row[0] for row in rows)
    if "emb_image_hnsw" in plan:
        return "HNSW index scan" + (", iterative" if "relaxed" in str(settings) else "")
    return "exact: the filtered rows, sorted by distance"


if __name__ == "__main__":
    main()
