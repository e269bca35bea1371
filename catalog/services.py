"""Writes of the catalog: products and their images. Embedding is queued on commit."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from decimal import Decimal
from typing import IO

from django.core.files.base import ContentFile, File
from django.db import transaction
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
