"""Benchmark of variants (not a test): search latency on products with five variants each
against the same products without variants, in one run (issue #19: within 1.3x).

    .venv/bin/python bench/variants.py [--products 100000] [--rounds 5] [--explain]

On bench/search.py's catalog (demo products with synthetic 512-d photo vectors, in its own
scratch database; loaded once, kept for the next run), with "Size" and "Colour" configured
as facets (Facet rows), the same shopper queries each way (`product_search_by_text`, query
vectors cached, warmed first):

- unfiltered;
- `attr.size=M` and in stock (held together on one variant);
- a price band (20 to 60);
- `GET /api/search/?q=...&attr.size=M&in_stock=true` through Django's test client.

Two catalogs in the same database server, both kept for the next run:

1. Without variants (`DATABASE`). A fair baseline needs the size filter to keep about as
   many products as it does with variants, and the same facets to count, so each product
   carries its sizes as an attribute (`"size": ["XS", "S", "M", "L", "XL"]`) next to its
   own `colour`: `attr.size=M` is then the product's own facet-key lookup, and the facets
   count the same names and values. Products have no options: no variant test, no best
   variant, no option facets.
2. With variants (`WITH_VARIANTS`): a file copy of the first, then five variants per
   product in one INSERT ... SELECT over generate_series: sizes XS to XL with the
   product's colour, priced at the product's price (L +5%, XL +10%), a fifth of the
   products on sale (compare-at price +25%), each variant's photo one of the product's
   photos in turn; an in-stock product has at most one size out of stock, an out-of-stock
   one has none in stock. So the summary (one bulk UPDATE, the same as
   `catalog.services.products_variants_summarise`; a sample is checked against the
   service) leaves each product's price and stock as they were: both catalogs filter the
   same prices and stock, and only the variants differ. VACUUM ANALYZE after.

Every search runs on both, one after the other, in alternating order (Django's default
connection swapped between them), so a machine whose load drifts loads both alike. Each
search's wall time and CPU time (harness.CpuClock: this process and the server's
processes; it hardly grows with other work on the machine) are recorded.

Prints each path's p50/p99 wall and p50 CPU time without and with variants, the ratios,
and the overall p50 ratios against the 1.3x target; then each stage of a search without
and with variants in CPU time (the prepared query and retrieval, with its variant test;
`best_variants`; `attribute_facets`), and (`--explain`) the plans of a filtered search's
statements.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop_search.settings.test")
from harness import CpuClock, bench_module, p50_p99, setup_django  # noqa: E402 (after sys.path is set)

DATABASE = "bench_shop_search_variants"  # the products without variants
WITH_VARIANTS = f"{DATABASE}_with"  # a copy of it with five variants a product
TARGET = 1.3
SIZES = ["XS", "S", "M", "L", "XL"]
QUERIES = ["red dress", "dresses", "wool coat", "mug", "blue shirt under 50", "红色连衣裙"]
PRICE_BAND = (Decimal(20), Decimal(60))
API_PARAMS = {"attr.size": "M", "in_stock": "true"}

# Five variants per product: sizes XS-XL in the product's colour. Deterministic "random"
# choices from a hash of the product's id. Prices: the product's for XS-M, +5% for L, +10%
# for XL; on sale (compare-at +25%) for a fifth of the products. In stock: none of an
# out-of-stock product's sizes; of an in-stock product's, all but at most one (the size at
# hash % 7, when that is below 5: about 70% of products miss one size).
VARIANTS_INSERT = """
INSERT INTO catalog_productvariant (product_id, sku, options, price, compare_at_price, stock,
                                    in_stock, barcode, image_id, position, active, created,
                                    updated)
SELECT p.id, p.sku || '-' || s.size,
       jsonb_build_object('Size', s.size, 'Colour', initcap(p.attributes ->> 'colour')),
       round(p.price * s.factor, 2),
       CASE WHEN p.h %% 5 = 0 THEN round(p.price * s.factor * 1.25, 2) END,
       CASE WHEN p.in_stock AND p.h %% 7 <> s.n - 1 THEN 1 + (p.h + s.n) %% 40 ELSE 0 END,
       p.in_stock AND p.h %% 7 <> s.n - 1,
       '', i.ids[1 + (s.n - 1) %% cardinality(i.ids)], s.n - 1, true, now(), now()
FROM (SELECT id, sku, price, in_stock, attributes, abs(hashint4(id::int)::bigint) AS h
      FROM catalog_product) p
JOIN (SELECT product_id, array_agg(id ORDER BY position, id) AS ids
      FROM catalog_productimage GROUP BY product_id) i ON i.product_id = p.id
CROSS JOIN LATERAL (
    SELECT n, (%(sizes)s::text[])[n] AS size,
           CASE n WHEN 4 THEN 1.05 WHEN 5 THEN 1.10 ELSE 1 END AS factor
    FROM generate_series(1, 5) n) s
"""

# catalog.services.products_variants_summarise in one statement (its variant offers are
# then its own UPDATE), for products whose options are empty (all of them here): option
# names in the order the variants (by position, id) first have them, each name's values in
# the order its active variants have them; price the least of the sellable (active and in
# stock, else all active) variants, price_max the most of the active ones,
# compare_at_price the most of the sellable ones'.
SUMMARY_UPDATE = """
WITH v AS (
    SELECT v.*, row_number() OVER (PARTITION BY product_id ORDER BY position, id) AS rn
    FROM catalog_productvariant v
), pairs AS (
    SELECT v.product_id, v.rn, v.active, o.key, o.value, o.n
    FROM v, jsonb_each_text(v.options) WITH ORDINALITY o(key, value, n)
), names AS (
    SELECT product_id, key, min(rn * 1000 + n) AS first FROM pairs GROUP BY 1, 2
), option_values AS (
    SELECT product_id, key, jsonb_agg(value ORDER BY first) AS values_
    FROM (SELECT product_id, key, value, min(rn) AS first FROM pairs WHERE active
          GROUP BY 1, 2, 3) ordered
    GROUP BY 1, 2
), options AS (
    SELECT n.product_id,
           jsonb_agg(jsonb_build_object('name', n.key, 'values', o.values_) ORDER BY n.first)
               FILTER (WHERE o.values_ IS NOT NULL) AS options
    FROM names n LEFT JOIN option_values o USING (product_id, key)
    GROUP BY 1
), prices AS (
    SELECT product_id,
           bool_or(in_stock) FILTER (WHERE active) AS in_stock,
           max(price) FILTER (WHERE active) AS price_max,
           CASE WHEN bool_or(in_stock) FILTER (WHERE active)
                THEN min(price) FILTER (WHERE active AND in_stock)
                ELSE min(price) FILTER (WHERE active) END AS price,
           CASE WHEN bool_or(in_stock) FILTER (WHERE active)
                THEN max(compare_at_price) FILTER (WHERE active AND in_stock
                                                   AND compare_at_price <> 0)
                ELSE max(compare_at_price) FILTER (WHERE active AND compare_at_price <> 0)
           END AS compare_at_price
    FROM catalog_productvariant GROUP BY 1
)
UPDATE catalog_product p
SET options = coalesce(o.options, '[]'::jsonb), price = coalesce(s.price, p.price),
    price_max = s.price_max, compare_at_price = s.compare_at_price,
    in_stock = coalesce(s.in_stock, false)
FROM options o JOIN prices s USING (product_id)
WHERE p.id = o.product_id AND p.options = '[]'::jsonb
"""


def execute(sql: str, params=None) -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def vacuum_analyze() -> None:
    execute("VACUUM ANALYZE catalog_product")
    execute("VACUUM ANALYZE catalog_productvariant")


def catalog_prepare() -> None:
    """Sizes as attributes and the Size and Colour facets (both phases have them)."""
    from catalog.models import Facet

    for position, name in enumerate(("Size", "Colour")):
        Facet.objects.get_or_create(name=name, defaults={"position": position})
    changed = execute(
        "UPDATE catalog_product SET attributes = attributes || jsonb_build_object('size', "
        "to_jsonb(%s::text[])) WHERE NOT attributes ? 'size'",
        [SIZES],
    )
    if changed:
        print(f"  sizes set as attributes on {changed:,} products", flush=True)
        vacuum_analyze()


def variants_add() -> tuple[int, float]:
    """Five variants per product, summarised; (variants, seconds)."""
    from django.db import transaction

    from catalog.models import Product
    from catalog.services import products_variant_offers_update

    started = time.perf_counter()
    with transaction.atomic():
        created = execute(VARIANTS_INSERT, {"sizes": SIZES})
        inserted = time.perf_counter()
        summarised = execute(SUMMARY_UPDATE)
        products_variant_offers_update(Product.objects.values_list("id", flat=True))
    summarised_at = time.perf_counter()
    vacuum_analyze()
    print(
        f"  {created:,} variants inserted in {inserted - started:.0f} s, {summarised:,} "
        f"products summarised in {summarised_at - inserted:.0f} s, VACUUM ANALYZE "
        f"{time.perf_counter() - summarised_at:.0f} s",
        flush=True,
    )
    summary_check()
    return created, time.perf_counter() - started


def summary_check(sample: int = 500) -> None:
    """The service, run on a sample of the summarised products, finds nothing to change."""
    from catalog.models import Product
    from catalog.services import products_variants_summarise

    ids = list(Product.objects.order_by("?").values_list("id", flat=True)[:sample])
    changed = products_variants_summarise(ids)
    assert not changed, f"the bulk summary differs from the service's on {len(changed)} products"
    print(f"  summary checked: the service changes none of {len(ids)} sampled products")


def paths():
    from catalog.selectors import facet_value_keys
    from search.filters import AttributeFilter, SearchFilters

    size_m = AttributeFilter(name="size", keys=facet_value_keys("size", ["M"]), values=("M",))
    return {
        "unfiltered": SearchFilters(),
        "size M, in stock": SearchFilters(attributes=(size_m,), in_stock=True),
        "price 20-60": SearchFilters(min_price=PRICE_BAND[0], max_price=PRICE_BAND[1]),
    }


# --- the two catalogs, searched alternately ---------------------------------------------


def database_copy(source: str, target: str) -> None:
    """`target` as a file copy of `source` (no one may be connected to either)."""
    from django.db import connection, connections

    connections.close_all()
    with connection._nodb_cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{target}"')
        cursor.execute(f'CREATE DATABASE "{target}" TEMPLATE "{source}" STRATEGY FILE_COPY')


def databases(names: tuple[str, ...]) -> dict[str, object]:
    """A connection to each database, to be put in place as Django's default by `use`."""
    from django.db import connections

    default = connections["default"]
    return {
        name: default.__class__({**default.settings_dict, "NAME": name}, alias="default")
        for name in names
    }


def use(wrapper) -> None:
    from django.db import connections

    connections["default"] = wrapper


def alternately(phases: dict, round_: int, turn: int):
    """The phases in one order, then the other: neither is always measured first."""
    ordered = list(phases.items())
    return ordered if (round_ + turn) % 2 == 0 else ordered[::-1]


def measure(phases: dict, rounds: int, clock, *, api: bool = True) -> dict:
    """times[phase][path] = [(wall ms, cpu ms)] over `rounds` of QUERIES, the phases
    alternating search by search; the first round only warms."""
    from django.test import Client

    from search.pipeline import product_search_by_text

    client = Client()
    searches = {
        name: (lambda q, f=filters: product_search_by_text(query=q, filters=f, limit=24))
        for name, filters in paths().items()
    }
    if api:

        def get(query):
            response = client.get("/api/search/", {"q": query, **API_PARAMS})
            assert response.status_code == 200, response.content

        searches["GET /api/search/ size M, in stock"] = get
    times = {phase: {name: [] for name in searches} for phase in phases}
    turn = 0
    for round_ in range(rounds + 1):
        for query in QUERIES:
            for name, search in searches.items():
                turn += 1
                for phase, wrapper in alternately(phases, round_, turn):
                    use(wrapper)
                    wall, cpu = timed(lambda s=search, q=query: s(q), clock)
                    if round_:
                        times[phase][name].append((wall, cpu))
    return times


def timed(function, clock) -> tuple[float, float]:
    """Wall and CPU ms of one call."""
    cpu = clock.start()
    started = time.perf_counter()
    function()
    wall = (time.perf_counter() - started) * 1000
    return wall, clock.stop(cpu)


def counts(phases: dict) -> dict[str, dict[str, float]]:
    """Mean results per query on each path in each phase (the same work both ways?)."""
    from search.pipeline import product_search_by_text

    result = {}
    for phase, wrapper in phases.items():
        use(wrapper)
        result[phase] = {
            name: statistics.mean(
                product_search_by_text(query=q, filters=filters, limit=24).count for q in QUERIES
            )
            for name, filters in paths().items()
        }
    return result


def stages(phases: dict, rounds: int, clock) -> dict:
    """A search cut into its stages, CPU ms, the phases alternating: the prepared query
    and the ranking (retrieval, with the variant EXISTS when filtered), `best_variants` of
    a page (as the search calls it: only for products with options) and
    `attribute_facets` over the relevant window."""
    from embeddings.spaces import space_active
    from search.pipeline import rank, text_query_prepare
    from search.selectors import text_vector
    from search.variants import attribute_facets, best_variants, query_values

    times = {phase: {} for phase in phases}
    turn = 0
    for round_ in range(rounds + 1):
        for query in QUERIES:
            for name, filters in paths().items():
                turn += 1
                for phase, wrapper in alternately(phases, round_, turn):
                    use(wrapper)
                    space = space_active()
                    holder = {}

                    def ranked(q=query, f=filters, h=holder, s=space):
                        h["prepared"] = text_query_prepare(query=q, filters=f)
                        h["ranked"] = rank(h["prepared"], s)

                    _, ranking = timed(ranked, clock)
                    prepared = holder["prepared"]
                    relevant = [r.product_id for r in holder["ranked"] if r.relevant]
                    words = query_values([t.text for t in prepared.analysis.tokens])
                    vector = text_vector(space, prepared.meaning)
                    page = relevant[:24] if phase == "with" else []
                    _, best = timed(
                        lambda r=page, p=prepared, w=words, v=vector, s=space: best_variants(
                            r, filters=p.filters, words=w, looks_like=(s, v)
                        ),
                        clock,
                    )
                    _, facets = timed(lambda r=relevant: attribute_facets(r), clock)
                    if round_:
                        for stage, ms in (
                            ("prepare + rank", ranking),
                            ("best_variants (24)", best),
                            ("attribute_facets", facets),
                        ):
                            times[phase].setdefault(f"{name}: {stage}", []).append(ms)
    return times


# The statements of search.variants, by what they begin with.
VARIANT_STATEMENTS = {
    "best_variants": "SELECT DISTINCT ON (v.product_id) v.*",
    "attribute_facets": "WITH named AS (",
}


def explain(top: int = 2) -> None:
    """EXPLAIN ANALYZE of the slowest statements of one search ("dresses", size M in
    stock) and of search.variants' statements, as the search ran them."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from search.pipeline import product_search_by_text

    filters = paths()["size M, in stock"]
    with CaptureQueriesContext(connection) as captured:
        product_search_by_text(query="dresses", filters=filters, limit=24)
    ordered = sorted(captured.captured_queries, key=lambda q: -float(q["time"]))
    chosen = ordered[:top] + [
        q
        for q in ordered[top:]
        if any(" ".join(q["sql"].split()).startswith(s) for s in VARIANT_STATEMENTS.values())
    ]
    for query in chosen:
        print(f"--- {float(query['time']) * 1000:.1f} ms: {' '.join(query['sql'].split())[:160]}")
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + query["sql"])
            print("\n".join(row[0] for row in cursor.fetchall()))


def report(times: dict) -> dict[str, float]:
    """Each path's p50/p99 wall time and p50 CPU time without and with variants, the
    ratios, and the overall p50 ratios (all searches of all paths) against the target."""
    without, with_ = times["without"], times["with"]
    for name in without:
        b_wall, a_wall = [w for w, _ in without[name]], [w for w, _ in with_[name]]
        b_cpu, a_cpu = [c for _, c in without[name]], [c for _, c in with_[name]]
        (b50, b99), (a50, a99) = p50_p99(b_wall), p50_p99(a_wall)
        bc, ac = statistics.median(b_cpu), statistics.median(a_cpu)
        print(
            f"  {name:34} without p50 {b50:6.1f} p99 {b99:6.1f} cpu {bc:6.1f} ms | with p50 "
            f"{a50:6.1f} p99 {a99:6.1f} cpu {ac:6.1f} ms | ratio p50 {a50 / b50:.2f}x "
            f"p99 {a99 / b99:.2f}x cpu {ac / bc:.2f}x"
        )
    overall = {}
    for kind, index in (("wall", 0), ("cpu", 1)):
        pooled = {
            phase: [sample[index] for samples in by_path.values() for sample in samples]
            for phase, by_path in times.items()
        }
        overall[kind] = statistics.median(pooled["with"]) / statistics.median(pooled["without"])
        verdict = "within" if overall[kind] <= TARGET else "over"
        print(f"  overall p50 {kind} ratio {overall[kind]:.2f}x: {verdict} the {TARGET}x target")
    return overall


def execute_one(sql: str):
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchone()[0]


def rows_inline() -> None:
    """Every product row whole in its table, as catalog migration 0010 keeps new ones: rows
    written before it (a catalog loaded by an older version) may still have their search
    document in the TOAST table, which would make one catalog read more pages per row."""
    toasted = execute_one(
        "SELECT pg_relation_size(reltoastrelid) FROM pg_class WHERE relname = 'catalog_product'"
    )
    if toasted:
        started = time.perf_counter()
        execute("VACUUM (FULL, ANALYZE) catalog_product")
        print(f"  product rows rewritten whole in {time.perf_counter() - started:.0f} s")


def migrated(wrapper) -> set[tuple[str, str]]:
    """The migrations applied to `wrapper`'s database (Django's MigrationRecorder would
    ask the default connection: both connections are "default")."""
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT app, name FROM django_migrations")
        return set(cursor.fetchall())


def catalogs_ready(products: int) -> None:
    """The catalog without variants (DATABASE, loaded once) and its copy with five variants
    a product (WITH_VARIANTS), both kept for the next run."""
    from django.db import connection, connections

    from catalog.models import Product, ProductVariant
    from search.vocabulary import vocabulary_rebuild

    connection.creation.create_test_db(verbosity=0, keepdb=True, serialize=False)
    if Product.objects.count() != products:
        started = time.perf_counter()
        bench_module("search").load(products)
        vocabulary_rebuild(from_scratch=True)
        print(f"catalog loaded and its vocabulary counted in {time.perf_counter() - started:.0f} s")
    if ProductVariant.objects.exists():  # an earlier version of this bench added them here
        execute("DELETE FROM catalog_productvariant")
        execute(
            "UPDATE catalog_product SET options = '[]', price_max = NULL, "
            "compare_at_price = NULL WHERE options <> '[]' OR price_max IS NOT NULL"
        )
        vacuum_analyze()
    catalog_prepare()
    rows_inline()
    without, with_variants = connections["default"], databases((WITH_VARIANTS,))[WITH_VARIANTS]
    try:
        use(with_variants)
        # Stale when the code has migrations its copy lacks.
        ready = ProductVariant.objects.count() == len(SIZES) * products and migrated(
            with_variants
        ) == migrated(without)
    except Exception:  # noqa: BLE001 (no such database yet)
        ready = False
    finally:
        with_variants.close()
        use(without)
    if ready:
        use(with_variants)
        rows_inline()
        use(without)
        return
    started = time.perf_counter()
    database_copy(without.settings_dict["NAME"], WITH_VARIANTS)
    print(f"  copied to {WITH_VARIANTS} in {time.perf_counter() - started:.0f} s", flush=True)
    use(databases((WITH_VARIANTS,))[WITH_VARIANTS])
    variants, seconds = variants_add()
    print(f"  {variants:,} variants added and summarised in {seconds:.0f} s", flush=True)
    rows_inline()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--explain", action="store_true", help="print the filtered SQL's plan")
    parser.add_argument("--no-api", action="store_true", help="leave GET /api/search/ out")
    args = parser.parse_args()
    setup_django(DATABASE)
    from django.db import connection

    from embeddings.spaces import space_active
    from search.selectors import text_vector

    catalogs_ready(args.products)
    phases = databases((DATABASE, WITH_VARIANTS))
    phases = {"without": phases[DATABASE], "with": phases[WITH_VARIANTS]}
    use(phases["without"])
    clock = CpuClock(connection)
    space = space_active()
    for query in QUERIES:
        text_vector(space, query)

    print(f"{args.products:,} products, {args.rounds} x {len(QUERIES)} queries per path, "
          "searched without and with variants alternately:", flush=True)  # fmt: skip
    times = measure(phases, args.rounds, clock, api=not args.no_api)
    print("results per query, mean (without -> with variants):")
    counted = counts(phases)
    for name, count in counted["without"].items():
        print(f"  {name:20} {count:8.1f} -> {counted['with'][name]:8.1f}")
    print("latency:")
    report(times)
    print("stages (CPU ms, p50):")
    staged = stages(phases, args.rounds, clock)
    for name, ms in staged["with"].items():
        b50, a50 = statistics.median(staged["without"][name]), statistics.median(ms)
        print(f"  {name:44} without {b50:6.1f} ms | with {a50:6.1f} ms | {a50 - b50:+6.1f} ms")
    if args.explain:
        use(phases["with"])
        explain()


if __name__ == "__main__":
    main()
