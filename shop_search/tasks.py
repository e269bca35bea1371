"""Housekeeping of the project as a whole, scheduled by beat (settings.CELERY_BEAT_SCHEDULE)."""

from celery import shared_task
from django.core import management


@shared_task(acks_late=False)
def sessions_clear_expired() -> None:
    """Daily: delete expired sessions, which Django's database backend never removes itself."""
    management.call_command("clearsessions")
