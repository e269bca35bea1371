"""The uploaded files of imports: kept in private storage only while their job needs them."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from catalog.importing.locks import import_job_lock, import_job_unlock
from catalog.models import ImportJob

logger = logging.getLogger(__name__)


def import_job_files_delete(*, job: ImportJob) -> None:
    """Delete a job's uploaded files; its record, counters and report stay."""
    for file in (job.source, job.images):
        if file:
            file.delete(save=False)
    job.source, job.images, job.files_deleted = "", "", timezone.now()
    ImportJob.objects.filter(pk=job.pk).update(
        source="", images="", files_deleted=job.files_deleted
    )


def import_files_sweep() -> dict[str, int]:
    """Delete the uploads that no job needs any more (beat runs this every hour or so).

    Done jobs delete their own files; this catches the rest: files of jobs unchanged for
    IMPORT_FILES_KEEP_DAYS (failed, abandoned, or whose delete failed), and files no job
    names (a deleted job, an upload whose job was never saved). A running job is left alone.
    """
    cutoff = timezone.now() - timedelta(days=settings.IMPORT_FILES_KEEP_DAYS)
    jobs = 0
    for job in ImportJob.objects.filter(updated__lt=cutoff).exclude(source="", images=""):
        if not import_job_lock(job):
            continue  # running right now: it still reads them
        try:
            import_job_files_delete(job=job)
            jobs += 1
        finally:
            import_job_unlock(job)
    storage = ImportJob._meta.get_field("source").storage
    named = set()
    for source, images in ImportJob.objects.values_list("source", "images").iterator():
        named.update((source, images))
    orphans = 0
    for name in _stored_names(storage, "imports"):
        if name not in named and storage.get_modified_time(name) < cutoff:
            storage.delete(name)
            orphans += 1
    if jobs or orphans:
        logger.info("deleted the files of %d old imports and %d unnamed files", jobs, orphans)
    return {"jobs": jobs, "orphans": orphans}


def _stored_names(storage, folder: str):
    if not storage.exists(folder):
        return
    folders, files = storage.listdir(folder)
    for name in files:
        yield f"{folder}/{name}"
    for name in folders:
        yield from _stored_names(storage, f"{folder}/{name}")
