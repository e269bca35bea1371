"""Attribute values read from photos: recorded as suggestions, reviewed in the admin, and
counted as facet values and filters once accepted, never over a value that was entered.

The catalog does not read photos: embeddings.inference predicts and calls
`inferred_attributes_record`. Accepted values (confirmed, or at least as sure as their
facet's `inferred_threshold`) are copied into `Product.inferred_attributes`, which the
generated `facet_keys` read below the product's own `attributes` (migration 0011).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from catalog.models import Facet, InferredAttribute, Product


@dataclass(frozen=True)
class Guess:
    """One value read from a product's photos."""

    name: str
    value: str
    confidence: float


def product_entered_names(product: Product) -> set[str]:
    """The attributes a product has values for, lower case: its non-empty `attributes` and
    the names of its options ("Colour" of its variants)."""
    attributes = product.attributes if isinstance(product.attributes, dict) else {}
    names = {
        str(name).strip().lower()
        for name, value in attributes.items()
        if value not in (None, "", [], {})
    }
    names |= {str(o.get("name", "")).strip().lower() for o in product.options or []}
    if product.category_id:
        names.add("category")
    return names


def inferred_thresholds() -> dict[str, float]:
    """The facets' thresholds by lower-case name (facets without one are left out)."""
    return {
        name.strip().lower(): threshold
        for name, threshold in Facet.objects.filter(inferred_threshold__isnull=False).values_list(
            "name", "inferred_threshold"
        )
    }


def _accepted(row: InferredAttribute, thresholds: Mapping[str, float]) -> bool:
    if row.status == InferredAttribute.Status.CONFIRMED:
        return True
    threshold = thresholds.get(row.name.lower())
    return (
        row.status == InferredAttribute.Status.SUGGESTED
        and threshold is not None
        and row.confidence >= threshold
    )


def inferred_attributes_sync(*, product_ids: Iterable[int] | None = None) -> int:
    """Copy the accepted inferred values of these products (all: None) into their
    `inferred_attributes`, leaving out any name the product has a value of its own for, and
    drop the unreviewed suggestions such a value made moot. Returns the products changed."""
    thresholds = inferred_thresholds()
    products = Product.objects.only("attributes", "options", "category_id", "inferred_attributes")
    if product_ids is not None:
        products = products.filter(pk__in=list(product_ids))
    else:
        products = products.filter(Q(inferred__isnull=False) | ~Q(inferred_attributes={}))
        products = products.distinct()
    changed = 0
    with transaction.atomic():
        for product in products.order_by("pk").prefetch_related("inferred"):
            entered = product_entered_names(product)
            moot = [
                row.pk
                for row in product.inferred.all()
                if row.name.lower() in entered and row.status == InferredAttribute.Status.SUGGESTED
            ]
            if moot:
                InferredAttribute.objects.filter(pk__in=moot).delete()
            accepted = {
                row.name: row.value
                for row in product.inferred.all()
                if row.name.lower() not in entered and _accepted(row, thresholds)
            }
            if accepted != product.inferred_attributes:
                Product.objects.filter(pk=product.pk).update(inferred_attributes=accepted)
                changed += 1
    return changed


def _reviewed_stays(row: InferredAttribute, value: str) -> bool:
    """A confirmed value stays; a rejected one stays rejected unless the photos now read
    another value."""
    if row.status == InferredAttribute.Status.CONFIRMED:
        return True
    return row.status == InferredAttribute.Status.REJECTED and row.value == value


@transaction.atomic
def inferred_attributes_record(
    *, space: str, guesses: Mapping[int, Sequence[Guess]]
) -> list[InferredAttribute]:
    """Record what was read from the photos of these products (product id -> guesses).

    A name the product has a value for is skipped: a suggestion never stands beside, let
    alone over, what a merchandiser entered. A confirmed value stays as it is; a rejected
    one stays rejected unless the photos now say something else; a suggestion is replaced
    by the newer reading."""
    products = {
        p.pk: p
        for p in Product.objects.filter(pk__in=list(guesses)).only(
            "attributes", "options", "category_id"
        )
    }
    existing = {
        (row.product_id, row.name): row
        for row in InferredAttribute.objects.filter(product_id__in=list(products))
    }
    written = []
    for product_id, product_guesses in guesses.items():
        product = products.get(product_id)
        if product is None:
            continue
        entered = product_entered_names(product)
        for guess in product_guesses:
            if guess.name.lower() in entered:
                continue
            row = existing.get((product_id, guess.name))
            if row is None:
                row = InferredAttribute(product_id=product_id, name=guess.name)
            elif _reviewed_stays(row, guess.value):
                continue
            row.value, row.confidence, row.space = guess.value, guess.confidence, space
            row.status = InferredAttribute.Status.SUGGESTED
            row.save()
            written.append(row)
    inferred_attributes_sync(product_ids=list(products))
    return written


@transaction.atomic
def inferred_attributes_review(
    *, ids: Iterable[int], status: str, value: str | None = None, user=None
) -> int:
    """Confirm or reject these inferred values in bulk; with `value`, correct them to it
    (and confirm). Returns how many changed."""
    if status not in InferredAttribute.Status.values:
        raise ValueError(f"status must be one of {', '.join(InferredAttribute.Status.values)}")
    if value is not None:
        value = value.strip()
        if not value:
            raise ValueError("enter the value to correct to")
    rows = InferredAttribute.objects.select_for_update().filter(pk__in=list(ids))
    product_ids = list(rows.values_list("product_id", flat=True))
    fields = {"status": status, "reviewed_by": user, "updated": timezone.now()}
    if value is not None:
        fields["value"] = value
    changed = rows.update(**fields)
    inferred_attributes_sync(product_ids=product_ids)
    return changed
