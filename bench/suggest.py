"""Benchmark of suggestions as you type (not a test): vocabulary build, latency, baseline.

    .venv/bin/python bench/suggest.py [--products 100000] [--prefixes 400] [--fresh]

Loads synthetic products into a scratch database on the embedded server: demo-catalog
titles (English and Chinese), brands and categories, English titles made distinct by a
made-up style name ("red Kalora striped linen t-shirt", one per three products), so there
are tens of thousands of title suggestions and words. Then prints:

- the time to rewrite catalog_product's generated `search_document` (what migration
  catalog 0006 does) for these products;
- `rebuild_vocabulary` from scratch: products per second, words and suggestions;
- the on-commit recount of 1 and of 500 changed products (what an edit or an import
  batch pays);
- p50/p99 of `suggestions_for_prefix` for prefixes a shopper types (every prefix of
  sample titles and popular queries, English and Chinese), against a naive baseline
  measured in the same run: the same matching as one statement over all suggestions
  (no prefix index, no top-k per word), and the ratio;
- GET /api/suggest/ through Django's test client.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop_search.settings.test")
from harness import p50_p99, setup_django  # noqa: E402 (after sys.path is set)

DATABASE = "bench_shop_search_suggest"
SYLLABLES = ["ka", "lo", "mi", "ra", "ve", "tor", "sen", "li", "na", "quo", "bel", "dra", "fi"]


def style_name(index: int) -> str:
    """A made-up word per product group: "Avoreli"; about 30k distinct ones."""
    rng = random.Random(index // 3)
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))).capitalize()


def load(products: int) -> None:
    from django.db import connection, transaction

    from catalog.demo_catalog import demo_products
    from catalog.services import category_get_or_create_path

    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE catalog_product, search_suggestionword, search_suggestion, "
            "search_vocabularyword, search_productterms CASCADE"
        )
    categories: dict[tuple, int] = {}
    now = datetime.now(UTC)
    raw = connection.connection
    batch = 10_000
    for start in range(0, products, batch):
        demos = list(demo_products(min(batch, products - start), start=start))
        for demo in demos:
            if demo.category not in categories:
                categories[demo.category] = category_get_or_create_path(demo.category).pk
        with (
            transaction.atomic(),
            raw.cursor() as cursor,
            cursor.copy(
                "COPY catalog_product (sku, title, description, brand, category_id, price, "
                "currency, in_stock, attributes, created, updated) FROM STDIN"
            ) as copy,
        ):
            for i, demo in enumerate(demos, start=start):
                first, rest = demo.title.split(" ", 1)
                attributes = {"titles": {"zh": demo.title_zh}}
                copy.write_row(
                    (demo.sku, f"{first} {style_name(i)} {rest}", demo.description, demo.brand,
                     categories[demo.category], demo.price, demo.currency, demo.in_stock,
                     json.dumps(attributes, ensure_ascii=False), now, now)
                )  # fmt: skip
        print(f"  loaded {start + len(demos):,} products", flush=True)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE catalog_product")
    print(f"loaded {products:,} products in {time.perf_counter() - started:.0f} s")


def timed_ms(function) -> tuple[object, float]:
    started = time.perf_counter()
    result = function()
    return result, (time.perf_counter() - started) * 1000


NAIVE_SQL = """
    SELECT text, kind, count FROM search_suggestion s
    WHERE NOT EXISTS (
        SELECT 1 FROM unnest(%(words)s::text[]) t
        WHERE NOT EXISTS (SELECT 1 FROM unnest(s.words) w WHERE w LIKE t || '%%'))
    ORDER BY count DESC, key LIKE %(whole)s DESC, length(text), id
    LIMIT %(limit)s
"""


def naive_suggestions(prefix: str, limit: int) -> list:
    """The baseline: every suggestion checked against every typed word, then sorted."""
    from django.db import connection

    from search.suggest import typed_words
    from search.vocabulary import phrase_key

    words = typed_words(prefix)
    if not words:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            NAIVE_SQL, {"words": words, "whole": phrase_key(prefix) + "%", "limit": limit}
        )
        return cursor.fetchall()


def typed_prefixes(count: int) -> list[str]:
    """What shoppers type, keystroke by keystroke: prefixes of titles and short queries."""
    from search.models import Suggestion

    rng = random.Random(3)
    texts = list(
        Suggestion.objects.filter(kind__in=["title", "query", "brand"])
        .order_by("?")
        .values_list("text", flat=True)[: max(1, count // 6)]
    )
    prefixes = []
    for text in texts:
        stop = rng.randint(3, min(len(text), 14)) if len(text) > 3 else len(text)
        prefixes += [text[:n] for n in range(1, stop + 1) if text[:n].strip()]
    rng.shuffle(prefixes)
    return prefixes[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--prefixes", type=int, default=400)
    parser.add_argument("--fresh", action="store_true", help="reload the products")
    parser.add_argument("--skip-rewrite", action="store_true", help="no migration timing")
    args = parser.parse_args()
    setup_django(DATABASE)
    from django.conf import settings
    from django.db import connection
    from django.test import Client

    from catalog.models import Product
    from search.models import Suggestion, VocabularyWord
    from search.suggest import suggestions_for_prefix
    from search.vocabulary import vocabulary_rebuild, vocabulary_update

    connection.creation.create_test_db(verbosity=0, keepdb=True, serialize=False)
    if Product.objects.count() != args.products or args.fresh:
        load(args.products)

    # 1. The migration's table rewrite (catalog 0006): every document computed again,
    #    with 0003's functions (the baseline) and with 0006's.
    if not args.skip_rewrite:
        old = importlib.import_module("catalog.migrations.0003_product_search_document")
        new = importlib.import_module(
            "catalog.migrations.0006_search_document_fold_compounds_words"
        )
        seconds = {}
        for name, functions in (("0003", old.functions_sql), ("0006", new.functions_sql)):
            with connection.cursor() as cursor:
                cursor.execute(functions('"public"'))
                _, ms = timed_ms(lambda cursor=cursor: new.rewrite_documents(cursor, '"public"'))
            seconds[name] = ms / 1000
            print(
                f"rewrite of catalog_product's search_document with {name}'s functions: "
                f"{ms / 1000:.1f} s ({ms / 1000 * 100_000 / args.products:.1f} s per 100k)"
            )
        print(f"  ratio 0006 / 0003: {seconds['0006'] / seconds['0003']:.2f}x")

    # 2. The vocabulary from scratch.
    _, ms = timed_ms(lambda: vocabulary_rebuild(from_scratch=True))
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE search_vocabularyword, search_suggestion, search_suggestionword")
    print(
        f"rebuild_vocabulary --from-scratch: {ms / 1000:.1f} s "
        f"({args.products / (ms / 1000):,.0f} products/s): "
        f"{VocabularyWord.objects.count():,} words, {Suggestion.objects.count():,} suggestions"
    )

    # 3. What a change pays on commit: recount 1 and 500 edited products.
    titles = dict(Product.objects.order_by("pk").values_list("pk", "title")[:500])
    ids = list(titles)
    for size in (1, 500):
        times = []
        for round_ in range(5):
            Product.objects.filter(pk__in=ids[:size]).update(title=f"bench edit {round_}")
            _, ms = timed_ms(lambda size=size: vocabulary_update(product_ids=ids[:size]))
            times.append(ms)
        print(
            f"on-commit recount of {size:>3} edited products: p50 {statistics.median(times):.1f} ms"
        )
    for pk, title in titles.items():
        Product.objects.filter(pk=pk).update(title=title)
    vocabulary_update(product_ids=ids)

    # 4. Suggestions for what shoppers type, against the naive baseline, in one run.
    prefixes = typed_prefixes(args.prefixes) + ["红", "红色", "红色条", "连衣", "蓝色亚"]
    for prefix in prefixes[:20]:  # warm the caches of both
        suggestions_for_prefix(prefix=prefix, limit=8)
        naive_suggestions(prefix, 8)
    fast, naive, agree = [], [], 0
    for prefix in prefixes:
        hits, ms = timed_ms(lambda p=prefix: suggestions_for_prefix(prefix=p, limit=8))
        fast.append(ms)
        rows, ms = timed_ms(lambda p=prefix: naive_suggestions(p, 8))
        naive.append(ms)
        agree += [(h.text, h.kind, h.count) for h in hits] == [tuple(r) for r in rows]
    (p50, p99), (n50, n99) = p50_p99(fast), p50_p99(naive)
    print(f"suggestions_for_prefix ({len(prefixes)} prefixes): p50 {p50:.2f} ms  p99 {p99:.2f} ms")
    print(f"naive baseline (all suggestions):       p50 {n50:.2f} ms  p99 {n99:.2f} ms")
    print(f"ratio naive / indexed: p50 {n50 / p50:.1f}x, p99 {n99 / p99:.1f}x")
    print(f"same suggestions as the baseline for {agree / len(prefixes):.1%} of prefixes")
    for prefix in ("r", "red s", "红色条", "kest"):
        shown = [(h.text, h.kind, h.count) for h in suggestions_for_prefix(prefix=prefix, limit=4)]
        print(f"  {prefix!r}: {shown}")

    # 5. The endpoint, through Django's test client (not throttled here).
    settings.API_SUGGEST_ANON_RATE = ""
    client = Client()
    times = []
    for prefix in prefixes:
        response, ms = timed_ms(lambda p=prefix: client.get("/api/suggest/", {"q": p}))
        assert response.status_code == 200, response.content
        times.append(ms)
    p50, p99 = p50_p99(times)
    print(f"GET /api/suggest/: p50 {p50:.2f} ms  p99 {p99:.2f} ms")


if __name__ == "__main__":
    main()
