"""Writes of the embeddings app: spaces, their indexes, and vectors upserted in batches."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, OuterRef

from catalog.images import ImageDecodeError
from catalog.models import Product, ProductImage
from embeddings.encoder import ClipEncoder, ModelSpec, get_encoder
from embeddings.models import CaptionEmbedding, EmbeddingSpace, ImageEmbedding

logger = logging.getLogger(__name__)

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


# --- spaces -----------------------------------------------------------------------------


def space_spec(space: EmbeddingSpace) -> ModelSpec:
    return ModelSpec(
        architecture=space.architecture,
        pretrained=space.pretrained,
        checkpoint=space.checkpoint,
        checkpoint_sha256=space.checkpoint_sha256,
        seed=space.seed,
    )


def space_encoder(space: EmbeddingSpace) -> ClipEncoder:
    """The process-wide encoder of a space (loaded once, then reused)."""
    return get_encoder(space_spec(space), device=settings.CLIP_DEVICE or None)


def space_default_spec() -> tuple[str, ModelSpec]:
    """The first space, from settings: CLIP_MODEL with CLIP_PRETRAINED or CLIP_CHECKPOINT."""
    from embeddings.encoder import file_sha256

    model = settings.CLIP_MODEL
    if settings.CLIP_PRETRAINED:
        spec = ModelSpec(architecture=model, pretrained=settings.CLIP_PRETRAINED)
        return f"{model}@{settings.CLIP_PRETRAINED}", spec
    if settings.CLIP_CHECKPOINT:
        digest = file_sha256(settings.CLIP_CHECKPOINT)
        spec = ModelSpec(
            architecture=model, checkpoint=settings.CLIP_CHECKPOINT, checkpoint_sha256=digest
        )
        return f"{model}@{digest[:12]}", spec
    return f"{model}@random-seed{settings.CLIP_SEED}", ModelSpec(model, seed=settings.CLIP_SEED)


def space_create(
    *,
    name: str,
    spec: ModelSpec,
    status: str = EmbeddingSpace.Status.CANDIDATE,
    parent: EmbeddingSpace | None = None,
    build_indexes: bool = True,
    metrics: dict | None = None,
) -> EmbeddingSpace:
    if spec.pretrained:
        source = EmbeddingSpace.Source.PRETRAINED
    elif spec.checkpoint:
        source = EmbeddingSpace.Source.CHECKPOINT
    else:
        source = EmbeddingSpace.Source.RANDOM
    encoder = get_encoder(spec, device=settings.CLIP_DEVICE or None)
    with transaction.atomic():
        space = EmbeddingSpace.objects.create(
            name=name,
            architecture=spec.architecture,
            source=source,
            pretrained=spec.pretrained,
            checkpoint=spec.checkpoint,
            checkpoint_sha256=spec.checkpoint_sha256,
            seed=spec.seed,
            embed_dim=encoder.embed_dim,
            status=status,
            parent=parent,
            metrics=metrics or {},
        )
        if build_indexes:
            space_build_indexes(space)
    return space


def space_get_active() -> EmbeddingSpace:
    """The active space; on a new install, the one that settings describe."""
    space = EmbeddingSpace.objects.filter(status=EmbeddingSpace.Status.ACTIVE).first()
    if space is not None:
        return space
    name, spec = space_default_spec()
    try:
        return space_create(name=name, spec=spec, status=EmbeddingSpace.Status.ACTIVE)
    except IntegrityError:
        # Another process created it first: use theirs.
        return EmbeddingSpace.objects.get(status=EmbeddingSpace.Status.ACTIVE)


def _index_names(space: EmbeddingSpace) -> dict[str, str]:
    return {
        ImageEmbedding._meta.db_table: f"emb_image_hnsw_s{int(space.pk)}",
        CaptionEmbedding._meta.db_table: f"emb_caption_hnsw_s{int(space.pk)}",
    }


def space_build_indexes(space: EmbeddingSpace) -> None:
    """A partial HNSW index per table on the space's own `vector::halfvec(n)` expression.

    Queries repeat the same expression and `space_id = <id>` predicate so the planner
    matches this index; other spaces' rows are not in it at all. Outside a transaction
    the build is CONCURRENTLY, so uploads keep being embedded while it runs.
    """
    concurrently = "" if connection.in_atomic_block else "CONCURRENTLY"
    with connection.cursor() as cursor:
        if connection.in_atomic_block:
            # Postgres refuses CREATE INDEX while deferred FK checks of this transaction
            # are pending; run them now (and restore deferral after).
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        for table, index in _index_names(space).items():
            cursor.execute(
                "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE c.relname = %s",
                [index],
            )
            row = cursor.fetchone()
            if row and not row[0]:  # left invalid by an interrupted concurrent build
                cursor.execute(f"DROP INDEX {concurrently} {index}")
            cursor.execute(
                f"CREATE INDEX {concurrently} IF NOT EXISTS {index} ON {table} USING hnsw "
                f"((vector::{space.vector_type}) halfvec_cosine_ops) "
                f"WHERE space_id = {int(space.pk)}"
            )
        if connection.in_atomic_block:
            cursor.execute("SET CONSTRAINTS ALL DEFERRED")


def space_drop_indexes(space: EmbeddingSpace) -> None:
    # CONCURRENTLY when possible: a plain DROP INDEX would lock out searches meanwhile.
    concurrently = "" if connection.in_atomic_block else "CONCURRENTLY"
    with connection.cursor() as cursor:
        for index in _index_names(space).values():
            cursor.execute(f"DROP INDEX {concurrently} IF EXISTS {index}")


# --- vectors ------------------------------------------------------------------------------


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


def _chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def image_embeddings_compute(
    *, space: EmbeddingSpace, image_ids: Iterable[int], force: bool = False
) -> EmbedReport:
    """Embed these images in `space`: decode, encode in batches, upsert one statement a batch.

    Idempotent: an image whose vector was computed from its current content is skipped
    unless `force`. An image that cannot be decoded gets a row with the reason and no
    vector, so it is reported as failed and never retried in a loop.
    """
    report = EmbedReport()
    images = list(ProductImage.objects.filter(pk__in=list(image_ids)).order_by("pk"))
    if not force:
        done = dict(
            ImageEmbedding.objects.filter(space=space, image__in=images).values_list(
                "image_id", "source_sha256"
            )
        )
        todo = [im for im in images if done.get(im.pk) != im.sha256 or not im.sha256]
        report.skipped = len(images) - len(todo)
        images = todo
    if not images:
        return report
    encoder = space_encoder(space)
    for batch in _chunks(images, settings.EMBED_BATCH_SIZE):
        decoded, rows = [], []
        for image in batch:
            try:
                pixels = _read_image(image, encoder)
            except ImageDecodeError as exc:
                report.failed[image.pk] = str(exc)
                rows.append(
                    ImageEmbedding(
                        image=image,
                        space=space,
                        vector=None,
                        source_sha256=image.sha256,
                        error=str(exc),
                    )
                )
                continue
            decoded.append((image, pixels))
        vectors = encoder.encode_images([pixels for _, pixels in decoded])
        for (image, _), vector in zip(decoded, vectors, strict=True):
            rows.append(
                ImageEmbedding(
                    image=image, space=space, vector=vector, source_sha256=image.sha256, error=""
                )
            )
        ImageEmbedding.objects.bulk_create(
            rows,
            update_conflicts=True,
            unique_fields=["image", "space"],
            update_fields=["vector", "source_sha256", "error", "updated"],
        )
        report.embedded += len(decoded)
    if report.failed:
        logger.warning("space %s: %d images failed: %s", space, len(report.failed), report.failed)
    return report


def _read_image(image: ProductImage, encoder: ClipEncoder):
    try:
        with image.file.open("rb") as f:
            return encoder.decode_image(f, max_pixels=settings.MAX_IMAGE_PIXELS)
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
    """Embed the captions of these products; unchanged texts are skipped, stale ones removed."""
    report = EmbedReport()
    products = list(Product.objects.filter(pk__in=list(product_ids)).order_by("pk"))
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
    with transaction.atomic():
        stale = [key for key in existing if key not in wanted]
        for product_id, fld in stale:
            CaptionEmbedding.objects.filter(space=space, product_id=product_id, field=fld).delete()
        if not todo:
            return report
        encoder = space_encoder(space)
        for batch in _chunks(todo, settings.EMBED_BATCH_SIZE * 4):
            vectors = encoder.encode_texts([caption.text for _, caption in batch])
            CaptionEmbedding.objects.bulk_create(
                [
                    CaptionEmbedding(
                        product=product,
                        space=space,
                        field=caption.field,
                        lang=caption.lang,
                        text=caption.text,
                        vector=vector,
                    )
                    for (product, caption), vector in zip(batch, vectors, strict=True)
                ],
                update_conflicts=True,
                unique_fields=["product", "space", "field"],
                update_fields=["lang", "text", "vector", "updated"],
            )
            report.embedded += len(batch)
    return report


def _task_sender(task, *args) -> partial:
    """`task.delay(*args)`, named. Django's robust on_commit logs a failed callback by its
    __qualname__, which a bare partial lacks: the log call itself would raise, and fail the
    committed upload that `robust` is there to protect."""
    send = partial(task.delay, *args)
    send.__qualname__ = f"{task.name}.delay"
    return send


def embeddings_queue(*, image_ids: Iterable[int] = (), product_ids: Iterable[int] = ()) -> None:
    """Queue embedding of new or changed images and captions once the transaction commits.

    One task per batch, never one per image. `robust`: an unreachable broker must not
    fail an upload that has already committed; the periodic sweep catches up.
    """
    from embeddings.tasks import embed_captions, embed_images

    image_ids, product_ids = sorted(set(image_ids)), sorted(set(product_ids))
    for batch in _chunks(image_ids, settings.EMBED_BATCH_SIZE):
        transaction.on_commit(_task_sender(embed_images, batch), robust=True)
    for batch in _chunks(product_ids, settings.EMBED_BATCH_SIZE * 4):
        transaction.on_commit(_task_sender(embed_captions, batch), robust=True)


# --- filling a space ------------------------------------------------------------------------


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
            ProductImage.objects.all(),
            "embeddings",
            lambda ids: image_embeddings_compute(
                space=space, image_ids=ids, force=not missing_only
            ),
        ),
        (
            "captions",
            Product.objects.all(),
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
) -> EmbeddingSpace:
    """Make `space` the one search answers from, without search ever going empty or mixed.

    The space is filled first (only missing vectors, so this also serves rollback to an
    older space), its indexes are built, and only then do the two spaces swap status in
    one transaction. Until that commit every query reads the old space; after it, every
    query reads the new one. Uploads that landed during the switch are caught up after.
    """
    space.refresh_from_db(fields=["status"])
    if space.status == EmbeddingSpace.Status.ACTIVE:
        return space
    # Load (and checksum) the model before touching anything: a bad checkpoint fails here.
    space_encoder(space)
    EmbeddingSpace.objects.filter(pk=space.pk).update(status=EmbeddingSpace.Status.FILLING)
    space_fill(space=space, missing_only=True, batch_size=batch_size, progress=progress)
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


# --- healing lost messages ------------------------------------------------------------------


@dataclass
class SweepReport:
    images: int = 0
    products: int = 0

    def as_dict(self) -> dict:
        return {"images": self.images, "products": self.products}


def embeddings_sweep_missing(*, space: EmbeddingSpace, limit: int) -> SweepReport:
    """Queue embedding of the images and products that have no current vector in `space`.

    An image is missing with no row in the space, or with a row computed from other
    content (its photo was replaced). A failed image has a row for its current content,
    so it is not missing: a corrupt file is never retried in a loop. At most `limit`
    images and `limit` products per call, oldest first.
    """
    current = ImageEmbedding.objects.filter(
        space=space, image=OuterRef("pk"), source_sha256=OuterRef("sha256")
    )
    image_ids = list(
        ProductImage.objects.filter(~Exists(current))
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )
    captions = CaptionEmbedding.objects.filter(space=space, product=OuterRef("pk"))
    product_ids = list(
        Product.objects.filter(~Exists(captions))
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )
    embeddings_queue(image_ids=image_ids, product_ids=product_ids)
    return SweepReport(images=len(image_ids), products=len(product_ids))
