"""Services that queue the embeddings app's tasks: the work itself is in vectors, spaces
and finetuning, which the tasks call (so no module here imports its own caller)."""

from __future__ import annotations

from embeddings.finetuning import FinetuneOptions
from embeddings.models import EmbeddingSpace, FinetuneRun
from embeddings.tasks import activate_space as activate_space_task
from embeddings.tasks import embeddings_queue
from embeddings.tasks import finetune_catalog as finetune_catalog_task
from shop_search.celery import queue_long_task


def embeddings_on_catalog_change(*, image_ids: list[int], product_ids: list[int], **kwargs) -> None:
    """Receiver of catalog.signals.catalog_changed: embed what changed once it commits."""
    embeddings_queue(image_ids=image_ids, product_ids=product_ids)


def finetune_run_start(
    *, options: FinetuneOptions, source: EmbeddingSpace | None = None, requested_by=None
) -> FinetuneRun:
    """Record a run and queue it on the `train` queue once the transaction commits."""
    run = FinetuneRun.objects.create(
        options=options.as_dict(), source=source, requested_by=requested_by
    )
    queue_long_task(finetune_catalog_task, run.pk)
    return run


def space_activate_start(*, space: EmbeddingSpace) -> None:
    """Fill, index and switch to `space` on the `train` queue (it can take hours)."""
    queue_long_task(activate_space_task, space.pk)
