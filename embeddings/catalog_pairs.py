"""The catalog as (caption, image) training pairs: which products are trained on, their
split into train and validation, their titles and their kind captions. Read by fine-tuning
(embeddings.finetuning), the pair export and the learning gates."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field

from django.conf import settings

from catalog.images import ImageDecodeError, decode_image
from catalog.models import Product
from embeddings import training
from embeddings.training import Example, is_validation_key
from embeddings.vectors import product_captions


@dataclass(frozen=True)
class CatalogPairs:
    train: list[Example]
    val: list[Example]
    train_products: int
    val_products: int
    skipped_images: int
    # sha256 -> product of every image read (with train=False: the validation products').
    image_product: dict[str, int] = field(default_factory=dict)


def catalog_titles(product: Product) -> list[str]:
    """The texts a product is trained on: its titles in every language (descriptions are
    longer than the text tower's context and mostly repeat the title)."""
    return [c.text for c in product_captions(product) if c.field.startswith("title")]


# The products fine-tuning learns from: active and draft ones (a draft is the shop's own
# coming product, and its vectors are good the day it goes live); not archived ones, which
# the shop has withdrawn, often for what their photos or titles say.
TRAINED_STATUSES = (Product.Status.ACTIVE, Product.Status.DRAFT)


def catalog_trained_products():
    """The products pairs are made of (fine-tuning, export), with their images, by id."""
    return (
        Product.objects.filter(status__in=TRAINED_STATUSES)
        .prefetch_related("images")
        .order_by("pk")
    )


def catalog_is_validation(product_pk: int) -> bool:
    """Whether a product belongs to the validation split (fine-tuning, evaluation, export)."""
    return is_validation_key(
        product_pk, settings.FINETUNE_VAL_FRACTION, settings.FINETUNE_SPLIT_SEED
    )


def catalog_pairs(
    *, image_size: int, max_products: int | None = None, train: bool = True
) -> CatalogPairs:
    """(product, caption, image) examples from the catalog (not archived products), split
    by product.

    Captions are `catalog_titles`. Images are decoded once, at about the model's input
    size; a product's undecodable images are left out. With `train=False` only the
    validation products are read (their images are not decoded otherwise).
    """
    pairs: dict[bool, list[Example]] = {True: [], False: []}
    products_in: dict[bool, int] = {True: 0, False: 0}
    image_product: dict[str, int] = {}
    skipped = 0
    products = catalog_trained_products()
    if max_products:
        products = products[:max_products]
    for product in products.iterator(chunk_size=500):
        validation = catalog_is_validation(product.pk)
        if not (train or validation):
            continue
        texts = catalog_titles(product)
        pictures = []
        for image in product.images.all():
            try:
                with image.file.open("rb") as f:
                    pictures.append(
                        decode_image(
                            f,
                            max_pixels=settings.MAX_IMAGE_PIXELS,
                            max_aspect_ratio=settings.MAX_IMAGE_ASPECT_RATIO,
                            draft_size=image_size,
                        )
                    )
            except (ImageDecodeError, FileNotFoundError):
                skipped += 1
                continue
            image_product.setdefault(image.sha256, product.pk)
        if pictures:
            products_in[validation] += 1
            pairs[validation] += [
                Example(product.pk, text, picture) for text in texts for picture in pictures
            ]
    return CatalogPairs(
        train=pairs[False],
        val=pairs[True],
        train_products=products_in[False],
        val_products=products_in[True],
        skipped_images=skipped,
        image_product=image_product,
    )


def catalog_kind_examples(catalog_images: Mapping[Hashable, list]) -> list[Example]:
    """Kind captions of these products (`training.kind_examples`): their category's name in
    each language it has, paired with their images, weighted as `training.captions` says."""
    products = Product.objects.filter(pk__in=list(catalog_images), category__isnull=False)
    examples: list[Example] = []
    for product in products.select_related("category").only("pk", "title", "category"):
        category = product.category
        names = [category.name, *(n for n in category.names.values() if isinstance(n, str))]
        examples += training.kind_examples(
            product.pk, names, catalog_images[product.pk], titles=[product.title]
        )
    return examples
