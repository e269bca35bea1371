"""Search housekeeping scheduled by beat (settings.CELERY_BEAT_SCHEDULE)."""

from celery import shared_task
from django.db import InterfaceError, OperationalError


@shared_task(
    acks_late=False,
    # A lost connection heals; batches already deleted stay deleted, the rest go on retry.
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=30,
    max_retries=5,
)
def search_log_prune() -> int:
    """Daily: delete searches older than SEARCH_LOG_DAYS and their events, in batches."""
    from search.searchlog import search_log_prune as prune

    return prune()
