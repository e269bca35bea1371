"""Attributes read from product photos (embeddings.zero_shot) for products that miss them,
recorded as suggestions in the catalog (catalog.inferred), never over an entered value.

Run by the embed worker after a product's photos are embedded (upload, import) and by
`manage.py infer_attributes` for the whole catalog."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db import connection

from catalog.inferred import Guess, inferred_attributes_record, product_entered_names
from catalog.models import InferredAttribute, Product
from embeddings.models import EmbeddingSpace
from embeddings.zero_shot import (
    CATEGORY,
    STORED_ATTRIBUTES,
    attribute_values,
    attributes_predict,
)
from embeddings.zero_shot import zero_shot_attributes as _zero_shot_attributes

# What a product can store and so be missing: "audience" is read from the category tree.
INFERRED_ATTRIBUTES = (*STORED_ATTRIBUTES, CATEGORY)


@dataclass
class InferReport:
    products: int = 0  # products looked at
    predicted: int = 0  # of them, with photos and something missing
    suggested: int = 0  # values recorded (new or changed)
    counted: int = 0  # values of these products that count as facet values (accepted)
    skipped: str = ""  # why nothing was read, when so

    def add(self, other: InferReport) -> None:
        self.products += other.products
        self.predicted += other.predicted
        self.suggested += other.suggested
        self.counted += other.counted
        self.skipped = self.skipped or other.skipped


def inferable_attributes() -> tuple[str, ...]:
    """The attributes photos can fill in this catalog (it has two values or more of each)."""
    return tuple(n for n in _zero_shot_attributes() if n in INFERRED_ATTRIBUTES)


def product_photo_vectors(*, space: EmbeddingSpace, product_ids: Iterable[int]):
    """Each product's photos in `space` as one unit vector (their mean): {id: vector}."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT i.product_id, e.vector::text FROM embeddings_imageembedding e "
            "JOIN catalog_productimage i ON i.id = e.image_id "
            "WHERE e.space_id = %s AND e.vector IS NOT NULL AND i.product_id = ANY(%s)",
            [space.pk, list(product_ids)],
        )
        rows = cursor.fetchall()
    sums: dict[int, np.ndarray] = {}
    for product_id, text in rows:
        vector = np.asarray(json.loads(text), dtype=np.float32)
        sums[product_id] = sums.get(product_id, 0) + vector
    return {pid: v / max(float(np.linalg.norm(v)), 1e-12) for pid, v in sums.items()}


def attributes_infer(
    *, space: EmbeddingSpace, product_ids: Iterable[int], skip_recorded: bool = False
) -> InferReport:
    """Read the missing attributes of these products from their photos and record them.

    `skip_recorded`: leave out what was read before (any status), so a stopped run over the
    catalog resumes where it stopped; the worker reads again, as new photos may say more.
    An untrained (random) space reads nothing: its guesses would be noise."""
    product_ids = sorted(set(product_ids))
    report = InferReport(products=len(product_ids))
    if space.source == EmbeddingSpace.Source.RANDOM:
        report.skipped = f"space {space.name} is untrained (random weights)"
        return report
    names = inferable_attributes()
    if not names or not product_ids:
        return report
    products = Product.objects.filter(pk__in=product_ids, status=Product.Status.ACTIVE).only(
        "attributes", "options", "category_id"
    )
    recorded = set()
    if skip_recorded:
        recorded = set(
            InferredAttribute.objects.filter(product_id__in=product_ids).values_list(
                "product_id", "name"
            )
        )
    missing = {}
    for product in products:
        entered = product_entered_names(product)
        wanted = [n for n in names if n not in entered and (product.pk, n) not in recorded]
        if wanted:
            missing[product.pk] = wanted
    vectors = product_photo_vectors(space=space, product_ids=missing)
    ids = [pid for pid in missing if pid in vectors]
    report.predicted = len(ids)
    if not ids:
        return report
    predicted = attributes_predict(
        space=space,
        image_vectors=np.stack([vectors[pid] for pid in ids]),
        names=sorted({n for pid in ids for n in missing[pid]}),
    )
    # A reading hardly surer than a guess among the values is noise to a reviewer: left out.
    floors = {n: settings.INFER_ATTRIBUTES_MIN_LIFT / len(attribute_values(n)) for n in names}
    guesses = {
        pid: [
            Guess(n, guess[n].value, guess[n].confidence)
            for n in missing[pid]
            if guess[n].confidence >= floors[n]
        ]
        for pid, guess in zip(ids, predicted, strict=True)
    }
    written = inferred_attributes_record(space=space.name, guesses=guesses)
    report.suggested = len(written)
    counted = Product.objects.filter(pk__in=ids).values_list("inferred_attributes", flat=True)
    report.counted = sum(len(values) for values in counted)
    return report


def attributes_infer_for_images(*, space: EmbeddingSpace, image_ids: Iterable[int]) -> InferReport:
    """The worker's hook: after these photos are embedded in the active space, read the
    missing attributes of their products."""
    if space.status != EmbeddingSpace.Status.ACTIVE or space.source == EmbeddingSpace.Source.RANDOM:
        return InferReport()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT product_id FROM catalog_productimage WHERE id = ANY(%s)",
            [list(image_ids)],
        )
        product_ids = [row[0] for row in cursor.fetchall()]
    return attributes_infer(space=space, product_ids=product_ids)
