"""Embedding spaces: their models, the active one, their HNSW indexes."""

from __future__ import annotations

from contextlib import contextmanager

from django.conf import settings
from django.db import IntegrityError, connection, transaction

from embeddings.encoder import ClipEncoder, ModelSpec, file_sha256, get_encoder, model_embed_dim
from embeddings.models import CaptionEmbedding, EmbeddingSpace, ImageEmbedding


class NoActiveSpace(LookupError):
    """No embedding space is active: nothing can be searched until one is."""


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
    return get_encoder(
        space_spec(space),
        device=settings.CLIP_DEVICE or None,
        cpu_precision=settings.CLIP_CPU_PRECISION,
    )


def space_default_spec() -> tuple[str, ModelSpec]:
    """The first space, from settings: CLIP_MODEL with CLIP_PRETRAINED or CLIP_CHECKPOINT."""
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
    with transaction.atomic():
        space = EmbeddingSpace.objects.create(
            name=name,
            architecture=spec.architecture,
            source=source,
            pretrained=spec.pretrained,
            checkpoint=spec.checkpoint,
            checkpoint_sha256=spec.checkpoint_sha256,
            seed=spec.seed,
            embed_dim=model_embed_dim(spec.architecture),
            status=status,
            parent=parent,
            metrics=metrics or {},
        )
        if build_indexes:
            space_build_indexes(space)
    return space


def space_active() -> EmbeddingSpace:
    """The space search answers from. A read: it never creates one (see space_ensure_default)."""
    space = EmbeddingSpace.objects.filter(status=EmbeddingSpace.Status.ACTIVE).first()
    if space is None:
        raise NoActiveSpace(
            "no embedding space is active: run `manage.py migrate` (it creates the default "
            "space from CLIP_MODEL) or `manage.py activate_space NAME`"
        )
    return space


def space_active_or_none() -> EmbeddingSpace | None:
    """The active space, or None on an install that has none yet (pages that can do without)."""
    return EmbeddingSpace.objects.filter(status=EmbeddingSpace.Status.ACTIVE).first()


def space_ensure_default() -> EmbeddingSpace:
    """The active space, creating the one that settings describe on a new install.

    Run after migrations (EmbeddingsConfig connects it to post_migrate) and by prepare_demo;
    its size comes from the architecture's config, so no model is loaded for it.
    """
    active = EmbeddingSpace.objects.filter(status=EmbeddingSpace.Status.ACTIVE).first()
    if active is not None:
        return active
    name, spec = space_default_spec()
    existing = EmbeddingSpace.objects.filter(name=name).first()
    if existing is not None:  # the default space came back after every other was retired
        EmbeddingSpace.objects.filter(pk=existing.pk).update(status=EmbeddingSpace.Status.ACTIVE)
        existing.refresh_from_db()
        space_build_indexes(existing)
        return existing
    try:
        return space_create(name=name, spec=spec, status=EmbeddingSpace.Status.ACTIVE)
    except IntegrityError:
        # Another process created it first: use theirs.
        return EmbeddingSpace.objects.get(status=EmbeddingSpace.Status.ACTIVE)


def _index_names(space: EmbeddingSpace) -> dict[str, str]:
    """{the space's partition of each vector table: its HNSW index}."""
    return {
        space_partition(ImageEmbedding, space): f"emb_image_hnsw_s{int(space.pk)}",
        space_partition(CaptionEmbedding, space): f"emb_caption_hnsw_s{int(space.pk)}",
    }


def space_partition(model: type[ImageEmbedding | CaptionEmbedding], space: EmbeddingSpace) -> str:
    """The table that holds `space`'s rows of `model` (embeddings migration 0006: vectors are
    partitioned by space; a trigger creates a space's partitions with it)."""
    return f"{model._meta.db_table}_s{int(space.pk)}"


def space_build_indexes(space: EmbeddingSpace) -> None:
    """An HNSW index on each of the space's partitions, on its own `vector::halfvec(n)`.

    Queries repeat the same expression and say `space_id = <id>`, which prunes them to the
    space's partition; other spaces' rows are in other tables. Outside a transaction the
    build is CONCURRENTLY, so uploads keep being embedded while it runs.
    """
    concurrently = "" if connection.in_atomic_block else "CONCURRENTLY"
    with connection.cursor() as cursor, _pending_checks_run(cursor):
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
                f"((vector::{space.vector_type}) halfvec_cosine_ops)"
            )


@contextmanager
def _pending_checks_run(cursor):
    """Postgres refuses DDL on a table while deferred foreign key checks of the transaction
    are pending on it: run them first, and defer again after (as every key here is)."""
    if connection.in_atomic_block:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    yield
    if connection.in_atomic_block:
        cursor.execute("SET CONSTRAINTS ALL DEFERRED")


def space_drop_indexes(space: EmbeddingSpace) -> None:
    # CONCURRENTLY when possible: a plain DROP INDEX would lock out searches meanwhile.
    concurrently = "" if connection.in_atomic_block else "CONCURRENTLY"
    with connection.cursor() as cursor:
        for index in _index_names(space).values():
            cursor.execute(f"DROP INDEX {concurrently} IF EXISTS {index}")


class SpaceInUse(ValueError):
    """The space is live or being filled: searches or a switch read it."""


def space_delete(*, space: EmbeddingSpace) -> None:
    """Delete a space that searches no longer read, with all its vectors.

    Its partitions are dropped first: no vector is deleted row by row. Outside a transaction
    they are detached CONCURRENTLY before, so the live space's searches and uploads never
    wait for a lock on the shared tables; inside one (the admin's delete) the drop holds
    that lock until the commit, a moment later.
    """
    space.refresh_from_db(fields=["status"])
    if space.status in (EmbeddingSpace.Status.ACTIVE, EmbeddingSpace.Status.FILLING):
        raise SpaceInUse(f"space {space.name} is {space.status}: activate another one first")
    with connection.cursor() as cursor, _pending_checks_run(cursor):
        for model in (ImageEmbedding, CaptionEmbedding):
            partition = space_partition(model, space)
            cursor.execute(
                "SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass(%s)", [partition]
            )
            if cursor.fetchone() and not connection.in_atomic_block:
                cursor.execute(
                    f"ALTER TABLE {model._meta.db_table} DETACH PARTITION {partition} CONCURRENTLY"
                )
            cursor.execute(f"DROP TABLE IF EXISTS {partition}")
    space.delete()  # its vectors' cascade finds no partition left to delete from
