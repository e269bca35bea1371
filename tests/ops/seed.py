"""Create products and images for the ops tests, in a process of the topology, queuing nothing.

    python -m tests.ops.seed
    [{"sku": "A", "images": [{"kind": "jpeg", "seed": 1}]}]      <- one request per line
    {"space": 1, "products": [{"id": 1, "images": [1]}]}        -> one answer per line

A long-lived process (Django and the model load once per test session). Images go through
the same storage helpers as uploads (content-addressed files, sha256, size), but no
embedding task is queued: the test decides what reaches the broker, and when.
"""

import io
import json
import sys


def image_bytes(spec: dict) -> tuple[bytes, str]:
    from tests.builders import corrupt_jpeg_bytes, jpeg_bytes, png_bomb

    kind = spec.get("kind", "jpeg")
    if kind == "jpeg":
        colour = tuple(spec.get("colour", (200, 30, 30)))
        return jpeg_bytes(colour, size=spec.get("size", 96), seed=spec.get("seed", 0)), "jpg"
    if kind == "truncated":
        return corrupt_jpeg_bytes(), "jpg"
    if kind == "bomb":
        return png_bomb(50_000, 50_000), "png"
    if kind == "lying":  # named and served as a JPEG, but it is a script
        return b"#!/bin/sh\necho this is not a photo\n" * 20, "jpg"
    raise ValueError(f"unknown image kind {kind!r}")


def seed(spec: list[dict]) -> dict:
    from django.core.files.base import ContentFile
    from django.db import transaction

    from catalog.models import Product, ProductImage
    from catalog.services import image_file_metadata, image_file_store
    from embeddings.spaces import space_active

    space = space_active()
    created = []
    with transaction.atomic():
        for item in spec:
            product = Product.objects.create(
                sku=item["sku"], title=item.get("title", item["sku"]), price="10.00"
            )
            images = []
            for position, image_spec in enumerate(item.get("images", [])):
                data, extension = image_bytes(image_spec)
                sha256, width, height = image_file_metadata(io.BytesIO(data))
                name = image_file_store(
                    content=ContentFile(data), sha256=sha256, extension=extension
                )
                image = ProductImage.objects.create(
                    product=product,
                    file=name,
                    sha256=sha256,
                    width=width,
                    height=height,
                    position=position,
                )
                images.append(image.pk)
            created.append({"id": product.pk, "images": images})
    return {"space": space.pk, "products": created}


if __name__ == "__main__":
    import traceback

    import django

    django.setup()
    from django.db import close_old_connections

    for line in sys.stdin:
        try:
            close_old_connections()  # Postgres may have been restarted since the last request
            answer = seed(json.loads(line))
        except Exception:
            answer = {"error": traceback.format_exc()}
        print(json.dumps(answer), flush=True)
