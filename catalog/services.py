"""Writes of the catalog: products and their images. Embedding is queued on commit."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from typing import IO

from django.core.files.base import ContentFile, File
from django.db import connection, transaction
from django.utils.text import slugify
from PIL import Image

from catalog.inferred import inferred_attributes_sync
from catalog.models import (
    Category,
    Facet,
    FacetValueAlias,
    Product,
    ProductImage,
    ProductVariant,
)
from catalog.signals import catalog_changed_send


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
    except (OSError, Image.UnidentifiedImageError, Image.DecompressionBombError):
        # Still stored, so nothing is lost; the embedding task records why it failed.
        width, height = 0, 0
    file.seek(0)
    return digest.hexdigest(), width, height


def product_image_fill_metadata(image: ProductImage) -> None:
    image.sha256, image.width, image.height = image_file_metadata(image.file)


# The product fields its caption vectors are computed from: changing one re-embeds them.
CAPTION_FIELDS = frozenset({"title", "description", "attributes"})
# Every text shoppers find a product by (captions, and the search app's vocabulary of
# brands, categories and SKUs): changing one sends catalog_changed for the product.
TEXT_FIELDS = CAPTION_FIELDS | {"brand", "category", "category_id", "sku"}
# Whether shoppers see the product at all (draft and archived ones they never do): changing
# it sends catalog_changed for the product, and for its photos when it becomes active, so
# the vectors of a hidden product are dropped and those of a shown one computed.
STATUS_FIELDS = frozenset({"status"})
SIGNALLED_FIELDS = TEXT_FIELDS | STATUS_FIELDS


def products_changed_send(
    *,
    product_ids: Iterable[int] = (),
    status_changed: Iterable[int] = (),
    image_ids: Iterable[int] = (),
) -> None:
    """catalog_changed for these products and photos, and for the products whose status
    changed with the photos of those active now (a hidden product's photos have no vectors)."""
    status_changed = list(status_changed)
    image_ids = list(image_ids)
    if status_changed:
        image_ids += ProductImage.objects.filter(
            product_id__in=status_changed, product__status=Product.Status.ACTIVE
        ).values_list("pk", flat=True)
    catalog_changed_send(image_ids=image_ids, product_ids=[*product_ids, *status_changed])


@transaction.atomic
def product_save(*, product: Product, changed_fields: Iterable[str] = ()) -> Product:
    """Save a product edited in a form; new products, changed texts and a changed status
    are signalled."""
    adding = product._state.adding
    changed = set(changed_fields)
    product.save()
    if not adding and {"attributes", "category"} & changed:
        # A value entered now wins over one read from photos: its suggestion goes.
        inferred_attributes_sync(product_ids=[product.pk])
    if adding or SIGNALLED_FIELDS & changed:
        products_changed_send(
            product_ids=[product.pk], status_changed=[product.pk] if STATUS_FIELDS & changed else []
        )
    return product


@transaction.atomic
def product_images_save(*, images: Iterable[tuple[ProductImage, bool]]) -> None:
    """Save images edited in a form, each with whether its file changed; new or replaced
    files get fresh metadata, and their vectors are recomputed in one batch."""
    new_content = []
    for image, file_changed in images:
        if image._state.adding or file_changed:
            product_image_fill_metadata(image)
            new_content.append(image)
        image.save()
    catalog_changed_send(image_ids=[image.pk for image in new_content])


# Pillow format -> file extension of a stored image.
IMAGE_EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "GIF": "gif", "WEBP": "webp"}


def image_file_extension(file: IO[bytes], name: str = "") -> str:
    """The extension an image is stored under: from its content, else from its name."""
    file.seek(0)
    try:
        with Image.open(file) as image:
            detected = image.format or ""
    except (OSError, Image.UnidentifiedImageError, Image.DecompressionBombError):
        detected = ""
    file.seek(0)
    if detected:
        return IMAGE_EXTENSIONS.get(detected, detected.lower())
    suffix = name.rpartition(".")[2].lower() if "." in name else ""
    return suffix if suffix.isascii() and suffix.isalnum() and len(suffix) <= 5 else "bin"


def image_file_store(*, content: File, sha256: str, extension: str) -> str:
    """Store image bytes once, under their sha256; returns the storage name.

    Two products (or two rows of an import) with the same photo share one file, and
    storing it again is free. A stored copy of another size (damaged) is replaced.
    """
    storage = ProductImage._meta.get_field("file").storage
    name = f"products/sha256/{sha256[:2]}/{sha256}.{extension}"
    if storage.exists(name):
        if storage.size(name) == content.size:
            return name
        storage.delete(name)
    content.seek(0)
    saved = storage.save(name, content)
    if saved != name:  # another process stored the same bytes meanwhile: keep theirs
        storage.delete(saved)
    return name


def product_image_create(
    *, product: Product, file: File | bytes, name: str = "image.jpg", position: int | None = None
) -> ProductImage:
    if isinstance(file, bytes):
        file = ContentFile(file, name=name)
    if position is None:
        position = product.images.count()
    image = ProductImage(product=product, position=position)
    image.sha256, image.width, image.height = image_file_metadata(file)
    image.file.name = image_file_store(
        content=file,
        sha256=image.sha256,
        extension=image_file_extension(file, getattr(file, "name", None) or name),
    )
    with transaction.atomic():
        image.save()
        catalog_changed_send(image_ids=[image.pk])
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
    status: str = Product.Status.ACTIVE,
) -> Product:
    product = Product(
        sku=sku,
        status=status,
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
    catalog_changed_send(product_ids=[product.pk])
    return product


def products_variants_summarise(product_ids: Iterable[int]) -> list[Product]:
    """Derive each product's options, price range, compare-at price and stock from its
    active variants, in bulk; returns the products whose summary changed.

    The options keep the product's order of names (new names go last) and list each
    name's values in the variants' order. A product whose variants are all inactive
    keeps its last price and is out of stock; one without variants is left as it is.
    """
    products = Product.objects.filter(pk__in=set(product_ids)).only(
        "id", "options", "price", "price_max", "compare_at_price", "in_stock"
    )
    variants: dict[int, list[ProductVariant]] = {}
    for variant in ProductVariant.objects.filter(product_id__in=set(product_ids)):
        variants.setdefault(variant.product_id, []).append(variant)
    changed = []
    for product in products:
        mine = variants.get(product.pk)
        if not mine:
            continue
        active = [v for v in mine if v.active]
        names = [option["name"] for option in product.options]
        names += [n for v in mine for n in v.options if n not in names]
        names = list(dict.fromkeys(names))
        values: dict[str, list[str]] = {name: [] for name in names}
        for variant in active:
            for name, value in variant.options.items():
                if value not in values[name]:
                    values[name].append(value)
        sellable = [v for v in active if v.in_stock] or active
        summary = {
            "options": [{"name": n, "values": values[n]} for n in names if values[n]],
            "price": min((v.price for v in sellable), default=product.price),
            "price_max": max((v.price for v in active), default=None),
            "compare_at_price": max(
                (v.compare_at_price for v in sellable if v.compare_at_price), default=None
            ),
            "in_stock": any(v.in_stock for v in active),
        }
        if any(getattr(product, name) != value for name, value in summary.items()):
            for name, value in summary.items():
                setattr(product, name, value)
            changed.append(product)
    Product.objects.bulk_update(
        changed, ["options", "price", "price_max", "compare_at_price", "in_stock"]
    )
    products_variant_offers_update(variants)
    return changed


# Each active variant as {"p": price, "s": in stock, "k": its option keys}, in the shop's
# order; rows whose offers are as they were are left alone.
VARIANT_OFFERS_UPDATE = """
UPDATE catalog_product p SET variant_offers = o.offers
FROM (SELECT product_id,
             coalesce(jsonb_agg(jsonb_build_object('p', price, 's', in_stock,
                                                   'k', to_jsonb(option_keys))
                                ORDER BY position, id) FILTER (WHERE active), '[]') AS offers
      FROM catalog_productvariant WHERE product_id = ANY(%s) GROUP BY product_id) o
WHERE p.id = o.product_id AND p.variant_offers IS DISTINCT FROM o.offers
"""


def products_variant_offers_update(product_ids: Iterable[int]) -> None:
    """`Product.variant_offers` from the variants (their `option_keys` are the database's
    own generated column, so this is one statement there)."""
    with connection.cursor() as cursor:
        cursor.execute(VARIANT_OFFERS_UPDATE, [list(product_ids)])


@transaction.atomic
def product_variants_save(*, product: Product, variants: Iterable[ProductVariant]) -> None:
    """Save a product's variants edited in a form; its options, price range, compare-at
    price and stock follow them."""
    variants = list(variants)
    for variant in variants:
        variant.product = product
        variant.save()
    # New option names in the order they were typed: a variant's stored JSON keeps none.
    names = [option["name"] for option in product.options]
    typed = dict.fromkeys(n for v in variants for n in v.options if n not in names)
    if typed:
        product.options = [*product.options, *({"name": n, "values": []} for n in typed)]
        product.save(update_fields=["options"])
    products_variants_summarise([product.pk])


def category_path_slug(path: Sequence[str]) -> str:
    """The slug of the category at `path`: its names joined, so each path has its own."""
    return slugify(" ".join(path), allow_unicode=True)[:200]


def category_get_or_create_path(
    path: Sequence[str], *, names: Sequence[dict[str, str]] = ()
) -> Category:
    """The category at `path` (e.g. ["Women", "Dresses"]), creating missing levels.

    `names`: per level, its name in other languages ({"zh": "女装"}), set on the levels
    this creates and added to those that have none yet.
    """
    parent = None
    for depth in range(1, len(path) + 1):
        slug = category_path_slug(path[:depth])
        translated = dict(names[depth - 1]) if depth <= len(names) else {}
        parent, created = Category.objects.get_or_create(
            slug=slug, defaults={"name": path[depth - 1], "parent": parent, "names": translated}
        )
        if not created and translated and not parent.names:
            parent.names = translated
            parent.save(update_fields=["names"])
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

    demo_facets_configure()
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
                    categories[demo.category] = category_get_or_create_path(
                        demo.category,
                        names=[{"zh": zh} for zh in demo.attributes["category_path_zh"]],
                    )
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
                    # Summarised already, so the summary below updates nothing (a second write
                    # of each row); and in its options' order, which a variant's JSONB loses.
                    options=demo.options,
                    price_max=demo.price_max,
                )
                for demo in todo
            )
            images, photos = [], {}
            for demo, product in zip(todo, products, strict=True):
                for position, (image_index, colour) in enumerate(demo.photos):
                    data = render_product_image(demo, image_index, seed=seed, colour=colour)
                    image = ProductImage(product=product, position=position)
                    image.file.save(f"{demo.sku}-{position}.jpg", ContentFile(data), save=False)
                    image.sha256, image.width, image.height = image_file_metadata(io.BytesIO(data))
                    images.append(image)
                    photos[demo.sku, position] = image
            ProductImage.objects.bulk_create(images)
            ProductVariant.objects.bulk_create(
                ProductVariant(
                    product=product,
                    sku=variant.sku,
                    options=variant.options,
                    price=variant.price,
                    stock=variant.stock,
                    in_stock=variant.stock > 0,
                    image=photos[demo.sku, variant.photo],
                    position=position,
                )
                for demo, product in zip(todo, products, strict=True)
                for position, variant in enumerate(demo.variants)
            )
            products_variants_summarise(
                [p.pk for p, d in zip(products, todo, strict=True) if d.variants]
            )
            if embed:
                catalog_changed_send(
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


@transaction.atomic
def demo_facets_configure() -> list[Facet]:
    """The demo shop's facets (Colour, Size, pattern, material) and their value aliases,
    set up when the shop has no facets; a shop's own set-up is left as it is."""
    from catalog.demo_catalog import DEMO_FACETS

    if Facet.objects.exists():
        return []
    facets = Facet.objects.bulk_create(
        Facet(name=name, label=label, position=position)
        for position, (name, label, _) in enumerate(DEMO_FACETS)
    )
    FacetValueAlias.objects.bulk_create(
        FacetValueAlias(facet=facet, alias=alias, value=value)
        for facet, (_, _, aliases) in zip(facets, DEMO_FACETS, strict=True)
        for alias, value in aliases.items()
    )
    return facets
