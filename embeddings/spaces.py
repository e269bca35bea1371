"""Embedding spaces: their models, the active one, their HNSW indexes."""

from __future__ import annotations

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
