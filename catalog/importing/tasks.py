"""The bulk import task (takes a job id, runs the import resumably) and the sweep of old files."""

import logging

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.db import InterfaceError, OperationalError

from catalog.importing.files import import_files_sweep
from catalog.importing.run import import_job_run
from catalog.models import ImportJob

logger = logging.getLogger(__name__)


@shared_task(
    bind=True,
    # A lost database connection heals; the job resumes after its last committed batch.
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=5,
    retry_backoff_max=300,
    retry_jitter=True,
    max_retries=8,
    acks_late=True,
)
def import_products(self, job_id: int) -> dict:
    job = ImportJob.objects.filter(pk=job_id).first()
    if job is None:
        logger.warning("import job %s is gone; nothing to do", job_id)
        return {}
    try:
        import_job_run(job=job)
    except SoftTimeLimitExceeded:
        # Everything up to the last batch is committed: go on in a fresh task.
        ImportJob.objects.filter(pk=job_id).update(status=ImportJob.Status.PENDING, error="")
        self.apply_async((job_id,))
        return {"status": "continued"}
    return {"status": job.status, "rows": job.rows_processed, "failed": job.rows_failed}


@shared_task(acks_late=True)
def sweep_import_files() -> dict:
    """Delete uploaded import files that no job needs any more (beat, hourly)."""
    return import_files_sweep()
