"""Attribute inference throughput (not a test): products/s read from their photos' vectors and
recorded as suggestions, against plain embedding of the same products' photos, in one run.

    .venv/bin/python bench/infer.py [--products 384] [--rounds 2] [--fresh]

A scratch database holds the demo catalog and a shop-micro space trained on it (kept for the
next run). Half the products (odd ids) lose their colour, pattern and material, as if never
entered; the other half are the labelled products zero-shot calibrates on. Each round:

- embed: `image_embeddings_compute` of every photo (forced), as the worker runs it;
- infer, cold: `attributes_infer` over every product with the zero-shot scorers built
  first (prompts encoded, blend and temperature fitted), as a worker's first batch;
- infer, warm: the same with the scorers cached, as every later batch.

Lines give products/s and the ratio to embedding; then how often the suggestions match the
values that were taken away, per attribute, and how each attribute is scored.
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
from harness import setup_django  # noqa: E402 (after sys.path is set)

DATABASE = "bench_shop_search_infer"
MEDIA = ROOT / "var" / "bench-infer-media"
SPACE = "bench-infer"
TAKEN = ("colour", "pattern", "material")


def catalog_ensure(count: int) -> dict[int, dict]:
    """The demo catalog with a trained space; returns the taken-away values by product id."""
    from django.core.management import call_command
    from django.db import transaction

    from catalog.demo_catalog import demo_product
    from catalog.models import Product
    from catalog.services import demo_catalog_load
    from embeddings.models import EmbeddingSpace
    from embeddings.spaces import space_ensure_default

    space_ensure_default()
    if Product.objects.count() < count:
        demo_catalog_load(count=count, seed=0, embed=False)
    if not EmbeddingSpace.objects.filter(name=SPACE).exists():
        call_command(
            "finetune_clip", scratch=True, architecture="shop-micro", epochs=20, batch_size=32,
            lr=3e-3, margin=-1.0, name=SPACE, no_events=True, verbosity=0,
        )  # fmt: skip
    truth = {}
    with transaction.atomic():
        for product in Product.objects.filter(id__in=Product.objects.order_by("pk")[:count]):
            if product.pk % 2:
                demo = demo_product(int(product.sku.rsplit("-", 1)[1]))
                truth[product.pk] = {"colour": demo.colour, "pattern": demo.pattern,
                                     "material": demo.material}  # fmt: skip
                if any(name in product.attributes for name in TAKEN):
                    attributes = {k: v for k, v in product.attributes.items() if k not in TAKEN}
                    Product.objects.filter(pk=product.pk).update(attributes=attributes)
    return truth


def timed(function) -> tuple[float, object]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=384)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--torch-threads", type=int, default=os.cpu_count())
    parser.add_argument("--fresh", action="store_true", help="rebuild the database")
    args = parser.parse_args()
    setup_django(DATABASE, MEDIA_ROOT=MEDIA, CLIP_DEVICE="", INFER_ATTRIBUTES_ON_EMBED=False)
    import torch
    from django.db import connection

    from catalog.models import InferredAttribute, Product, ProductImage
    from embeddings.inference import attributes_infer
    from embeddings.models import EmbeddingSpace
    from embeddings.vectors import image_embeddings_compute
    from embeddings.zero_shot import zero_shot_cache_clear, zero_shot_report

    torch.set_num_threads(args.torch_threads)
    connection.creation.create_test_db(verbosity=0, keepdb=not args.fresh, serialize=False)
    truth = catalog_ensure(args.products)
    space = EmbeddingSpace.objects.get(name=SPACE)
    ids = list(Product.objects.order_by("pk").values_list("pk", flat=True)[: args.products])
    image_ids = list(ProductImage.objects.filter(product_id__in=ids).values_list("pk", flat=True))
    print(
        f"{len(ids)} demo products, {len(image_ids)} photos, space {space.name} "
        f"({space.architecture}), {args.torch_threads} torch threads, best of {args.rounds}"
    )
    best = {"embed": float("inf"), "cold": float("inf"), "warm": float("inf")}
    for _ in range(args.rounds):
        seconds, _ = timed(lambda: image_embeddings_compute(space=space, image_ids=image_ids,
                                                             force=True))  # fmt: skip
        best["embed"] = min(best["embed"], seconds)
        for phase in ("cold", "warm"):
            InferredAttribute.objects.all().delete()
            Product.objects.update(inferred_attributes={})
            if phase == "cold":
                zero_shot_cache_clear()
            seconds, report = timed(lambda: attributes_infer(space=space, product_ids=ids))
            best[phase] = min(best[phase], seconds)
    rate = {phase: len(ids) / seconds for phase, seconds in best.items()}
    for phase, label in (("embed", "embed photos"), ("cold", "infer, cold"),
                         ("warm", "infer, warm")):  # fmt: skip
        print(f"{label:14} {rate[phase]:9.1f} products/s {rate[phase] / rate['embed']:7.2f}x")
    print(f"{report.suggested} values suggested for {report.predicted} products")
    rows = InferredAttribute.objects.filter(product_id__in=truth)
    for name in TAKEN:
        mine = list(rows.filter(name=name).values_list("product_id", "value"))
        right = sum(value == truth[pid][name] for pid, value in mine)
        print(f"{name:9} {right}/{len(mine)} = {right / max(len(mine), 1):.2f} right")
    for name, scoring in zero_shot_report(space).items():
        print(f"{name:9} {scoring}")


if __name__ == "__main__":
    main()
