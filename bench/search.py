"""Benchmark of search (not a test): latency of the search SQL and API, recall of HNSW.

    .venv/bin/python bench/search.py [--products 100000] [--queries 200] [--fresh]
        [--filter-queries N] [--maintenance-work-mem 1GB] [--build-workers 2]
        [--load-only] [--resume]

Loads demo-catalog products (titles, brands, categories, Chinese titles; no image files)
with 1-3 images each into a scratch database on the embedded server, with COPY in
batches of 10,000, and synthetic 512-d image vectors clustered like CLIP's (category +
colour + pattern + material directions, a product's own offset, a small per-photo
offset). Then builds the HNSW index (its time, and its size below). The database is kept
between runs (`--fresh` rebuilds it; `--resume` loads on after a stopped load). Then
prints, per path, p50/p99 latency and recall@10 at product level against exact search
(the same SQL without the index):

- the vector search SQL, unfiltered, cold and warm, and exact search (the baseline);
- the whole hybrid SQL (vector + text + SKU, fused), with text queries;
- filters that keep about 1% and 10% of the catalog (a category, or a category and a
  brand, so far from most queries), each way: exact over the filtered rows (the
  reference), the planner's choice with 20,000 tuples (the code before vector_scan),
  pgvector's iterative index scan forced with 20,000 and with 40,000 tuples (and a larger
  scan memory), over-fetching the unfiltered HNSW window (ef_search 1000, then filter),
  and the code (search.retrieval.hybrid_search with vector_scan);
- GET /api/search/ through Django's test client (query vectors cached, as when warm);
- the overhead of the search log: GET /api/search/ and the shop page with logging on and
  off (SEARCH_LOG_ENABLED), alternating query by query in the same run, and the log's
  INSERT alone (`--only recording` runs just this part);
- the Postgres server's memory: RSS and PSS of this backend and of all its processes.

For a million products (1.9M vectors), give the server room to build: e.g.
`--maintenance-work-mem 4GB` (the graph then fits in memory) and `--build-workers 1` on
two cores; bench/README.md has what it measured.
"""

from __future__ import annotations

import argparse
import json
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
from harness import CpuClock, p50_p99, percentiles, setup_django  # noqa: E402 (after sys.path)

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


# --- loading ------------------------------------------------------------------------------


def directions(rng, names) -> dict[str, np.ndarray]:
    vectors = rng.standard_normal((len(names), DIM)).astype(np.float32)
    return dict(zip(names, vectors / np.linalg.norm(vectors, axis=1, keepdims=True), strict=True))


def one_colour(attributes: dict) -> dict:
    """The bench's products come in one colour (their photos lie near it): a demo product
    sold in several (its colour variants, which this catalog leaves out) keeps its first."""
    colour = attributes.get("colour")
    return {**attributes, "colour": colour[0]} if isinstance(colour, list) else attributes


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
        # A product sold in several colours lists them: its photos lie by the first.
        return sum(
            weight * table[value[0] if isinstance(value := attributes[name], list) else value]
            for name, (table, weight) in self.parts.items()
            if name in attributes
        )

    def query(self, rng) -> np.ndarray:
        """A text-like query: a category and a colour, and noise (queries are vaguer)."""
        picked = {name: rng.choice(list(table)) for name, (table, _) in self.parts.items()}
        del picked["material"]
        return unit(self.centre(picked) + 0.5 * unit(rng.standard_normal(DIM)))


def load(
    products: int,
    *,
    maintenance_work_mem: str = "1GB",
    build_workers: int = 2,
    resume: bool = False,
) -> None:
    """Load `products` (with `resume`, from those already there on), then build the HNSW."""
    from django.db import connection, transaction
    from pgvector import HalfVector
    from pgvector.psycopg import register_vector

    from catalog.demo_catalog import demo_products
    from catalog.models import Product
    from catalog.services import category_get_or_create_path
    from embeddings.encoder import ModelSpec
    from embeddings.models import EmbeddingSpace
    from embeddings.spaces import space_build_indexes, space_create

    started = time.perf_counter()
    first = Product.objects.count() if resume else 0
    if not resume:
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
    rng = np.random.default_rng(1 + first)
    now = datetime.now(UTC)
    raw = connection.connection
    register_vector(raw)
    batch = 10_000
    for start in range(first, products, batch):
        demos = list(demo_products(min(batch, products - start), start=start))
        for demo in demos:
            if demo.category not in categories:
                categories[demo.category] = category_get_or_create_path(
                    demo.category, names=[{"zh": zh} for zh in demo.attributes["category_path_zh"]]
                ).pk
        with transaction.atomic(), raw.cursor() as cursor:
            with cursor.copy(
                "COPY catalog_product (sku, title, description, brand, category_id, price, "
                "currency, in_stock, status, attributes, options, created, updated) FROM STDIN"
            ) as copy:
                for demo in demos:
                    attributes = {**one_colour(demo.attributes), "titles": {"zh": demo.title_zh}}
                    copy.write_row(
                        (demo.sku, demo.title, demo.description, demo.brand,
                         categories[demo.category], demo.price, demo.currency, demo.in_stock,
                         "active", _json(attributes), "[]", now, now)
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
                demo.sku: clusters.centre(one_colour(demo.attributes))
                + 0.6 * unit(rng.standard_normal(DIM))
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
    print(f"  rows loaded in {index_started - started:.0f} s; building HNSW", flush=True)
    with transaction.atomic(), connection.cursor() as cursor:
        # The build is fast while the graph fits in maintenance_work_mem, and much slower
        # once pgvector has to go on inserting into the on-disk index.
        cursor.execute(
            "SELECT set_config('maintenance_work_mem', %s, true)", [maintenance_work_mem]
        )
        cursor.execute(
            "SELECT set_config('max_parallel_maintenance_workers', %s, true)", [str(build_workers)]
        )
        space_build_indexes(space)
    built = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    print(
        f"loaded {products:,} products in {time.perf_counter() - started:.0f} s "
        f"(HNSW build {built - index_started:.0f} s, maintenance_work_mem "
        f"{maintenance_work_mem}, {build_workers} parallel workers)",
        flush=True,
    )


def _json(value) -> str:
    return json.dumps(value, ensure_ascii=False)


# --- measuring ----------------------------------------------------------------------------


def timed(function, repeat: int = 1):
    started = time.perf_counter()
    for _ in range(repeat):
        result = function()
    return result, (time.perf_counter() - started) * 1000 / repeat


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
    parser.add_argument(
        "--filter-queries", type=int, help="queries per filtered way and API path (--queries)"
    )
    parser.add_argument("--fresh", action="store_true", help="rebuild the database")
    parser.add_argument("--load-only", action="store_true", help="load and index, then stop")
    parser.add_argument(
        "--resume", action="store_true", help="load on from the products there, build the index"
    )
    parser.add_argument("--maintenance-work-mem", default="1GB", help="for the HNSW build")
    parser.add_argument("--build-workers", type=int, default=2, help="parallel HNSW build")
    parser.add_argument(
        "--only", choices=["recording"], help="measure only the search log's overhead"
    )
    parser.add_argument("--json", type=Path, help="also write every path's figures here")
    parser.add_argument(
        "--ways", action="store_true", help="every way of running a filter, not only the code's"
    )
    parser.add_argument(
        "--no-inprocess", action="store_true", help="skip the in-process HNSW (faiss) baseline"
    )
    args = parser.parse_args()
    setup_django(DATABASE)
    from django.conf import settings
    from django.db import connection

    from catalog.models import Product
    from embeddings.models import EmbeddingSpace
    from search.filters import SearchFilters
    from search.ranking import image_window

    # serialize=False: no copy of 100k products for TransactionTestCase rollbacks.
    connection.creation.create_test_db(
        verbosity=0, autoclobber=args.fresh, keepdb=not args.fresh, serialize=False
    )
    # --resume: load the rest, then build the index if it is missing (after a stopped load).
    if Product.objects.count() != args.products or args.fresh or args.resume:
        load(
            args.products,
            maintenance_work_mem=args.maintenance_work_mem,
            build_workers=args.build_workers,
            resume=args.resume,
        )
    if args.load_only:
        return
    space = EmbeddingSpace.objects.get(name=SPACE)
    images = space_images(space)
    window = image_window(settings.SEARCH_MAX_RESULTS)
    print(
        f"catalog: {args.products:,} products, {images:,} image vectors ({DIM}-d halfvec), "
        f"result window {settings.SEARCH_MAX_RESULTS} products (ef_search {window})"
    )
    if args.only == "recording":
        measure_recording(space, args.queries)
        return
    print_sizes(space)
    rng = np.random.default_rng(7)
    clusters = Clusters()
    queries = [clusters.query(rng) for _ in range(args.queries)]
    filter_queries = queries[: args.filter_queries]
    hnsw = {"hnsw.ef_search": str(window)}
    clock = CpuClock(connection)
    results: dict[str, object] = {"products": args.products, "vectors": images}

    # 1. The vector search SQL, unfiltered; exact search is the reference of recall.
    vector, exact_tops = measure_vector(space, queries, hnsw, clock)
    results["vector"] = vector

    # 2. The hybrid SQL (vector + text + SKU), as text search runs it.
    results["hybrid"] = measure_hybrid(space, queries, hnsw, clock)

    # 3. Filters: category subtrees that keep 0.1% to 50% of the catalog (they follow the
    # vectors' strongest direction: the hard case), a price band and stock, the code's way.
    total = Product.objects.count()
    filters = {f"filter_{label}": share_filter(share) for label, share in SHARES.items()}
    filters["filter_price_band"] = price_band_filter(total)
    kept_in_stock = Product.objects.filter(in_stock=True).count()
    filters["filter_in_stock"] = (SearchFilters(in_stock=True), kept_in_stock)
    for key, (path_filters, kept) in filters.items():
        print(f"{key}: {path_filters} keeps {kept:,} products ({kept / total:.2%})", flush=True)
        if args.ways:
            filtered_ways(space, path_filters, filter_queries, hnsw)
        results[key] = measure_filtered(space, path_filters, filter_queries, clock)
        results[key]["share"] = round(kept / total, 5)

    # 4. GET /api/search/, warm: the model loaded and the query vectors cached.
    api_filters, _ = filters["filter_10pct"]
    for key, extra in (("api", {}), ("api_filter_10pct", filter_params(api_filters))):
        results[key] = measure_api(space, extra, args.filter_queries or args.queries, clock)
    print_server_memory()

    # 5. The same vectors in an in-process HNSW (faiss), one thread, tuned to the same recall.
    if not args.no_inprocess:
        results["inprocess_hnsw"] = measure_inprocess_hnsw(
            space, queries, exact_tops, window, target=results["vector"]["recall_at_10"]
        )
    print_ratios(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")

    # 6. What recording every search costs.
    measure_recording(space, args.queries)


# The category filters of the --json keys: the share of the catalog each keeps.
SHARES = {"0_1pct": 0.001, "1pct": 0.01, "10pct": 0.10, "50pct": 0.50}


def path_figures(times: list[float], cpu: list[float], recalls: list[float] | None) -> dict:
    p50, p99 = p50_p99(times)
    return {
        "p50_ms": round(p50, 2),
        "p99_ms": round(p99, 2),
        # On a shared machine wall time grows with the load, CPU time does not.
        "cpu_p50_ms": round(statistics.median(cpu), 2),
        "recall_at_10": None if recalls is None else round(float(np.mean(recalls)), 4),
        "queries": len(times),
    }


def print_path(label: str, figures: dict) -> None:
    recall_text = (
        "" if figures["recall_at_10"] is None else f"   recall@10 {figures['recall_at_10']:.3f}"
    )
    print(
        f"{label:32} p50 {figures['p50_ms']:.1f} ms, p99 {figures['p99_ms']:.1f} ms, "
        f"CPU p50 {figures['cpu_p50_ms']:.1f} ms{recall_text}",
        flush=True,
    )


def measured(clock, function):
    """`function()`, its wall time and its CPU time (this process and the server's), in ms."""
    cpu_started = clock.start()
    result, ms = timed(function)
    return result, ms, clock.stop(cpu_started)


def measure_vector(space, queries, hnsw, clock) -> tuple[dict, list[list[int]]]:
    from search.filters import SearchFilters
    from search.retrieval import hybrid_search_params, hybrid_search_sql

    none = SearchFilters()
    sql = hybrid_search_sql(space, none, match=None)
    exact_sql = hybrid_search_sql(space, none, match=None, exact=True)
    params = [hybrid_search_params(space=space, vector=q, filters=none) for q in queries]
    # A first pass reads the index into shared buffers: what a freshly started server pays.
    cold = [timed(lambda p=p: run_sql(sql, p, settings=hnsw))[1] for p in params]
    print(f"vector SQL, first pass (cold): {percentiles(cold)}", flush=True)
    times, cpu, recalls, exact_times, exact_tops = [], [], [], [], []
    for p in params:
        rows, ms, cpu_ms = measured(clock, lambda p=p: run_sql(sql, p, settings=hnsw))
        exact, exact_ms = timed(lambda p=p: run_sql(exact_sql, p, settings={}))
        times.append(ms)
        cpu.append(cpu_ms)
        exact_times.append(exact_ms)
        exact_tops.append(top_products(exact))
        recalls.append(recall(top_products(rows), exact_tops[-1]))
    figures = path_figures(times, cpu, recalls)
    print_path("vector SQL, unfiltered", figures)
    print(
        f"  exact (no index):              {percentiles(exact_times)}   "
        f"{statistics.median(exact_times) / figures['p50_ms']:.0f}x the index's p50",
        flush=True,
    )
    return figures, exact_tops


def measure_hybrid(space, queries, hnsw, clock) -> dict:
    from search.filters import SearchFilters
    from search.retrieval import hybrid_search_params, hybrid_search_sql

    none = SearchFilters()
    times, cpu, recalls = [], [], []
    for i, query in enumerate(queries):
        match = text_match(TEXT_QUERIES[i % len(TEXT_QUERIES)])
        params = hybrid_search_params(space=space, vector=query, filters=none, match=match)
        sql = hybrid_search_sql(space, none, match=match)
        rows, ms, cpu_ms = measured(clock, lambda p=params, s=sql: run_sql(s, p, settings=hnsw))
        times.append(ms)
        cpu.append(cpu_ms)
        if i < RECALL_QUERIES:  # exact hybrid costs a full scan: a sample of the queries
            exact_sql = hybrid_search_sql(space, none, match=match, exact=True)
            exact = run_sql(exact_sql, params, settings={})
            recalls.append(recall(top_products(rows), top_products(exact)))
    figures = path_figures(times, cpu, recalls)
    print_path("hybrid SQL (text + vector)", figures)
    return figures


RECALL_QUERIES = 40


def measure_filtered(space, filters, queries, clock) -> dict:
    """The code's way (search.retrieval.hybrid_search: vector_scan's choice, its fallback),
    against the exact ranking of every image the filter keeps."""
    from search.retrieval import hybrid_search, hybrid_search_params, hybrid_search_sql

    exact_sql = hybrid_search_sql(space, filters, match=None, exact=True)
    times, cpu, recalls = [], [], []
    for query in queries:
        ranked, ms, cpu_ms = measured(
            clock, lambda q=query: hybrid_search(space=space, vector=q, filters=filters)
        )
        params = hybrid_search_params(space=space, vector=query, filters=filters)
        exact = run_sql(exact_sql, params, settings={})
        times.append(ms)
        cpu.append(cpu_ms)
        recalls.append(recall([r.product_id for r in ranked[:10]], top_products(exact)))
    figures = path_figures(times, cpu, recalls)
    print_path("  the code", figures)
    return figures


def measure_api(space, extra: dict, count: int, clock) -> dict:
    from django.test import Client

    from search.selectors import text_vector

    client = Client()
    for text in TEXT_QUERIES:
        text_vector(space, text)
    times, cpu = [], []
    for i in range(count):
        params = {"q": TEXT_QUERIES[i % len(TEXT_QUERIES)], **extra}
        response, ms, cpu_ms = measured(clock, lambda p=params: client.get("/api/search/", p))
        assert response.status_code == 200, response.content
        times.append(ms)
        cpu.append(cpu_ms)
    figures = path_figures(times, cpu, None)
    print_path(f"GET /api/search/ {extra or '(unfiltered)'}", figures)
    return figures


def print_ratios(results: dict) -> None:
    vector = results["vector"]["p50_ms"]
    print("ratios (p50):")
    for key, figures in results.items():
        if isinstance(figures, dict) and key.startswith("filter_"):
            print(f"  {key} / vector: {figures['p50_ms'] / vector:.2f}x")
    print(f"  hybrid / vector: {results['hybrid']['p50_ms'] / vector:.2f}x")
    print(f"  api / hybrid: {results['api']['p50_ms'] / results['hybrid']['p50_ms']:.2f}x")
    if "inprocess_hnsw" in results:
        print(f"  vector / inprocess_hnsw: {vector / results['inprocess_hnsw']['p50_ms']:.2f}x")


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


def text_match(text: str):
    """What the words of `text` must match, as a text search decides (search.matching)."""
    from search.filters import SearchFilters
    from search.pipeline import text_query_prepare

    return text_query_prepare(query=text, filters=SearchFilters()).plan.match


def space_images(space) -> int:
    from embeddings.models import ImageEmbedding

    return ImageEmbedding.objects.filter(space=space).count()


def share_filter(share: float):
    """The category subtree, (subtree, brand) pair, or for a half of the catalog the union
    of top-level subtrees, whose products are closest to `share`; and how many it keeps.

    Filters on category follow the vectors' strongest direction, so most queries (a random
    category and colour) look for products far from their own neighbourhood: the hard case.
    """
    from itertools import combinations

    from django.db.models import Count

    from catalog.models import Category, Product
    from catalog.selectors import category_subtree_ids
    from search.filters import SearchFilters

    total = Product.objects.count()
    per_category = dict(
        Product.objects.values_list("category_id")
        .annotate(n=Count("id"))
        .values_list("category_id", "n")
    )
    subtrees = {
        category.pk: tuple(category_subtree_ids(category=category))
        for category in Category.objects.all()
    }
    candidates = [
        (SearchFilters(category_ids=ids), sum(per_category.get(i, 0) for i in ids))
        for ids in subtrees.values()
    ]
    pairs = Product.objects.values("category_id", "brand").annotate(n=Count("id"))
    for row in pairs:
        ids = subtrees[row["category_id"]]
        candidates.append((SearchFilters(category_ids=ids, brand=row["brand"]), row["n"]))
    if share >= 0.3:  # no one department holds half the shop: several together
        tops = [c.pk for c in Category.objects.filter(parent=None)]
        for size in range(2, len(tops)):
            for chosen in combinations(tops, size):
                ids = tuple(sorted(i for top in chosen for i in subtrees[top]))
                kept = sum(per_category.get(i, 0) for i in ids)
                candidates.append((SearchFilters(category_ids=ids), kept))
    return min(candidates, key=lambda candidate: abs(candidate[1] - share * total))


def price_band_filter(total: int):
    """A price band in the middle of the catalog's prices (20 to 60), and how many it keeps."""
    from decimal import Decimal

    from catalog.models import Product
    from search.filters import SearchFilters

    low, high = Decimal(20), Decimal(60)
    kept = Product.objects.filter(price__gte=low, price__lte=high).count()
    return SearchFilters(min_price=low, max_price=high), kept


def measure_inprocess_hnsw(space, queries, exact_tops, window: int, *, target: float) -> dict:
    """The same image vectors in faiss's IndexHNSWFlat (m 16, ef_construction 64, as the
    SQL index), searched one query at a time on one thread for the same window of images,
    products ranked by their best image; ef_search raised until recall@10 reaches `target`
    (the SQL path's), then timed."""
    try:
        import faiss
    except ImportError:
        print("in-process HNSW: faiss-cpu is not installed (pip install -e '.[dev]')")
        return {}
    started = time.perf_counter()
    image_ids, product_ids, vectors = space_vectors(space)
    read = time.perf_counter()
    index = faiss.IndexHNSWFlat(vectors.shape[1], 16, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 64
    index.add(vectors)
    built = time.perf_counter()
    print(
        f"in-process HNSW (faiss {faiss.__version__}): {len(vectors):,} vectors read in "
        f"{read - started:.0f} s, built in {built - read:.0f} s",
        flush=True,
    )
    faiss.omp_set_num_threads(1)
    query_matrix = np.asarray(queries, dtype=np.float32)

    def search(query: np.ndarray) -> list[int]:
        _, found = index.search(query[None, :], window)
        best: dict[int, None] = {}
        for position in found[0]:
            if position >= 0:
                best.setdefault(int(product_ids[position]), None)  # in distance order
        return list(best)[:10]

    for ef_search in (window, int(window * 1.5), window * 2, window * 3, window * 4):
        index.hnsw.efSearch = ef_search
        recalls = [recall(search(q), exact_tops[i]) for i, q in enumerate(query_matrix)]
        if np.mean(recalls) >= target:
            break
    times = [timed(lambda q=q: search(q))[1] for q in query_matrix]
    p50, p99 = p50_p99(times)
    figures = {
        "p50_ms": round(p50, 3),
        "p99_ms": round(p99, 3),
        "cpu_p50_ms": round(p50, 3),  # one thread, in this process: wall is CPU
        "recall_at_10": round(float(np.mean(recalls)), 4),
        "queries": len(times),
        "ef_search": ef_search,
        "build_s": round(built - read, 1),
    }
    print_path(f"in-process HNSW, ef_search {ef_search}", figures)
    return figures


def space_vectors(space) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every image vector of the space as float32, with its image and product ids: read by
    a binary COPY parsed in place (fixed-size rows), not 2 million Python objects."""
    import io

    from django.db import connection

    buffer = io.BytesIO()
    with connection.cursor() as cursor:
        sql = (
            "COPY (SELECT e.image_id, i.product_id, e.vector FROM embeddings_imageembedding e "
            "JOIN catalog_productimage i ON i.id = e.image_id "
            f"WHERE e.space_id = {int(space.pk)} AND e.vector IS NOT NULL ORDER BY e.image_id) "
            "TO STDOUT (FORMAT BINARY)"
        )
        with cursor.cursor.copy(sql) as copy:
            for block in copy:
                buffer.write(block)
    data = buffer.getvalue()
    row = np.dtype(
        [("fields", ">i2"), ("l1", ">i4"), ("image", ">i8"), ("l2", ">i4"), ("product", ">i8"),
         ("l3", ">i4"), ("dim", ">i2"), ("unused", ">i2"), ("vector", ">f2", (DIM,))]
    )  # fmt: skip
    header, trailer = 19, 2  # PGCOPY signature, flags, extension; the -1 that ends it
    rows = np.frombuffer(data[header : len(data) - trailer], dtype=row)
    assert (rows["dim"] == DIM).all(), "every vector of the bench space has DIM dimensions"
    vectors = rows["vector"].astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return rows["image"].copy(), rows["product"].copy(), vectors


def filtered_ways(space, filters, queries, hnsw) -> None:
    """A filter's latency and recall@10 the code's way (search.retrieval.vector_scan) and the
    others it chooses between; the exact ranking of the filtered rows is the reference."""
    from django.conf import settings

    from search.ranking import MAX_EF_SEARCH, image_window
    from search.retrieval import (
        hybrid_search,
        hybrid_search_params,
        hybrid_search_sql,
        vector_scan,
    )

    window = image_window(settings.SEARCH_MAX_RESULTS)
    scan = vector_scan(filters, image_window=window)
    print(
        f"  vector_scan: {'exact' if scan.exact else 'HNSW'}, "
        f"max_scan_tuples {scan.max_scan_tuples:,}"
    )
    sql = hybrid_search_sql(space, filters, match=None)
    exact_sql = hybrid_search_sql(space, filters, match=None, exact=True)
    iterative = {
        **hnsw,
        "hnsw.iterative_scan": "relaxed_order",
        "hnsw.max_scan_tuples": str(settings.SEARCH_MAX_SCAN_TUPLES),
    }
    scaled = {**iterative, "hnsw.max_scan_tuples": str(max(scan.max_scan_tuples, 40_000))}
    # No sort allowed: the rows must come in HNSW order, i.e. from the iterative scan.
    ways = {
        "exact over filtered rows": (exact_sql, {}),
        "planner's choice (before)": (sql, iterative),
        "iterative scan, 20k tuples": (sql, {**iterative, "enable_sort": "off"}),
        f"iterative, {int(scaled['hnsw.max_scan_tuples']) // 1000}k tuples": (
            sql,
            {**scaled, "enable_sort": "off"},
        ),
        "  same, scan_mem_multiplier 8": (
            sql,
            {**scaled, "enable_sort": "off", "hnsw.scan_mem_multiplier": "8"},
        ),
        "over-fetch 1000, then filter": (
            overfetch_sql(space, filters),
            {"hnsw.ef_search": str(MAX_EF_SEARCH)},
        ),
    }
    exact_tops: dict[int, list[int]] = {}
    for name, (way_sql, way_settings) in ways.items():
        times, recalls, returned = [], [], []
        for i, query in enumerate(queries):
            params = hybrid_search_params(space=space, vector=query, filters=filters)
            rows, ms = timed(lambda s=way_sql, p=params, w=way_settings: run_sql(s, p, settings=w))
            if i not in exact_tops:  # the first way is the exact one
                exact_tops[i] = top_products(rows)
            times.append(ms)
            # Rows with a similarity are the vector window's (over-fetch's rows all are).
            returned.append(sum(1 for row in rows if len(row) == 2 or row[2] is not None))
            recalls.append(recall(top_products(rows), exact_tops[i]))
        print(
            f"  {name:31}{percentiles(times)}   recall@10 {np.mean(recalls):.3f}   "
            f"vector window: min {min(returned)}, mean {np.mean(returned):.0f} of "
            f"{settings.SEARCH_MAX_RESULTS} products",
            flush=True,
        )
    # The code: vector_scan's bounded count, then its way (and its exact fallback).
    times, recalls = [], []
    for i, query in enumerate(queries):
        ranked, ms = timed(lambda q=query: hybrid_search(space=space, vector=q, filters=filters))
        times.append(ms)
        recalls.append(recall([r.product_id for r in ranked[:10]], exact_tops[i]))
    print(
        f"  {'the code (vector_scan)':31}{percentiles(times)}   recall@10 {np.mean(recalls):.3f}",
        flush=True,
    )
    for name, (way_sql, way_settings) in ways.items():
        print(f"  {name.strip()}: {plan_summary(way_sql, params, way_settings)}")


def print_sizes(space) -> None:
    from django.db import connection

    from embeddings.models import ImageEmbedding
    from embeddings.spaces import space_partition

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_size_pretty(pg_relation_size(%s)), "
            "pg_size_pretty(pg_total_relation_size(%s)), "
            "pg_size_pretty(pg_database_size(current_database())), "
            "current_setting('shared_buffers'), current_setting('work_mem')",
            [f"emb_image_hnsw_s{space.pk}", space_partition(ImageEmbedding, space)],
        )
        index, table, database, buffers, work_mem = cursor.fetchone()
    print(
        f"sizes: HNSW index {index}; the space's image vectors with their indexes {table}; "
        f"database {database} (shared_buffers {buffers}, work_mem {work_mem})"
    )


def print_server_memory() -> None:
    """RSS and PSS of the Postgres server: this session's backend, and all its processes.

    PSS divides each shared page (shared_buffers, the binary) among the processes mapping
    it, so the processes' PSS add up to what the server holds; RSS counts them in each.
    """
    import psutil
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    backend = psutil.Process(pid)
    server = [backend.parent(), *backend.parent().children()]
    mine = backend.memory_full_info()
    total_rss = total_pss = 0
    for process in server:
        try:
            info = process.memory_full_info()
        except psutil.NoSuchProcess:
            continue
        total_rss += info.rss
        total_pss += info.pss
    mib = 1024 * 1024
    print(
        f"Postgres memory: this backend RSS {mine.rss / mib:,.0f} MiB, PSS {mine.pss / mib:,.0f} "
        f"MiB, USS {mine.uss / mib:,.0f} MiB; the server's {len(server)} processes: "
        f"PSS {total_pss / mib:,.0f} MiB in all (RSS summed {total_rss / mib:,.0f} MiB)"
    )


def filter_params(filters) -> dict:
    from catalog.models import Category

    category = Category.objects.get(pk=filters.category_ids[0])
    return {"category": category.slug, **({"brand": filters.brand} if filters.brand else {})}


def plan_summary(sql: str, params: dict, settings: dict) -> str:
    rows = run_sql("EXPLAIN " + sql, params, settings=settings)
    plan = "\n".join(row[0] for row in rows)
    if "emb_image_hnsw" in plan:
        return "HNSW index scan" + (", iterative" if "relaxed" in str(settings) else "")
    return "exact: the filtered rows, sorted by distance"


if __name__ == "__main__":
    main()
