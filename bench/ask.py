"""Benchmark (not a test): POST /api/ask/ latency, by product_id and with an uploaded photo.

    .venv/bin/python bench/ask.py [--products 400] [--rounds 60] [--fresh]

Loads the demo catalog (`demo_catalog_load`, photos embedded by the default space's real
shop-tiny encoder) into a scratch database, then asks through Django's test client, in
rounds so that load on the machine hits all alike: an attribute question about a product
(its stored photo vector: nothing is encoded), the same question with the product's photo
uploaded (decoded and encoded once), "describe" about a product (attributes and the nearest
captions), and the baseline, GET /api/search/ (query vectors cached, as when warm). The
first question after start (the zero-shot scorers built for the space) is timed apart.
Prints p50/p99 and each p50 as a ratio of the search's.
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
os.environ["API_ANON_RATE"] = ""  # the service's latency is measured, not the throttle's
from harness import p50_p99, percentiles, setup_django  # noqa: E402 (after sys.path is set)

DATABASE = "bench_shop_search_ask"
QUERIES = ["red dress", "black leather shoes", "striped cotton t-shirt", "wool scarf"]
QUESTIONS = ["What colour is this?", "图中服装是什么颜色？", "是棉质的吗？", "What material is it?"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--fresh", action="store_true", help="rebuild the database")
    args = parser.parse_args()
    setup_django(DATABASE)
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.db import connection
    from django.test import Client

    from catalog.models import Product
    from catalog.services import demo_catalog_load
    from embeddings.spaces import space_active, space_ensure_default

    connection.creation.create_test_db(verbosity=0, keepdb=not args.fresh, serialize=False)
    space_ensure_default()
    if Product.objects.count() != args.products or args.fresh:
        started = time.perf_counter()
        demo_catalog_load(count=args.products, seed=0)
        seconds = time.perf_counter() - started
        print(f"loaded and embedded {args.products} demo products in {seconds:.0f} s")
    products = list(Product.objects.filter(images__isnull=False).distinct().order_by("pk")[:50])
    photos = {p.pk: p.images.order_by("position", "id").first().file.read() for p in products}
    client = Client()
    print(f"space {space_active().name}; {len(products)} products asked about")

    def ask(data: dict):
        response = client.post("/api/ask/", data)
        assert response.status_code == 200, response.content
        return response

    def by_product(i):
        return ask({"product_id": products[i % len(products)].pk, "question": QUESTIONS[i % 4]})

    def by_photo(i):
        product = products[i % len(products)]
        upload = SimpleUploadedFile("photo.jpg", photos[product.pk], content_type="image/jpeg")
        return ask({"image": upload, "question": QUESTIONS[i % 4]})

    def describe(i):
        return ask({"product_id": products[i % len(products)].pk, "question": "Describe it"})

    def search(i):
        response = client.get("/api/search/", {"q": QUERIES[i % len(QUERIES)]})
        assert response.status_code == 200
        return response

    started = time.perf_counter()
    by_product(0)
    print(
        f"first question (zero-shot scorers built): {1000 * (time.perf_counter() - started):.0f} ms"
    )
    scenarios = {
        "GET /api/search/ (baseline, warm)": search,
        "POST /api/ask/ product_id (stored vector)": by_product,
        "POST /api/ask/ uploaded photo (encoded)": by_photo,
        "POST /api/ask/ product_id, describe": describe,
    }
    for run in scenarios.values():  # warm: query vectors cached, prototypes encoded
        for i in range(len(QUERIES)):
            run(i)
    timings: dict[str, list[float]] = {name: [] for name in scenarios}
    for i in range(args.rounds):
        for name, run in scenarios.items():
            started = time.perf_counter()
            run(i)
            timings[name].append(1000 * (time.perf_counter() - started))
    baseline, _ = p50_p99(timings["GET /api/search/ (baseline, warm)"])
    for name, values in timings.items():
        p50, _ = p50_p99(values)
        print(f"{name:44} {percentiles(values)}   {p50 / baseline:5.2f}x search")


if __name__ == "__main__":
    main()
