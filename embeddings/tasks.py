"""Thin Celery tasks: take ids, load the space, call a service, retry transient errors."""

import logging

from celery import shared_task
from django.db import InterfaceError, OperationalError

from embeddings.models import EmbeddingSpace
from embeddings.services import (
    caption_embeddings_compute,
    image_embeddings_compute,
    space_get_active,
)

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
        return space_get_active()
    space = EmbeddingSpace.objects.filter(pk=space_id).first()
    if space is None:
        logger.warning("embedding space %s is gone; nothing to do", space_id)
    return space


@shared_task(**RETRY_POLICY)
def embed_images(image_ids: list[int], space_id: int | None = None) -> dict:
    space = _space(space_id)
    if space is None:
        return {}
    return image_embeddings_compute(space=space, image_ids=image_ids).as_dict()


@shared_task(**RETRY_POLICY)
def embed_captions(product_ids: list[int], space_id: int | None = None) -> dict:
    space = _space(space_id)
    if space is None:
        return {}
    return caption_embeddings_compute(space=space, product_ids=product_ids).as_dict()
