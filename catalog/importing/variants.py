"""Variants of imported products: upserted by SKU, one SKU to one product, and those gone
from a re-imported file made inactive, never deleted (the search log and orders name them)."""

from __future__ import annotations

from collections import defaultdict

from django.db.models import F, Q
from django.utils import timezone

from catalog.importing.readers import RowError
from catalog.importing.rows import ProductRow, VariantRow
from catalog.models import Product, ProductImage, ProductVariant

WRITTEN_FIELDS = [
    "options",
    "price",
    "compare_at_price",
    "stock",
    "in_stock",
    "barcode",
    "position",
    "active",
    "image",
]


class VariantsPlan:
    """The variant changes of one batch, decided before anything is written (a dry run
    only counts them)."""

    def __init__(self, rows: list[ProductRow], existing: dict[str, Product], owners: dict):
        skus = {variant.sku for row in rows for variant in row.variants or ()}
        product_ids = [product.pk for product in existing.values()]
        self.current: dict[str, ProductVariant] = {}
        self.by_product: dict[int, list[ProductVariant]] = defaultdict(list)
        found = ProductVariant.objects.filter(Q(product_id__in=product_ids) | Q(sku__in=skus))
        for variant in found.annotate(product_sku=F("product__sku")):
            self.current[variant.sku] = variant
            self.by_product[variant.product_id].append(variant)
        # variant SKU -> (product SKU, line): who claimed it earlier in this import
        self.owners = owners
        self.writes: list[tuple[Product, VariantRow, ProductVariant | None, int, str | None]] = []
        self.inactive: list[ProductVariant] = []

    def plan(
        self, row: ProductRow, product: Product, image_shas: dict[int, str], errors: list
    ) -> tuple[bool, bool, int]:
        """Plan the row's variants: whether any changes, whether its options may have, and
        how many of them it may have (the others belong to other products)."""
        mine = self.by_product.get(product.pk, []) if product.pk else []
        changed = options_changed = False
        listed = set()
        for index, variant in enumerate(row.variants or ()):
            old = self.current.get(variant.sku)
            owner, line = self.owners.get(variant.sku, (row.sku, 0))
            if owner != row.sku:
                message = f"{variant.sku!r} is also a variant of {owner!r} (line {line})"
                errors.append(RowError(variant.line, variant.sku_column, message, row.sku))
                continue
            if old is not None and old.product_sku != row.sku:
                message = f"{variant.sku!r} is already a variant of product {old.product_sku!r}"
                errors.append(RowError(variant.line, variant.sku_column, message, row.sku))
                continue
            self.owners[variant.sku] = (row.sku, variant.line)
            listed.add(variant.sku)
            # A variation joined later goes after the product's others, and stays put.
            position = index if not row.attach else (old.position if old else len(mine) + index)
            sha = row.image_shas.get(variant.image) if variant.image else None
            if old is None:
                changed = options_changed = True
            elif _values(old, image_shas.get(old.image_id)) != _values(variant, sha, position):
                changed = True
                options_changed |= old.options != variant.options or not old.active
            else:
                continue
            self.writes.append((product, variant, old, position, sha))
        if row.variants_complete and not row.attach:
            for old in mine:
                if old.active and old.sku not in listed and old.sku not in row.variants_kept:
                    old.active = False
                    self.inactive.append(old)
                    changed = options_changed = True
        return changed, options_changed, len(listed)

    def write(self, product_ids: list[int]) -> None:
        """Write the planned variants, their photos linked by content."""
        image_ids = {}
        for image in ProductImage.objects.filter(product_id__in=product_ids).order_by("-position"):
            image_ids[image.product_id, image.sha256] = image.pk
        now = timezone.now()
        new, changed = [], list(self.inactive)
        for product, row, old, position, sha in self.writes:
            variant = old or ProductVariant(product=product, sku=row.sku)
            values = _values(row, None, position)
            del values["image_sha"]
            for name, value in values.items():
                setattr(variant, name, value)
            variant.image_id = image_ids.get((product.pk, sha)) if sha else None
            variant.updated = now
            (changed if old else new).append(variant)
        for variant in self.inactive:
            variant.updated = now
        ProductVariant.objects.bulk_create(new)
        ProductVariant.objects.bulk_update(changed, [*WRITTEN_FIELDS, "updated"])


def _values(variant, image_sha: str | None, position: int | None = None) -> dict:
    return {
        "options": variant.options,
        "price": variant.price,
        "compare_at_price": variant.compare_at_price,
        "stock": variant.stock,
        "in_stock": variant.in_stock,
        "barcode": variant.barcode,
        "position": variant.position if position is None else position,
        "active": getattr(variant, "active", True),
        "image_sha": image_sha,
    }
