"""Starting bulk imports: files checked up front, kept, and the import queued as a task."""

from __future__ import annotations

from typing import IO

from django.conf import settings
from django.core.files import File
from django.db import transaction

from catalog.importing.images import ImageArchive
from catalog.importing.locks import import_job_lock, import_job_unlock
from catalog.importing.platforms import PLATFORM_COLUMNS, csv_format_detect
from catalog.importing.readers import (
    ImportFileError,
    csv_header,
    file_size,
)
from catalog.importing.tasks import import_products as import_products_task
from catalog.models import ImportJob
from shop_search.celery import queue_long_task

Format = ImportJob.Format
EXTENSIONS = {
    ".csv": Format.CSV,
    ".tsv": Format.TSV,
    ".txt": Format.TSV,
    ".jsonl": Format.JSONL,
    ".ndjson": Format.JSONL,
}


def import_format_from_name(name: str) -> str | None:
    suffix = "." + name.lower().rpartition(".")[2] if "." in name else ""
    return EXTENSIONS.get(suffix)


def import_files_check(*, format: str, source: IO[bytes], images: IO[bytes] | None) -> str:
    """Refuse, before anything is queued, files that cannot be imported at all; returns the
    format, a CSV file being a shop platform's export when its header says so."""
    if format == Format.TSV and images is not None:
        raise ImportFileError(
            "a TSV file carries its images in base64: no ZIP goes with it", field="images"
        )
    limit = settings.IMPORT_MAX_UPLOAD_BYTES
    for field, file in (("file", source), ("images", images)):
        if file is not None and getattr(file, "size", 0) > limit:
            raise ImportFileError(
                f"the file is {file_size(file.size)}, over the limit of {file_size(limit)}",
                field=field,
            )
    try:
        if format == Format.CSV:
            format = csv_format_detect(source)
        if format in (Format.CSV, *PLATFORM_COLUMNS):
            csv_header(source, required=PLATFORM_COLUMNS.get(format, ("sku", "title")))
        if images is not None:
            ImageArchive(images).close()
    finally:
        for file in (source, images):
            if file is not None:
                file.seek(0)
    return format


def import_job_create(
    *,
    format: str,
    source: File,
    images: File | None = None,
    dry_run: bool = False,
    requested_by=None,
) -> ImportJob:
    """Keep the uploaded files and queue the import (a Celery task) once this commits."""
    format = import_files_check(format=format, source=source, images=images)
    job = ImportJob(
        format=format,
        dry_run=dry_run,
        requested_by=requested_by,
        source_name=(source.name or "upload")[-255:],
        source_bytes=source.size,
        images_name=(images.name or "images.zip")[-255:] if images else "",
    )
    job.source.save(job.source_name, source, save=False)
    if images is not None:
        job.images.save(job.images_name, images, save=False)
    with transaction.atomic():
        job.save()
        queue_long_task(import_products_task, job.pk)
    return job


def import_job_requeue(*, job: ImportJob) -> ImportJob:
    """Run an unfinished import again: it continues after its last committed batch."""
    if job.status == ImportJob.Status.DONE or not import_job_lock(job):
        return job  # finished, or running right now
    import_job_unlock(job)
    with transaction.atomic():
        ImportJob.objects.filter(pk=job.pk).update(status=ImportJob.Status.PENDING, error="")
        queue_long_task(import_products_task, job.pk)
    job.refresh_from_db()
    return job
