"""Thin Celery tasks: take ids, load the space, call a service, retry transient errors.

Tasks import the services that do the work; the services that queue tasks
(embeddings.services) import this module. Queuing embed tasks lives here because the
sweep, a task itself, queues them too.
"""

import logging
from functools import partial

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction

from embeddings.distributed_finetune import finetune_run_train
from embeddings.inference import attributes_infer_for_images
from embeddings.models import EmbeddingSpace, FinetuneRun
from embeddings.reindex import REINDEX_CHUNK_TASK, reindex_chunk_run, space_activate_fanout
from embeddings.spaces import space_active
from embeddings.vectors import (
    caption_embeddings_compute,
    chunks,
    embeddings_missing,
    hidden_vectors_delete,
    image_embeddings_compute,
)
from shop_search.celery import queued_messages

logger = logging.getLogger(__name__)

# Database hiccups and lost connections heal by themselves; a corrupt image does not, and
# is recorded by the service instead of raising.
TRANSIENT_ERRORS = (OperationalError, InterfaceError, ConnectionError, TimeoutError)
RETRY_POLICY = dict(
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=2,
    retry_backoff_max=300,
    retry_jitter=True,
    max_retries=8,
    acks_late=True,
)


def _space(space_id: int | None) -> EmbeddingSpace | None:
    if space_id is None:
        return space_active()
    space = EmbeddingSpace.objects.filter(pk=space_id).first()
    if space is None:
        logger.warning("embedding space %s is gone; nothing to do", space_id)
    return space


@shared_task(**RETRY_POLICY)
def embed_images(image_ids: list[int], space_id: int | None = None) -> dict:
    space = _space(space_id)
    if space is None:
        return {}
    report = image_embeddings_compute(space=space, image_ids=image_ids).as_dict()
    if settings.INFER_ATTRIBUTES_ON_EMBED:
        # Their products' missing attributes, read from the photos just embedded: suggestions
        # for review (catalog.inferred), never over what was entered.
        inferred = attributes_infer_for_images(space=space, image_ids=image_ids)
        if inferred.suggested:
            report["inferred"] = inferred.suggested
    return report


@shared_task(name=REINDEX_CHUNK_TASK, bind=True, **RETRY_POLICY)
def reindex_chunk(self, chunk_id: int) -> dict:
    """One chunk of a fanned-out fill (embeddings.reindex). Acked late and rejected when its
    worker is lost, so a killed worker's chunk is delivered again under the same task id,
    which may take back its own claim."""
    return reindex_chunk_run(
        chunk_id=chunk_id, token=self.request.id or "", worker=self.request.hostname or ""
    )


@shared_task(**RETRY_POLICY)
def embed_captions(product_ids: list[int], space_id: int | None = None) -> dict:
    space = _space(space_id)
    if space is None:
        return {}
    return caption_embeddings_compute(space=space, product_ids=product_ids).as_dict()


def _task_sender(task, *args) -> partial:
    """`task.delay(*args)`, named. Django's robust on_commit logs a failed callback by its
    __qualname__, which a bare partial lacks: the log call itself would raise, and fail the
    committed upload that `robust` is there to protect."""
    send = partial(task.delay, *args)
    send.__qualname__ = f"{task.name}.delay"
    return send


def embeddings_queue(*, image_ids: list[int] = (), product_ids: list[int] = ()) -> None:
    """Queue embedding of new or changed images and captions once the transaction commits.

    One task per batch, never one per image. `robust`: an unreachable broker must not
    fail an upload that has already committed; the periodic sweep catches up.
    """
    image_ids, product_ids = sorted(set(image_ids)), sorted(set(product_ids))
    for batch in chunks(image_ids, settings.EMBED_BATCH_SIZE):
        transaction.on_commit(_task_sender(embed_images, batch), robust=True)
    for batch in chunks(product_ids, settings.EMBED_BATCH_SIZE * 4):
        transaction.on_commit(_task_sender(embed_captions, batch), robust=True)


# Hard limit of a fine-tuning task (embeddings.services treats older unfinished runs as dead).
FINETUNE_TIME_LIMIT = 6 * 3600


@shared_task(
    acks_late=False, time_limit=FINETUNE_TIME_LIMIT, soft_time_limit=FINETUNE_TIME_LIMIT - 60
)
def finetune_catalog(run_id: int) -> dict:
    """Runs on the `train` queue. Not acked late: a crashed training must not loop forever."""
    run = FinetuneRun.objects.filter(pk=run_id).first()
    if run is None:
        logger.warning("fine-tune run %s is gone; nothing to do", run_id)
        return {}
    return finetune_run_train(run=run).result


@shared_task(acks_late=False, time_limit=6 * 3600, soft_time_limit=6 * 3600 - 60)
def activate_space(space_id: int) -> str:
    """Fill (missing vectors only, shared with the embed workers), index and switch to a
    space; on the `train` queue."""
    space = _space(space_id)
    if space is None:
        return ""
    return space_activate_fanout(space=space).name


@shared_task(acks_late=False)
def sweep_missing_embeddings() -> dict:
    """Beat, every EMBED_SWEEP_INTERVAL: re-queue what has no vector, so lost messages heal,
    and delete the vectors of draft and archived products that something left.

    The re-queuing is skipped while embed tasks still wait in their queue: they may be the missing
    images, and queuing those again would only grow the backlog.
    """
    # Vectors of hidden products that a write around the signal left (a bulk update by hand).
    dropped = hidden_vectors_delete()
    if dropped:
        logger.info("sweep deleted %d vectors of draft or archived products", dropped)
    if not settings.CELERY_TASK_ALWAYS_EAGER:
        queue = settings.CELERY_TASK_ROUTES[embed_images.name]["queue"]
        waiting = queued_messages(queue)
        if waiting:
            logger.info("sweep skipped: %d tasks still wait in the %s queue", waiting, queue)
            return {"skipped": waiting}
    missing = embeddings_missing(space=space_active(), limit=settings.EMBED_SWEEP_MAX_ITEMS)
    embeddings_queue(image_ids=missing.image_ids, product_ids=missing.product_ids)
    if missing.image_ids or missing.product_ids:
        logger.info(
            "sweep queued %d images and %d products without vectors",
            len(missing.image_ids),
            len(missing.product_ids),
        )
    return {"images": len(missing.image_ids), "products": len(missing.product_ids)}
