"""Embedding throughput (not a test): images/s from JPEG bytes in the database to vectors written.

    .venv/bin/python bench/embed.py [--images 96] [--tiny-images 512] [--rounds 2] [--fresh]

A scratch database on the embedded server holds products with one 800x600 JPEG each (all
different). For ViT-B-32 (fixed-seed random weights built from open_clip's config, no
download) and shop-tiny, every path reads the image rows and their files, decodes,
encodes and writes the vectors (inserts: each path starts from an empty space):

- one-at-a-time: read, decode, encode and write one image after another;
- today: the batched code before the pipeline (decode a batch in turn, encode it, write it);
- pipeline: `image_embeddings_compute` as the worker runs it (embeddings.pipeline), in fp32
  and in each other precision this CPU offers (CLIP_CPU_PRECISION), or fp16 on CUDA;
- and once more in fp32 on a quarter of the photos, each on four products (the copies
  share one encoding: images/s counts every product's image).

Each line gives images/s, the ratio to the one-at-a-time loop and the least cosine of the
stored vectors against fp32 vectors computed on the CPU by the simple path. Then the
decode-only ceiling: reading and decoding (JPEG draft mode, cut to the model's input)
without a model, in one thread and in the pipeline's pool. On a shared machine the paths
run in interleaved rounds and each keeps its best round. The device is the code's own
choice (CUDA when present), so it runs unchanged on a GPU machine.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop_search.settings.test")
from harness import setup_django  # noqa: E402 (after sys.path is set)

DATABASE = "bench_shop_search_embed"
MEDIA = ROOT / "var" / "bench-embed-media"
WIDTH, HEIGHT = 800, 600
MODELS = ("ViT-B-32", "shop-tiny")
SKU_PREFIX = "EMBED-BENCH-"
DUPLICATE_PREFIX = "EMBED-BENCH-DUP-"
COPIES = 4  # the "same photo" line: each of a quarter of the photos on four products
REFERENCE_SAMPLE = 48  # images whose fp32 CPU vectors every path is compared with


# --- the catalog --------------------------------------------------------------------------


def photo_jpeg(index: int) -> bytes:
    """An 800x600 photo-like JPEG: a lit backdrop, a few coloured shapes, sensor noise."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(index)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    base = rng.uniform(120, 230, 3)
    slope = rng.uniform(-0.08, 0.08, (2, 3))
    backdrop = base + x[..., None] * slope[0] + y[..., None] * slope[1]
    image = Image.fromarray(backdrop.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(3, 7)):
        x0, y0 = rng.integers(0, WIDTH - 100), rng.integers(0, HEIGHT - 100)
        box = [x0, y0, x0 + rng.integers(60, 400), y0 + rng.integers(60, 300)]
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    image = image.filter(ImageFilter.GaussianBlur(1.5))
    pixels = np.asarray(image, dtype=np.int16) + rng.normal(0, 4, (HEIGHT, WIDTH, 3))
    buffer = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=88)
    return buffer.getvalue()


def catalog_ensure(count: int) -> list[int]:
    """`count` products with one photo each (made once, kept between runs); their image ids."""
    from django.core.files.base import ContentFile
    from django.db import transaction

    from catalog.models import Product, ProductImage
    from catalog.services import image_file_metadata, image_file_store

    images = ProductImage.objects.filter(product__sku__startswith=SKU_PREFIX).exclude(
        product__sku__startswith=DUPLICATE_PREFIX
    )
    have = images.count()
    missing = list(range(have, count))
    pool = ThreadPoolExecutor(os.cpu_count())  # Pillow encodes JPEGs without the GIL
    for start in range(0, len(missing), 500):
        batch = missing[start : start + 500]
        photos = pool.map(photo_jpeg, batch)
        # No catalog signal: the bench decides what is embedded, and when.
        with transaction.atomic():
            products = Product.objects.bulk_create(
                Product(sku=f"{SKU_PREFIX}{i:06d}", title=f"Bench photo {i}", price="1.00")
                for i in batch
            )
            rows = []
            for i, product, photo in zip(batch, products, photos, strict=True):
                content = ContentFile(photo, name=f"{i}.jpg")
                sha256, width, height = image_file_metadata(content)
                name = image_file_store(content=content, sha256=sha256, extension="jpg")
                rows.append(
                    ProductImage(
                        product=product,
                        file=name,
                        sha256=sha256,
                        width=width,
                        height=height,
                        position=0,
                    )
                )
            ProductImage.objects.bulk_create(rows)
        print(f"  catalog: {start + len(batch)}/{len(missing)} photos made", flush=True)
    pool.shutdown()
    return list(images.order_by("pk").values_list("pk", flat=True)[:count])


def duplicates_ensure(image_ids: list[int]) -> list[int]:
    """Products sharing the photos of `image_ids`, COPIES of each (rows only: the photo,
    like any duplicate upload, is one stored file); their image ids, copies together."""
    from catalog.models import Product, ProductImage

    rows = ProductImage.objects.filter(product__sku__startswith=DUPLICATE_PREFIX)
    if rows.count() != len(image_ids) * COPIES:
        rows.delete()
        Product.objects.filter(sku__startswith=DUPLICATE_PREFIX).delete()
        originals = ProductImage.objects.filter(pk__in=image_ids).order_by("pk")
        pairs = [(image, copy) for image in originals for copy in range(COPIES)]
        products = Product.objects.bulk_create(
            Product(sku=f"{DUPLICATE_PREFIX}{image.pk}-{copy}", title="Bench copy", price="1.00")
            for image, copy in pairs
        )
        ProductImage.objects.bulk_create(
            ProductImage(
                product=product,
                file=image.file.name,
                sha256=image.sha256,
                width=image.width,
                height=image.height,
                position=0,
            )
            for (image, _), product in zip(pairs, products, strict=True)
        )
    return list(rows.order_by("pk").values_list("pk", flat=True))


# --- the paths ----------------------------------------------------------------------------


def read_bytes(image) -> bytes:
    with image.file.storage.open(image.file.name, "rb") as f:
        return f.read()


def upsert(rows) -> None:
    from embeddings.models import ImageEmbedding

    ImageEmbedding.objects.bulk_create(
        rows,
        update_conflicts=True,
        unique_fields=["image", "space"],
        update_fields=["vector", "source_sha256", "error", "updated"],
    )


def one_at_a_time(space, image_ids: list[int]) -> None:
    """Read, decode, encode and write one image, then the next."""
    from catalog.models import ProductImage
    from embeddings.models import ImageEmbedding
    from embeddings.spaces import space_encoder

    encoder = space_encoder(space)
    for image in ProductImage.objects.filter(pk__in=image_ids).order_by("pk"):
        vector = encoder.encode_images([encoder.decode_image(read_bytes(image))])[0]
        upsert(
            [ImageEmbedding(image=image, space=space, vector=vector, source_sha256=image.sha256)]
        )


def today(space, image_ids: list[int]) -> None:
    """The worker's batched code before the pipeline (main at 17b8e22), less its error rows:
    decode a batch one image after another, encode it, write it, then the next batch."""
    from django.conf import settings

    from catalog.models import ProductImage
    from embeddings.models import ImageEmbedding
    from embeddings.spaces import space_encoder

    encoder = space_encoder(space)
    images = list(ProductImage.objects.filter(pk__in=image_ids).order_by("pk"))
    for start in range(0, len(images), settings.EMBED_BATCH_SIZE):
        batch = images[start : start + settings.EMBED_BATCH_SIZE]
        decoded = [encoder.decode_image(read_bytes(image)) for image in batch]
        vectors = encoder.encode_images(decoded)
        upsert(
            [
                ImageEmbedding(image=image, space=space, vector=vector, source_sha256=image.sha256)
                for image, vector in zip(batch, vectors, strict=True)
            ]
        )


def pipeline(space, image_ids: list[int]) -> None:
    from embeddings.vectors import image_embeddings_compute

    report = image_embeddings_compute(space=space, image_ids=image_ids, force=True)
    assert not report.failed, report.failed


def decode_only(encoder, image_ids: list[int], threads: int) -> float:
    """Images/s of reading and decoding alone, as the pipeline's threads do it."""
    from catalog.models import ProductImage

    start = time.perf_counter()
    images = list(ProductImage.objects.filter(pk__in=image_ids).order_by("pk"))

    def prepare(image):
        return encoder.batch_pixels(encoder.decode_image(read_bytes(image)))

    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(prepare, images):
            pass
    return len(images) / (time.perf_counter() - start)


# --- the run ------------------------------------------------------------------------------


def space_for(architecture: str):
    from embeddings.encoder import ModelSpec
    from embeddings.models import EmbeddingSpace
    from embeddings.spaces import space_create

    name = f"bench-{architecture}@random-seed0"
    space = EmbeddingSpace.objects.filter(name=name).first()
    return space or space_create(name=name, spec=ModelSpec(architecture), build_indexes=False)


def stored(space, image_ids: list[int]) -> np.ndarray:
    from embeddings.models import ImageEmbedding

    rows = dict(
        ImageEmbedding.objects.filter(space=space, image_id__in=image_ids).values_list(
            "image_id", "vector"
        )
    )
    return np.array([rows[pk] for pk in image_ids], dtype=np.float32)


def reference_vectors(architecture: str, image_ids: list[int]) -> np.ndarray:
    """fp32 vectors on the CPU by the simple path: what every path is compared with."""
    from catalog.models import ProductImage
    from embeddings.encoder import ModelSpec, get_encoder

    encoder = get_encoder(ModelSpec(architecture), device="cpu")  # on a CPU, the fp32 path's
    images = ProductImage.objects.filter(pk__in=image_ids).order_by("pk")
    return encoder.encode_images([encoder.decode_image(read_bytes(image)) for image in images])


def run_model(architecture: str, image_ids: list[int], rounds: int, loop_ids: list[int]):
    from django.conf import settings

    from embeddings import encoder as encoder_module
    from embeddings.encoder import CPU_PRECISIONS, cpu_bf16_supported, default_device
    from embeddings.models import ImageEmbedding
    from embeddings.spaces import space_encoder

    space = space_for(architecture)
    cuda = default_device().type == "cuda"
    precisions = [p for p in CPU_PRECISIONS if p != "bf16" or cpu_bf16_supported()]
    copies = duplicates_ensure(image_ids[: len(image_ids) // COPIES])
    paths = [
        ("one-at-a-time", one_at_a_time, "fp32", loop_ids),
        ("today", today, "fp32", image_ids),
        *[(f"pipeline {p}", pipeline, p, image_ids) for p in (["fp32"] if cuda else precisions)],
        (f"pipeline fp32, each photo {COPIES} times", pipeline, "fp32", copies),
    ]
    sample = (loop_ids if len(loop_ids) < len(image_ids) else image_ids)[:REFERENCE_SAMPLE]
    reference = reference_vectors(architecture, sample)
    best: dict[str, float] = {}
    cosine: dict[str, float] = {}
    for _ in range(rounds):
        for label, path, precision, ids in paths:
            settings.CLIP_CPU_PRECISION = precision
            encoder = space_encoder(space)  # loaded before the clock starts
            label = label.replace("fp32", "fp16") if encoder.precision == "fp16" else label
            encoder.encode_images([encoder.decode_image(photo_jpeg(0))])  # warm-up
            ImageEmbedding.objects.filter(space=space).delete()
            start = time.perf_counter()
            path(space, ids)
            seconds = time.perf_counter() - start
            rate = len(ids) / seconds
            print(f"  {architecture} {label}: {len(ids)} images in {seconds:.1f} s", flush=True)
            best[label] = max(rate, best.get(label, 0.0))
            if ids is not copies:
                vectors = stored(space, sample)
                cosine[label] = float((vectors * reference).sum(axis=1).min())
    settings.CLIP_CPU_PRECISION = "fp32"
    loop = best["one-at-a-time"]
    for label, rate in best.items():
        agreement = f" (cosine with fp32 >= {cosine[label]:.4f})" if label in cosine else ""
        print(f"{architecture} {label} {rate:.1f} img/s {rate / loop:.2f}x{agreement}", flush=True)
    # The ceiling: what the pipeline could reach if the model cost nothing.
    encoder = space_encoder(space)
    for threads in sorted({1, max(1, settings.EMBED_DECODE_THREADS)}):
        rate = max(decode_only(encoder, image_ids, threads) for _ in range(rounds))
        print(
            f"{architecture} decode-only ({encoder.image_size} px, {threads} threads) "
            f"{rate:.1f} img/s {rate / loop:.2f}x",
            flush=True,
        )
    encoder_module._encoders.clear()  # the next model's copies need the memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96, help="ViT-B-32's images")
    parser.add_argument("--tiny-images", type=int, default=512, help="shop-tiny's images")
    parser.add_argument(
        "--loop-images", type=int, default=0, help="fewer for the one-at-a-time loop (0: all)"
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--torch-threads", type=int, default=os.cpu_count())
    parser.add_argument("--fresh", action="store_true", help="rebuild the database")
    args = parser.parse_args()
    # CLIP_DEVICE "": not the test settings' "cpu"; here the code chooses, CUDA if any.
    setup_django(DATABASE, MEDIA_ROOT=MEDIA, CLIP_DEVICE="")
    import torch
    from django.conf import settings
    from django.db import connection

    from embeddings.encoder import default_device

    # The test settings pin torch to one thread; a worker uses every core.
    torch.set_num_threads(args.torch_threads)
    connection.creation.create_test_db(verbosity=0, keepdb=not args.fresh, serialize=False)
    image_ids = catalog_ensure(max(args.images, args.tiny_images))
    device = default_device()
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else f"{os.cpu_count()} CPUs"
    print(
        f"device {device} ({name}), torch {torch.__version__}, {args.torch_threads} torch "
        f"threads, {settings.EMBED_DECODE_THREADS} decode threads, batch "
        f"{settings.EMBED_BATCH_SIZE_CUDA if device.type == 'cuda' else settings.EMBED_BATCH_SIZE}"
        f", {WIDTH}x{HEIGHT} JPEGs, best of {args.rounds} rounds",
        flush=True,
    )
    for architecture in MODELS:
        count = args.images if architecture == "ViT-B-32" else args.tiny_images
        ids = image_ids[:count]
        loop_ids = ids[: args.loop_images] if args.loop_images else ids
        run_model(architecture, ids, args.rounds, loop_ids)


if __name__ == "__main__":
    main()
