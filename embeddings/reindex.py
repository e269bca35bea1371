"""Fanned-out fills of a space: the work split into chunks of ids on the `embed` queue.

With a broker, a fill (`reindex_embeddings`, the fill of a promoted space) becomes rows of
`ReindexChunk`, one Celery task per chunk, so any number of workers on any number of
machines share it. Progress, resumption and the re-queueing of a dead worker's share all
come from those rows, never from the broker: a lost message or a killed worker loses
nothing. Each chunk upserts through `vectors` (one row per object and space), and a chunk
that runs again only does what is missing, so every vector is written once.

Without a broker (tasks run in process), fills run here as `vectors.space_fill` does.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import (
    Count,
    DateTimeField,
    Exists,
    ExpressionWrapper,
    F,
    OuterRef,
    Q,
    QuerySet,
    Sum,
)
from django.db.models.functions import Now

from catalog.models import Product, ProductImage
from embeddings.models import CaptionEmbedding, EmbeddingSpace, ImageEmbedding, ReindexChunk
from embeddings.spaces import space_encoder
from embeddings.vectors import (
    SHOWN,
    EmbedReport,
    caption_embeddings_compute,
    image_embeddings_compute,
    space_activate,
    space_prepare,
)
from shop_search.celery import app

logger = logging.getLogger(__name__)

# embeddings.tasks registers the task under this name; sent by name, because the tasks
# module imports this one (a service importing its task back would close a cycle).
REINDEX_CHUNK_TASK = "embeddings.tasks.reindex_chunk"
# A chunk that failed this many times with an error is reported, not waited for forever.
REINDEX_CHUNK_MAX_ERRORS = 5

Status = ReindexChunk.Status
Kind = ReindexChunk.Kind


def fanout_available() -> bool:
    """A broker is configured: fills fan out to the workers instead of running here."""
    return not app.conf.task_always_eager


def _passes(space: EmbeddingSpace, missing_only: bool) -> list[tuple[str, QuerySet]]:
    """(kind, the ids to plan) for images, then captions: of the products shoppers see."""
    images = ProductImage.objects.filter(product__status=SHOWN)
    products = Product.objects.filter(status=SHOWN)
    if missing_only:
        # NOT EXISTS, probed per row through the unique (object, space) index: a page of ids
        # costs its own rows, not a pass over every vector of the space.
        images = images.filter(
            ~Exists(ImageEmbedding.objects.filter(space=space, image=OuterRef("pk")))
        )
        products = products.filter(
            ~Exists(CaptionEmbedding.objects.filter(space=space, product=OuterRef("pk")))
        )
    return [(Kind.IMAGES, images), (Kind.CAPTIONS, products)]


def _id_pages(queryset: QuerySet, size: int) -> Iterator[list[int]]:
    """The queryset's ids in ascending pages, by keyset (no OFFSET over millions of rows)."""
    last_id = 0
    while True:
        ids = list(
            queryset.filter(pk__gt=last_id).order_by("pk").values_list("pk", flat=True)[:size]
        )
        if not ids:
            return
        yield ids
        last_id = ids[-1]


@dataclass(frozen=True)
class ReindexPlan:
    chunks: int
    resumed: bool  # an unfinished reindex of the space was found and goes on
    missing_only: bool


def reindex_plan(
    *, space: EmbeddingSpace, missing_only: bool, chunk_size: int, restart: bool = False
) -> ReindexPlan:
    """The chunks of a fill of `space`: the unfinished ones if there are (resumption), else new.

    A full fill has a range of ids per chunk; a fill of missing vectors the list of ids
    that had none when it was planned. Chunks of a finished reindex are replaced.
    """
    with transaction.atomic():
        # Two commands starting at once plan once: the second waits here, then resumes.
        EmbeddingSpace.objects.select_for_update().filter(pk=space.pk).first()
        chunks = ReindexChunk.objects.filter(space=space)
        unfinished = chunks.exclude(status=Status.DONE).first()
        if unfinished is not None and not restart:
            return ReindexPlan(
                chunks=chunks.count(), resumed=True, missing_only=unfinished.missing_only
            )
        chunks.delete()
        planned = 0
        rows: list[ReindexChunk] = []
        for kind, queryset in _passes(space, missing_only):
            for ids in _id_pages(queryset, chunk_size):
                rows.append(
                    ReindexChunk(
                        space=space,
                        kind=kind,
                        first_id=ids[0],
                        last_id=ids[-1],
                        ids=ids if missing_only else [],
                        missing_only=missing_only,
                        size=len(ids),
                    )
                )
                if len(rows) == 200:  # written as it goes: millions of ids never sit in memory
                    ReindexChunk.objects.bulk_create(rows)
                    planned, rows = planned + len(rows), []
        ReindexChunk.objects.bulk_create(rows)
        planned += len(rows)
    return ReindexPlan(chunks=planned, resumed=False, missing_only=missing_only)


def reindex_chunks_send(*, chunk_ids: list[int]) -> int:
    """One task per chunk on the `embed` queue (CELERY_TASK_ROUTES); the time is recorded."""
    for start in range(0, len(chunk_ids), 1000):
        ReindexChunk.objects.filter(pk__in=chunk_ids[start : start + 1000]).update(queued_at=Now())
    for chunk_id in chunk_ids:
        app.send_task(REINDEX_CHUNK_TASK, args=[chunk_id])
    return len(chunk_ids)


def _db_now_minus(seconds: float) -> ExpressionWrapper:
    # Compared with the database's clock, never a worker's: workers run on other machines.
    return ExpressionWrapper(Now() - timedelta(seconds=seconds), output_field=DateTimeField())


def _stale_claim() -> Q:
    return Q(status=Status.RUNNING, claimed_at__lt=_db_now_minus(settings.REINDEX_STALE_SECONDS))


def reindex_chunks_requeue(
    *, space: EmbeddingSpace, queue_empty: bool, pending_after: float | None = None
) -> list[int]:
    """Send again the chunks a dead worker held, those never sent, and lost ones.

    A claim older than REINDEX_STALE_SECONDS belongs to a worker that died (or hangs):
    its chunk goes back to pending and is queued again. A pending chunk queued more than
    `pending_after` seconds ago (default the same) while no message waits in the queue lost
    its message (a Redis restart): it is queued again too. Running twice is harmless.
    """
    stale = ReindexChunk.objects.filter(space=space).filter(_stale_claim())
    chunk_ids = list(stale.values_list("pk", flat=True))
    if chunk_ids:
        stale.filter(pk__in=chunk_ids).update(status=Status.PENDING)
        logger.warning("space %s: chunks %s were claimed too long ago: re-queued", space, chunk_ids)
    unsent = Q(queued_at__isnull=True)
    if queue_empty:
        after = settings.REINDEX_STALE_SECONDS if pending_after is None else pending_after
        unsent |= Q(queued_at__lte=_db_now_minus(after))
    lost = ReindexChunk.objects.filter(space=space, status=Status.PENDING).filter(unsent)
    chunk_ids += [pk for pk in lost.values_list("pk", flat=True) if pk not in chunk_ids]
    reindex_chunks_send(chunk_ids=sorted(chunk_ids))
    return chunk_ids


def _claimable(token: str) -> Q:
    """Pending, or held by a dead worker, or by this very task (its redelivery after a crash)."""
    return (
        Q(status=Status.PENDING)
        | _stale_claim()
        | Q(status=Status.RUNNING, claim_token=token, claim_token__gt="")
    )


def _claim_values(token: str, worker: str) -> dict:
    return dict(
        status=Status.RUNNING,
        claim_token=token[:64],
        claimed_by=worker[:200],
        claimed_at=Now(),
        attempts=F("attempts") + 1,
    )


def reindex_chunk_run(*, chunk_id: int, token: str, worker: str = "") -> dict:
    """Compute the vectors of one chunk, unless it is done or another worker holds it."""
    chunk = ReindexChunk.objects.select_related("space").filter(pk=chunk_id).first()
    if chunk is None or chunk.status == Status.DONE:
        return {"chunk": chunk_id, "skipped": "done" if chunk else "gone"}
    # The model loads before the claim, so a claim's age measures the work, not the loading
    # (a bad checkpoint fails here, recorded on the chunk).
    try:
        space_encoder(chunk.space)
    except Exception as exc:
        _chunk_failed(chunk.pk, exc, count_attempt=True)
        raise
    claimed = (
        ReindexChunk.objects.filter(pk=chunk_id)
        .filter(_claimable(token))
        .update(**_claim_values(token, worker))
    )
    if not claimed:
        # Done meanwhile, or held by a live worker (a duplicate message): nothing to do.
        return {"chunk": chunk_id, "skipped": "claimed by another worker"}
    chunk.refresh_from_db()
    return {"chunk": chunk_id, **_chunk_compute(chunk).as_dict()}


def _chunk_ids(chunk: ReindexChunk) -> list[int]:
    if chunk.ids:
        return list(chunk.ids)
    model = ProductImage if chunk.kind == Kind.IMAGES else Product
    return list(
        model.objects.filter(pk__gte=chunk.first_id, pk__lte=chunk.last_id)
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def _chunk_compute(chunk: ReindexChunk) -> EmbedReport:
    # A full reindex recomputes every vector on a chunk's first attempt; a later attempt (the
    # first died midway) keeps what it wrote, so each vector is written once.
    force = not chunk.missing_only and chunk.attempts <= 1
    ids = _chunk_ids(chunk)
    try:
        if chunk.kind == Kind.IMAGES:
            report = image_embeddings_compute(space=chunk.space, image_ids=ids, force=force)
        else:
            report = caption_embeddings_compute(space=chunk.space, product_ids=ids, force=force)
    except Exception as exc:
        _chunk_failed(chunk.pk, exc)
        raise
    ReindexChunk.objects.filter(pk=chunk.pk).update(
        status=Status.DONE, done_at=Now(), report=report.as_dict()
    )
    return report


def _chunk_failed(chunk_id: int, exc: Exception, count_attempt: bool = False) -> None:
    """Back to pending with the reason: a retry, a re-queue or the next command takes it.

    `count_attempt`: it failed before its claim (which counts the attempts otherwise)."""
    try:
        ReindexChunk.objects.filter(pk=chunk_id).exclude(status=Status.DONE).update(
            status=Status.PENDING,
            report={"error": f"{type(exc).__name__}: {exc}"[:2000]},
            attempts=F("attempts") + int(count_attempt),
        )
    except Exception:  # the database itself is down: the stale claim heals it later
        logger.exception("could not record the failure of reindex chunk %s", chunk_id)


@dataclass
class ReindexProgress:
    """What the chunks of a space say: items planned and done per kind, errors, the report."""

    total: dict[str, int] = field(default_factory=dict)
    done: dict[str, int] = field(default_factory=dict)
    chunks: int = 0
    chunks_done: int = 0
    errors: dict[int, str] = field(default_factory=dict)  # chunk -> its latest error
    failing: dict[int, str] = field(default_factory=dict)  # failed REINDEX_CHUNK_MAX_ERRORS+

    @property
    def finished(self) -> bool:
        return self.chunks_done == self.chunks


def reindex_progress(*, space: EmbeddingSpace) -> ReindexProgress:
    progress = ReindexProgress(total={k: 0 for k in Kind.values}, done={k: 0 for k in Kind.values})
    rows = (
        ReindexChunk.objects.filter(space=space)
        .values("kind", "status")
        .annotate(chunks=Count("pk"), items=Sum("size"))
    )
    for row in rows:
        progress.total[row["kind"]] += row["items"]
        progress.chunks += row["chunks"]
        if row["status"] == Status.DONE:
            progress.done[row["kind"]] += row["items"]
            progress.chunks_done += row["chunks"]
    failed = (
        ReindexChunk.objects.filter(space=space, report__has_key="error")
        .exclude(status=Status.DONE)
        .values_list("pk", "attempts", "report")
    )
    for pk, attempts, report in failed:
        progress.errors[pk] = report["error"]
        if attempts >= REINDEX_CHUNK_MAX_ERRORS:
            progress.failing[pk] = report["error"]
    return progress


def reindex_report(*, space: EmbeddingSpace) -> EmbedReport:
    """The sum of the done chunks' reports (as `space_fill` returns it in process)."""
    report = EmbedReport()
    reports = ReindexChunk.objects.filter(space=space, status=Status.DONE).values_list(
        "report", flat=True
    )
    for done in reports.iterator():
        report.add(
            EmbedReport(
                embedded=done.get("embedded", 0),
                skipped=done.get("skipped", 0),
                failed={int(k): v for k, v in done.get("failed", {}).items()},
            )
        )
    return report


def _claim_next(*, space: EmbeddingSpace, token: str, worker: str) -> ReindexChunk | None:
    # From the end of the plan: the queue hands chunks out from its start, so the waiting
    # process and the workers rarely reach for the same one.
    with transaction.atomic():
        chunk = (
            ReindexChunk.objects.select_for_update(skip_locked=True)
            .filter(space=space)
            .filter(_claimable(token))
            .order_by("-pk")
            .first()
        )
        if chunk is None:
            return None
        ReindexChunk.objects.filter(pk=chunk.pk).update(**_claim_values(token, worker))
    chunk.refresh_from_db()
    return chunk


def space_fill_fanout(
    *,
    space: EmbeddingSpace,
    missing_only: bool = True,
    chunk_size: int | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> EmbedReport:
    """Fill `space` with every embed worker's help, and return when every chunk is done.

    The chunks go to the `embed` queue, and this process takes chunks from the database
    too until none is left: a single worker consuming both `train` and `embed` (the
    compose file's) would otherwise wait on itself forever.
    """
    reindex_plan(
        space=space,
        missing_only=missing_only,
        chunk_size=chunk_size or settings.REINDEX_CHUNK_SIZE,
    )
    pending = ReindexChunk.objects.filter(space=space, status=Status.PENDING)
    reindex_chunks_send(chunk_ids=list(pending.order_by("pk").values_list("pk", flat=True)))
    token = f"fill-{uuid.uuid4().hex}"
    worker = f"{socket.gethostname()} pid {os.getpid()} (filling {space})"
    reported = {kind: 0 for kind in Kind.values}
    while True:
        chunk = _claim_next(space=space, token=token, worker=worker)
        if chunk is not None:
            _chunk_compute(chunk)
        state = reindex_progress(space=space)
        if progress:
            for kind, done in state.done.items():
                if done > reported[kind]:
                    progress(kind, done - reported[kind])
                    reported[kind] = done
        if state.finished:
            return reindex_report(space=space)
        if state.failing:
            chunk_id, error = next(iter(state.failing.items()))
            raise RuntimeError(f"chunk {chunk_id} of the fill of {space} keeps failing: {error}")
        if chunk is None:  # the rest is in other workers' hands: wait for them
            time.sleep(settings.REINDEX_POLL_SECONDS)


def space_activate_fanout(
    *,
    space: EmbeddingSpace,
    batch_size: int = 256,
    progress: Callable[[str, int], None] | None = None,
) -> EmbeddingSpace:
    """`vectors.space_activate`, its fill shared with every embed worker when there is a
    broker: the index is built and the spaces switch only after the last chunk is done."""
    fill = None
    if fanout_available():

        def fill() -> None:
            space_fill_fanout(space=space, missing_only=True, progress=progress)

    return space_activate(space=space, batch_size=batch_size, progress=progress, fill=fill)


def space_prepare_fanout(*, space: EmbeddingSpace, batch_size: int = 256) -> EmbeddingSpace:
    """`vectors.space_prepare` (a candidate filled and indexed for an interleaving test, not
    activated), its fill shared with every embed worker when there is a broker."""
    fill = None
    if fanout_available():

        def fill() -> None:
            space_fill_fanout(space=space, missing_only=True)

    return space_prepare(space=space, batch_size=batch_size, fill=fill)
