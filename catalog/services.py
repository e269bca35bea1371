"""Writes of the catalog: products and their images. Embedding is queued on commit."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from typing import IO

from django.core.files.base import ContentFile, File
from django.db import transaction
from django.utils.text import slugify
from PIL import Image

from catalog.models import Category, Product, ProductImage
from embeddings.services import embeddings_queue


def image_file_metadata(file: IO[bytes]) -> tuple[str, int, int]:
    """sha256 of the content, and width and height read from the header (0 if unreadable)."""
    file.seek(0)
    digest = hashlib.sha256()
    for chunk in iter(lambda: file.read(1 << 20), b""):
        digest.update(chunk)
    file.seek(0)
    try:
        with Image.open(file) as image:
            width, height = image.size
    except (OSError, Image.UnidentifiedImageError):
        # Still stored, so nothing is lost; the embedding task records why it failed.
        width, height = 0, 0
    file.seek(0)
    return digest.hexdigest(), width, height


def product_image_fill_metadata(image: ProductImage) -> None:
    image.sha256, image.width, image.height = image_file_metadata(image.file)


def product_image_create(
    *, product: Product, file: File | bytes, name: str = "image.jpg", position: int | None = None
) -> ProductImage:
    if isinstance(file, bytes):
        file = ContentFile(file, name=name)
    if position is None:
        position = product.images.count()
    image = ProductImage(product=product, file=file, position=position)
    product_image_fill_metadata(image)
    with transaction.atomic():
        image.save()
        embeddings_queue(image_ids=[image.pk])
    return image


@transaction.atomic
def product_create(
    *,
    sku: str,
    title: str,
    price: Decimal | str,
    description: str = "",
    brand: str = "",
    category: Category | None = None,
    currency: str = "USD",
    in_stock: bool = True,
    attributes: dict | None = None,
    images: Iterable[File | bytes] = (),
) -> Product:
    product = Product(
        sku=sku,
        title=title,
        description=description,
        brand=brand,
        category=category,
        price=Decimal(price),
        currency=currency,
        in_stock=in_stock,
        attributes=attributes or {},
    )
    product.full_clean()
    product.save()
    for position, file in enumerate(images):
        product_image_create(
            product=product, file=file, name=f"{sku}-{position}.jpg", position=position
        )
    embeddings_queue(product_ids=[product.pk])
    return product


def category_get_or_create_path(path: Sequence[str]) -> Category:
    """The category at `path` (e.g. ["Women", "Dresses"]), creating missing levels."""
    parent = None
    for depth in range(1, len(path) + 1):
        slug = slugify(" ".join(path[:depth]), allow_unicode=True)[:200]
        parent, _ = Category.objects.get_or_create(
            slug=slug, defaults={"name": path[depth - 1], "parent": parent}
        )
    if parent is None:
        raise ValueError("a category path needs at least one name")
    return parent


def demo_catalog_load(
    *,
    count: int,
    seed: int = 0,
    embed: bool = True,
    batch_size: int = 250,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Create the synthetic demo shop; returns how many products were new.

    Each batch of products and their photos commits together, so an interruption leaves
    no half-written product, and running it again adds only the missing SKUs.
    """
    from catalog.demo_catalog import demo_products, render_product_image

    created = 0
    categories: dict[tuple[str, ...], Category] = {}
    batch: list = []

    def flush():
        nonlocal created
        existing = set(
            Product.objects.filter(sku__in=[p.sku for p in batch]).values_list("sku", flat=True)
        )
        todo = [p for p in batch if p.sku not in existing]
        with transaction.atomic():
            for demo in todo:
                if demo.category not in categories:
                    categories[demo.category] = category_get_or_create_path(demo.category)
            products = Product.objects.bulk_create(
                Product(
                    sku=demo.sku,
                    title=demo.title,
                    description=demo.description,
                    brand=demo.brand,
                    category=categories[demo.category],
                    price=demo.price,
                    currency=demo.currency,
                    in_stock=demo.in_stock,
                    attributes={**demo.attributes, "titles": {"zh": demo.title_zh}},
                )
                for demo in todo
            )
            images = []
            for demo, product in zip(todo, products, strict=True):
                for position in range(demo.image_count):
                    data = render_product_image(demo, position, seed=seed)
                    image = ProductImage(product=product, position=position)
                    image.file.save(f"{demo.sku}-{position}.jpg", ContentFile(data), save=False)
                    image.sha256, image.width, image.height = image_file_metadata(io.BytesIO(data))
                    images.append(image)
            ProductImage.objects.bulk_create(images)
            if embed:
                embeddings_queue(
                    image_ids=[image.pk for image in images],
                    product_ids=[product.pk for product in products],
                )
        created += len(todo)
        if progress:
            progress(len(batch))
        batch.clear()

    for demo in demo_products(count, seed=seed):
        batch.append(demo)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    return created
