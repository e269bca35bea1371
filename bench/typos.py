"""Benchmark of typo tolerance (not a test): the edit-distance library, and search latency.

    .venv/bin/python bench/typos.py [--products 100000] [--typos 1000] [--search-products 20000]

1. The speller, on the vocabulary of 100k synthetic products (bench/suggest.py's titles,
   computed in memory: tens of thousands of words): rapidfuzz (what search.typos uses: a
   plain list, nothing to build) against symspellpy (a precomputed deletes index: very
   fast lookups, a build every time the vocabulary changes), on misspellings made by one
   random edit (two for words of 8+ letters) and on unknown words. Prints build time,
   p50/p99 per word, the ratio, and how often both pick the same correction.
2. Search latency with and without typo correction, in one run: `product_search_by_text`
   on bench/search.py's catalog (products with synthetic 512-d photo vectors, in its own
   scratch database), for queries with and without misspellings, query vectors cached.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop_search.settings.test")
from harness import bench_module, p50_p99  # noqa: E402 (after sys.path is set)

DATABASE = "bench_shop_search_typos"
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def misspell(word: str, rng: random.Random) -> str:
    """One random edit (two for 8+ letters): insert, delete, substitute or swap neighbours."""
    for _ in range(2 if len(word) >= 8 else 1):
        i = rng.randrange(len(word))
        edit = rng.choice("idst")
        if edit == "i":
            word = word[:i] + rng.choice(LETTERS) + word[i:]
        elif edit == "d" and len(word) > 4:
            word = word[:i] + word[i + 1 :]
        elif edit == "s":
            word = word[:i] + rng.choice(LETTERS) + word[i + 1 :]
        elif i + 1 < len(word):
            word = word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    return word


def vocabulary_counts(products: int) -> Counter:
    """Words of titles (English, Chinese), brands and categories, in products, in memory."""
    from catalog.demo_catalog import demo_products
    from catalog.text import text_words

    style_name = bench_module("suggest").style_name
    counts: Counter = Counter()
    for i, demo in enumerate(demo_products(products)):
        first, rest = demo.title.split(" ", 1)
        texts = [f"{first} {style_name(i)} {rest}", demo.title_zh, demo.brand, *demo.category]
        counts.update({w for text in texts for w in text_words(text)})
    return counts


def speller_bench(products: int, typos: int) -> None:
    from symspellpy import SymSpell, Verbosity

    from search.typos import Speller, max_edits

    started = time.perf_counter()
    counts = vocabulary_counts(products)
    print(
        f"vocabulary of {products:,} products: {len(counts):,} words "
        f"({time.perf_counter() - started:.0f} s to count)"
    )
    rng = random.Random(5)
    latin = sorted(w for w in counts if max_edits(w))
    queries = [misspell(rng.choice(latin), rng) for _ in range(typos)]
    queries += [
        "".join(rng.choice(LETTERS) for _ in range(rng.randint(4, 9))) for _ in range(typos // 4)
    ]
    queries = [q for q in queries if max_edits(q) and q not in counts]

    started = time.perf_counter()
    speller = Speller.from_counts(dict(counts))
    rapid_build = time.perf_counter() - started
    started = time.perf_counter()
    symspell = SymSpell(max_dictionary_edit_distance=2, prefix_length=7)
    for word in latin:
        symspell.create_dictionary_entry(word, counts[word])
    sym_build = time.perf_counter() - started

    def sym_correct(word: str) -> str | None:
        found = symspell.lookup(word, Verbosity.TOP, max_edit_distance=max_edits(word))
        return found[0].term if found else None

    rapid, sym, same, corrected = [], [], 0, 0
    for word in queries:
        t = time.perf_counter()
        a = speller.correct(word)
        rapid.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        b = sym_correct(word)
        sym.append((time.perf_counter() - t) * 1000)
        same += a == b
        corrected += a is not None
    (r50, r99), (s50, s99) = p50_p99(rapid), p50_p99(sym)
    print(f"{len(queries):,} misspelt or unknown words, {corrected / len(queries):.0%} corrected")
    for name, build, p50, p99 in (
        ("rapidfuzz (search.typos)", rapid_build, r50, r99),
        ("symspellpy", sym_build, s50, s99),
    ):
        print(
            f"  {name:25} build {build * 1000:8.1f} ms, per word p50 {p50:.3f} ms  p99 {p99:.3f} ms"
        )
    print(
        f"  per word symspellpy is {r50 / s50:.1f}x faster at p50; its build costs "
        f"{sym_build / max(r50, 1e-9) * 1000:,.0f} rapidfuzz lookups; same correction for "
        f"{same / len(queries):.1%} of words (ties of distance and frequency differ)"
    )


SEARCHES = [
    ("red dress", "red dres"),
    ("black leather shoes", "black leathr shoes"),
    ("striped cotton t-shirt", "stripped coton t-shirt"),
    ("wool scarf", "wol scraf"),
    ("blue denim trousers", "blue denin trousrs"),
    ("ceramic vase", "ceramik vase"),
    ("canvas backpack", "canvas backpak"),
    ("红色连衣裙", "红色连衣裙"),
    ("velvet cushion", "velvett cushon"),
    ("table lamp", "tabel lamp"),
]


def search_bench(products: int, rounds: int) -> None:
    from django.db import connection

    from catalog.models import Product
    from embeddings.models import EmbeddingSpace
    from search.models import ProductTerms
    from search.pipeline import product_search_by_text
    from search.query import query_analyse
    from search.selectors import text_vector
    from search.vocabulary import vocabulary_rebuild

    search_bench_module = bench_module("search")
    connection.creation.create_test_db(verbosity=0, keepdb=True, serialize=False)
    if Product.objects.count() != products:
        search_bench_module.load(products)
    if ProductTerms.objects.count() != products:
        started = time.perf_counter()
        vocabulary_rebuild(from_scratch=True)
        print(f"vocabulary rebuilt in {time.perf_counter() - started:.0f} s")
    space = EmbeddingSpace.objects.get(name=search_bench_module.SPACE)
    for pair in SEARCHES:
        for query in pair:
            text_vector(space, query)  # warm: the model loaded, query vectors cached
            for correct in (False, True):  # and the speller, jieba, the plans
                product_search_by_text(query=query, limit=20, correct=correct)
    timings: dict[tuple[str, bool], list[float]] = {}
    analysis = []
    for _ in range(rounds):
        for right, wrong in SEARCHES:
            for kind, query in (("typed right", right), ("misspelt", wrong)):
                for correct in (False, True):
                    t = time.perf_counter()
                    page = product_search_by_text(query=query, limit=20, correct=correct)
                    timings.setdefault((kind, correct), []).append((time.perf_counter() - t) * 1000)
                    assert page.count >= 0
            t = time.perf_counter()
            query_analyse(query=wrong)
            analysis.append((time.perf_counter() - t) * 1000)
    print(f"product_search_by_text on {products:,} products, {rounds} x {len(SEARCHES)} queries:")
    for kind in ("typed right", "misspelt"):
        off, on = p50_p99(timings[(kind, False)]), p50_p99(timings[(kind, True)])
        print(
            f"  {kind:11}: correction off p50 {off[0]:6.1f} ms p99 {off[1]:6.1f} ms | "
            f"on p50 {on[0]:6.1f} ms p99 {on[1]:6.1f} ms | ratio on/off p50 {on[0] / off[0]:.2f}x"
        )
    a50, a99 = p50_p99(analysis)
    print(
        f"  query analysis alone (known-word probes + speller): p50 {a50:.2f} ms  p99 {a99:.2f} ms"
    )
    for _, wrong in SEARCHES[:4]:
        fixed = product_search_by_text(query=wrong, limit=20)
        plain = product_search_by_text(query=wrong, limit=20, correct=False)
        print(
            f"  {wrong!r} -> {fixed.corrected_query!r}: {fixed.count} products "
            f"(uncorrected {plain.count})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=100_000, help="vocabulary size source")
    parser.add_argument("--typos", type=int, default=1000)
    parser.add_argument("--search-products", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--skip-speller", action="store_true", help="only the search latency")
    args = parser.parse_args()
    import django
    from django.conf import settings

    settings.DATABASES["default"]["TEST"] = {"NAME": DATABASE}
    django.setup()
    if not args.skip_speller:
        speller_bench(args.products, args.typos)
    search_bench(args.search_products, args.rounds)


if __name__ == "__main__":
    main()
