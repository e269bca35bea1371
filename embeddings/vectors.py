"""Vectors of a space: images and captions encoded in batches, upserted one statement a
batch; filling a whole space; switching the active space safely."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, F, OuterRef

from catalog.images import ImageDecodeError
from catalog.models import Product, ProductImage
from embeddings.encoder import ClipEncoder
from embeddings.models import CaptionEmbedding, EmbeddingSpace, ImageEmbedding
from embeddings.pipeline import ImageSource, image_sources_encode
from embeddings.spaces import space_build_indexes, space_drop_indexes, space_encoder

logger = logging.getLogger(__name__)

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


@dataclass
class EmbedReport:
    embedded: int = 0
    skipped: int = 0
    failed: dict[int, str] = field(default_factory=dict)

    def add(self, other: EmbedReport) -> None:
        self.embedded += other.embedded
        self.skipped += other.skipped
        self.failed.update(other.failed)

    def as_dict(self) -> dict:
        return {"embedded": self.embedded, "skipped": self.skipped, "failed": self.failed}


def chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# Shoppers see only active products; draft and archived ones keep no vectors in any space,
# so no vector search (photos, similar products, captions, match) can find them.
SHOWN = Product.Status.ACTIVE


def hidden_vectors_delete(*, product_ids: Iterable[int] | None = None) -> int:
    """Delete the vectors, in every space, of the products shoppers may not see (draft,
    archived): of these products, or of all (the sweep). Returns how many rows went.

    In the caller's transaction: a product archived with catalog_changed loses its vectors
    in the same commit, so no search ever finds it in between.
    """
    hidden = Product.objects.exclude(status=SHOWN)
    if product_ids is not None:
        hidden = list(hidden.filter(pk__in=list(product_ids)).values_list("pk", flat=True))
        if not hidden:
            return 0
    else:
        hidden = hidden.values("pk")
    images, _ = ImageEmbedding.objects.filter(image__product_id__in=hidden).delete()
    captions, _ = CaptionEmbedding.objects.filter(product_id__in=hidden).delete()
    return images + captions


def _shown_locked(product_ids: Iterable[int]) -> set[int]:
    """Those of these products shoppers see, locked (in id order, as imports lock them) until
    the transaction ends. A status change made meanwhile either committed first, and its
    product is left out here, or waits for these vectors and then deletes them."""
    return set(
        Product.objects.select_for_update(no_key=True)
        .filter(pk__in=sorted(set(product_ids)), status=SHOWN)
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def image_embeddings_compute(
    *, space: EmbeddingSpace, image_ids: Iterable[int], force: bool = False
) -> EmbedReport:
    """Embed these images in `space`: decode, encode in batches, upsert one statement a batch.

    Through the pipeline (embeddings.pipeline): the next batches decode in threads while
    one encodes and is written; images with the same sha256 are encoded once. Idempotent:
    an image whose vector was computed from its current content is skipped unless `force`.
    An image that cannot be decoded gets a row with the reason and no vector, so it is
    reported as failed and never retried in a loop.
    """
    report = EmbedReport()
    images = list(
        ProductImage.objects.filter(pk__in=list(image_ids))
        .annotate(product_status=F("product__status"))
        .order_by("pk")
    )
    hidden = [image.pk for image in images if image.product_status != SHOWN]
    if hidden:  # photos of a draft or archived product: no vectors, in any space
        ImageEmbedding.objects.filter(image_id__in=hidden).delete()
        report.skipped += len(hidden)
        images = [image for image in images if image.product_status == SHOWN]
    if not force:
        done = dict(
            ImageEmbedding.objects.filter(space=space, image__in=images).values_list(
                "image_id", "source_sha256"
            )
        )
        todo = [im for im in images if done.get(im.pk) != im.sha256 or not im.sha256]
        report.skipped += len(images) - len(todo)
        images = todo
    if not images:
        return report
    encoder = space_encoder(space)
    by_pk = {image.pk: image for image in images}
    sources = [
        ImageSource(key=image.pk, read=partial(_read_image, image), content_sha256=image.sha256)
        for image in images
    ]
    encoded = image_sources_encode(
        encoder,
        sources,
        batch_size=embed_batch_size(encoder),
        threads=settings.EMBED_DECODE_THREADS,
        max_pixels=settings.MAX_IMAGE_PIXELS,
        max_aspect_ratio=settings.MAX_IMAGE_ASPECT_RATIO,
    )
    # Each batch is written while the pipeline decodes the next ones.
    for batch in encoded:
        rows = [
            ImageEmbedding(
                image=by_pk[pk],
                space=space,
                vector=vector,
                source_sha256=by_pk[pk].sha256,
                error="",
            )
            for pk, vector in zip(batch.keys, batch.vectors, strict=True)
        ]
        rows += [
            ImageEmbedding(
                image=by_pk[pk],
                space=space,
                vector=None,
                source_sha256=by_pk[pk].sha256,
                error=reason,
            )
            for pk, reason in batch.failed.items()
        ]
        with transaction.atomic():
            shown = _shown_locked(row.image.product_id for row in rows)
            rows = [row for row in rows if row.image.product_id in shown]
            ImageEmbedding.objects.bulk_create(
                rows,
                update_conflicts=True,
                unique_fields=["image", "space"],
                update_fields=["vector", "source_sha256", "error", "updated"],
            )
        report.embedded += sum(1 for row in rows if row.vector is not None)
        report.failed.update({row.image_id: row.error for row in rows if row.vector is None})
        report.skipped += len(batch.keys) + len(batch.failed) - len(rows)
    if report.failed:
        logger.warning("space %s: %d images failed: %s", space, len(report.failed), report.failed)
    return report


def embed_batch_size(encoder: ClipEncoder) -> int:
    """Distinct images per encoder batch: a GPU wants far more than a CPU."""
    if encoder.device.type == "cuda":
        return settings.EMBED_BATCH_SIZE_CUDA
    return settings.EMBED_BATCH_SIZE


def _read_image(image: ProductImage) -> bytes:
    # Through the storage, not the FieldFile: decoding threads read at once, and a
    # FieldFile keeps its open file on the model instance.
    try:
        with image.file.storage.open(image.file.name, "rb") as f:
            return f.read()
    except FileNotFoundError as exc:
        raise ImageDecodeError(f"image file is missing from storage: {image.file.name}") from exc


@dataclass(frozen=True)
class Caption:
    field: str
    lang: str
    text: str


def caption_lang(text: str) -> str:
    return "zh" if _CJK.search(text) else "en"


def product_captions(product: Product) -> list[Caption]:
    """The texts a product is known by: its title, translated titles, its description."""
    captions = [Caption("title", caption_lang(product.title), product.title)]
    titles = product.attributes.get("titles") if isinstance(product.attributes, dict) else None
    for lang, text in sorted((titles or {}).items()):
        if isinstance(text, str) and text.strip():
            captions.append(Caption(f"title_{lang}"[:40], lang[:8], text.strip()))
    if product.description.strip():
        captions.append(
            Caption("description", caption_lang(product.description), product.description.strip())
        )
    return captions


def caption_embeddings_compute(
    *, space: EmbeddingSpace, product_ids: Iterable[int], force: bool = False
) -> EmbedReport:
    """Embed the captions of these products; unchanged texts are skipped, stale ones removed.
    A draft or archived product's captions are deleted, in every space."""
    report = EmbedReport()
    products = list(Product.objects.filter(pk__in=list(product_ids)).order_by("pk"))
    hidden = [product.pk for product in products if product.status != SHOWN]
    if hidden:
        CaptionEmbedding.objects.filter(product_id__in=hidden).delete()
        report.skipped += len(hidden)
        products = [product for product in products if product.status == SHOWN]
    existing = {
        (product_id, fld): text
        for product_id, fld, text in CaptionEmbedding.objects.filter(
            space=space, product__in=products
        ).values_list("product_id", "field", "text")
    }
    todo: list[tuple[Product, Caption]] = []
    wanted: set[tuple[int, str]] = set()
    for product in products:
        for caption in product_captions(product):
            wanted.add((product.pk, caption.field))
            if force or existing.get((product.pk, caption.field)) != caption.text:
                todo.append((product, caption))
            else:
                report.skipped += 1
    stale = [key for key in existing if key not in wanted]
    if not (todo or stale):
        return report
    # Encoded before the transaction: the products stay locked only while their rows are written.
    rows = []
    if todo:
        encoder = space_encoder(space)
        for batch in chunks(todo, settings.EMBED_BATCH_SIZE * 4):
            vectors = encoder.encode_texts([caption.text for _, caption in batch])
            rows += [
                CaptionEmbedding(
                    product=product,
                    space=space,
                    field=caption.field,
                    lang=caption.lang,
                    text=caption.text,
                    vector=vector,
                )
                for (product, caption), vector in zip(batch, vectors, strict=True)
            ]
    with transaction.atomic():
        shown = _shown_locked(product.pk for product in products)
        for product_id, fld in stale:
            if product_id in shown:
                CaptionEmbedding.objects.filter(
                    space=space, product_id=product_id, field=fld
                ).delete()
        rows = [row for row in rows if row.product_id in shown]
        for batch in chunks(rows, settings.EMBED_BATCH_SIZE * 4):
            CaptionEmbedding.objects.bulk_create(
                batch,
                update_conflicts=True,
                unique_fields=["product", "space", "field"],
                update_fields=["lang", "text", "vector", "updated"],
            )
        report.embedded += len(rows)
    return report


def space_fill(
    *,
    space: EmbeddingSpace,
    missing_only: bool = False,
    batch_size: int = 256,
    restart: bool = False,
    progress: Callable[[str, int], None] | None = None,
) -> EmbedReport:
    """Compute every image and caption vector of `space`, in batches, resumably.

    With `missing_only`, only rows without a vector are done, which resumes by itself.
    A full pass records its position after each batch on the space, so running it again
    after an interruption continues where it stopped (`restart` starts over).
    """
    report = EmbedReport()
    cursor = {} if (missing_only or restart) else dict(space.reindex_cursor)
    passes = [
        (
            "images",
            ProductImage.objects.filter(product__status=SHOWN),
            "embeddings",
            lambda ids: image_embeddings_compute(
                space=space, image_ids=ids, force=not missing_only
            ),
        ),
        (
            "captions",
            Product.objects.filter(status=SHOWN),
            "captions",
            lambda ids: caption_embeddings_compute(
                space=space, product_ids=ids, force=not missing_only
            ),
        ),
    ]
    for kind, queryset, related, compute in passes:
        if missing_only:
            queryset = queryset.exclude(**{f"{related}__space": space})
        last_id = cursor.get(kind, 0)
        while True:
            ids = list(
                queryset.filter(pk__gt=last_id)
                .order_by("pk")
                .values_list("pk", flat=True)[:batch_size]
            )
            if not ids:
                break
            report.add(compute(ids))
            last_id = ids[-1]
            if not missing_only:
                cursor[kind] = last_id
                EmbeddingSpace.objects.filter(pk=space.pk).update(reindex_cursor=cursor)
            if progress:
                progress(kind, len(ids))
    if not missing_only:
        EmbeddingSpace.objects.filter(pk=space.pk).update(reindex_cursor={})
    space.reindex_cursor = {}
    return report


def space_activate(
    *,
    space: EmbeddingSpace,
    batch_size: int = 256,
    progress: Callable[[str, int], None] | None = None,
    fill: Callable[[], object] | None = None,
) -> EmbeddingSpace:
    """Make `space` the one search answers from, without search ever going empty or mixed.

    The space is filled first (only missing vectors, so this also serves rollback to an
    older space; `fill` replaces the fill in process, e.g. by one shared with every worker:
    `reindex.space_activate_fanout`), its indexes are built, and only then do the two spaces
    swap status in one transaction. Until that commit every query reads the old space;
    after it, every query reads the new one. Uploads that landed during the switch are
    caught up after.
    """
    space.refresh_from_db(fields=["status"])
    if space.status == EmbeddingSpace.Status.ACTIVE:
        return space
    # Load (and checksum) the model before touching anything: a bad checkpoint fails here.
    space_encoder(space)
    EmbeddingSpace.objects.filter(pk=space.pk).update(status=EmbeddingSpace.Status.FILLING)
    if fill is None:
        space_fill(space=space, missing_only=True, batch_size=batch_size, progress=progress)
    else:
        fill()
    space_build_indexes(space)
    with transaction.atomic():
        spaces = EmbeddingSpace.objects.select_for_update()
        previous = spaces.filter(status=EmbeddingSpace.Status.ACTIVE).first()
        if previous is not None:
            previous.status = EmbeddingSpace.Status.RETIRED
            previous.save(update_fields=["status"])
        space = spaces.get(pk=space.pk)
        space.status = EmbeddingSpace.Status.ACTIVE
        space.save(update_fields=["status"])
    if previous is not None:
        # Vectors stay for rollback; the index is rebuilt if the space comes back.
        space_drop_indexes(previous)
    space_fill(space=space, missing_only=True, batch_size=batch_size)
    logger.info("space %s is active (was %s)", space, previous)
    return space


def space_prepare(
    *,
    space: EmbeddingSpace,
    batch_size: int = 256,
    progress: Callable[[str, int], None] | None = None,
    fill: Callable[[], object] | None = None,
) -> EmbeddingSpace:
    """Fill a candidate (missing vectors only) and build its indexes, leaving it a candidate:
    an online interleaving test (search.interleaving) ranks with it beside the active space,
    and space_activate promotes it later with little left to do. `fill` as in
    space_activate (`reindex.space_prepare_fanout` shares it with every worker)."""
    space.refresh_from_db(fields=["status"])
    if space.status != EmbeddingSpace.Status.CANDIDATE:
        raise ValueError(f"space {space.name} is {space.status}, not a candidate")
    space_encoder(space)  # a bad checkpoint fails before anything is written
    if fill is None:
        space_fill(space=space, missing_only=True, batch_size=batch_size, progress=progress)
    else:
        fill()
    space_build_indexes(space)
    return space


def space_is_filled(space: EmbeddingSpace) -> bool:
    """Every image and product has a current vector in `space`. For starting a test, not
    per request: with nothing missing it reads every image's and product's key once."""
    missing = embeddings_missing(space=space, limit=1)
    return not (missing.image_ids or missing.product_ids)


@dataclass(frozen=True)
class MissingVectors:
    image_ids: list[int]
    product_ids: list[int]


def embeddings_missing(*, space: EmbeddingSpace, limit: int) -> MissingVectors:
    """The images and products shoppers see that have no current vector in `space` (for the
    sweep; draft and archived products have none).

    An image is missing with no row in the space, or with a row computed from other
    content (its photo was replaced). A failed image has a row for its current content,
    so it is not missing: a corrupt file is never retried in a loop. At most `limit`
    images and `limit` products per call, oldest first.
    """
    current = ImageEmbedding.objects.filter(
        space=space, image=OuterRef("pk"), source_sha256=OuterRef("sha256")
    )
    image_ids = list(
        ProductImage.objects.filter(~Exists(current), product__status=SHOWN)
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )
    captions = CaptionEmbedding.objects.filter(space=space, product=OuterRef("pk"))
    product_ids = list(
        Product.objects.filter(~Exists(captions), status=SHOWN)
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )
    return MissingVectors(image_ids=image_ids, product_ids=product_ids)
