"""Reads of imports: jobs and their error reports."""

from __future__ import annotations

import csv
from collections.abc import Iterator

from django.db.models import QuerySet

from catalog.models import ImportJob, ImportRowError

REPORT_COLUMNS = ["line", "sku", "field", "error"]


def import_job_get(*, job_id: int) -> ImportJob | None:
    return ImportJob.objects.select_related("requested_by").filter(pk=job_id).first()


def import_row_errors(*, job: ImportJob) -> QuerySet[ImportRowError]:
    return ImportRowError.objects.filter(job=job).order_by("line", "id")


class _Line:
    def write(self, value: str) -> str:
        return value


def import_report_csv(*, job: ImportJob) -> Iterator[str]:
    """The rows that were not imported, as CSV lines (streamed: a report can be huge)."""
    writer = csv.writer(_Line())
    yield "\ufeff" + writer.writerow(REPORT_COLUMNS)  # BOM: spreadsheets then read UTF-8
    rows = import_row_errors(job=job).values_list("line", "sku", "field", "message")
    for line, sku, field, message in rows.iterator(chunk_size=2000):
        yield writer.writerow([line, sku, field, message])


def import_report_filename(job: ImportJob) -> str:
    return f"import-{job.pk}-errors.csv"
