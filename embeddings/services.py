"""Services that queue the embeddings app's tasks: the work itself is in vectors, spaces
and finetuning, which the tasks call (so no module here imports its own caller)."""

from __future__ import annotations

from datetime import timedelta

from django.db import connection, transaction
from django.utils import timezone

from embeddings.finetuning import FinetuneError, FinetuneOptions
from embeddings.models import EmbeddingSpace, FinetuneRun
from embeddings.tasks import FINETUNE_TIME_LIMIT, embeddings_queue
from embeddings.tasks import activate_space as activate_space_task
from embeddings.tasks import finetune_catalog as finetune_catalog_task
from embeddings.vectors import hidden_vectors_delete
from shop_search.celery import queue_long_task


def embeddings_on_catalog_change(*, image_ids: list[int], product_ids: list[int], **kwargs) -> None:
    """Receiver of catalog.signals.catalog_changed: the vectors of products made draft or
    archived go in the same transaction (one indexed read when none is); what changed is
    embedded once it commits (the tasks skip hidden products)."""
    hidden_vectors_delete(product_ids=product_ids)
    embeddings_queue(image_ids=image_ids, product_ids=product_ids)


class FinetuneRunInProgress(FinetuneError):
    """Another fine-tuning run is queued or running: one at a time."""


# Any fixed number: the key of the advisory lock that makes "check, then create" one step.
FINETUNE_START_LOCK = 7_301_125
# A run still marked queued or running after the task's hard time limit died without saying
# so (its worker was killed): it no longer blocks new runs.
FINETUNE_RUN_STALE_AFTER = timedelta(seconds=FINETUNE_TIME_LIMIT)


def finetune_run_create(
    *, options: FinetuneOptions, source: EmbeddingSpace | None = None, requested_by=None
) -> FinetuneRun:
    """Record a new run, unless one is queued or running (FinetuneRunInProgress says which).

    Two runs at once would train on the same GPU side by side and race to promote.
    """
    with transaction.atomic():
        with connection.cursor() as cursor:  # concurrent starts wait here, then see the run
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [FINETUNE_START_LOCK])
        unfinished = (
            FinetuneRun.objects.filter(
                status__in=[FinetuneRun.Status.QUEUED, FinetuneRun.Status.RUNNING],
                created__gt=timezone.now() - FINETUNE_RUN_STALE_AFTER,
            )
            .order_by("created")
            .first()
        )
        if unfinished is not None:
            raise FinetuneRunInProgress(
                f"Fine-tune #{unfinished.pk} is {unfinished.status} (started "
                f"{unfinished.created:%Y-%m-%d %H:%M} UTC): one run at a time, so start "
                "another when it has finished."
            )
        return FinetuneRun.objects.create(
            options=options.as_dict(), source=source, requested_by=requested_by
        )


def finetune_runs_abandoned_fail(*, name: str) -> int:
    """Record as failed the unfinished runs of the space `name`, for a caller that knows
    nobody runs them (it holds that training's lock): their process was killed."""
    return FinetuneRun.objects.filter(
        options__name=name, status__in=[FinetuneRun.Status.QUEUED, FinetuneRun.Status.RUNNING]
    ).update(status=FinetuneRun.Status.FAILED, error="its process stopped before the end")


def finetune_run_start(
    *, options: FinetuneOptions, source: EmbeddingSpace | None = None, requested_by=None
) -> FinetuneRun:
    """Record a run and queue it on the `train` queue once the transaction commits."""
    run = finetune_run_create(options=options, source=source, requested_by=requested_by)
    queue_long_task(finetune_catalog_task, run.pk)
    return run


def space_activate_start(*, space: EmbeddingSpace) -> None:
    """Fill, index and switch to `space` on the `train` queue (it can take hours)."""
    queue_long_task(activate_space_task, space.pk)
