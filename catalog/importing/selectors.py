"""Reads of imports: jobs and their error reports."""

from __future__ import annotations

import csv
from collections.abc import Iterator

from django.db.models import QuerySet

from catalog.models import ImportJob, ImportRowError

REPORT_COLUMNS = ["line", "sku", "field", "error"]
# A cell starting with one of these is a formula to a spreadsheet (=HYPERLINK(...), +cmd|...):
# the import report quotes back what the uploaded file said, and the search insights what
# shoppers typed, so such cells are escaped.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def import_jobs_visible(*, user) -> QuerySet[ImportJob]:
    """The imports a user may follow, the same in the admin and the API: all of them with
    the view (or change) permission, only their own with just the add permission."""
    jobs = ImportJob.objects.select_related("requested_by")
    if not (user.is_active and user.is_staff):
        return jobs.none()
    if user.has_perm("catalog.view_importjob") or user.has_perm("catalog.change_importjob"):
        return jobs
    if user.has_perm("catalog.add_importjob"):
        return jobs.filter(requested_by=user)
    return jobs.none()


def import_job_get(*, job_id: int, user) -> ImportJob | None:
    """The import `job_id` if `user` may follow it (another user's is None, as if absent)."""
    return import_jobs_visible(user=user).filter(pk=job_id).first()


def import_row_errors(*, job: ImportJob) -> QuerySet[ImportRowError]:
    return ImportRowError.objects.filter(job=job).order_by("line", "id")


class _Line:
    def write(self, value: str) -> str:
        return value


def spreadsheet_safe(text: str) -> str:
    """`text` as a CSV cell a spreadsheet shows as typed, never runs as a formula.

    The OWASP advice for CSV injection: a leading single quote makes the cell plain text.
    """
    return f"'{text}" if text.startswith(FORMULA_STARTS) else text


def import_report_row(line: int, sku: str, field: str, message: str) -> list:
    """One line of the report, each text cell safe to open in a spreadsheet."""
    return [line, *(spreadsheet_safe(text) for text in (sku, field, message))]


def import_report_csv(*, job: ImportJob) -> Iterator[str]:
    """The rows that were not imported, as CSV lines (streamed: a report can be huge)."""
    writer = csv.writer(_Line())
    yield "\ufeff" + writer.writerow(REPORT_COLUMNS)  # BOM: spreadsheets then read UTF-8
    rows = import_row_errors(job=job).values_list("line", "sku", "field", "message")
    for values in rows.iterator(chunk_size=2000):
        yield writer.writerow(import_report_row(*values))


def import_report_filename(job: ImportJob) -> str:
    return f"import-{job.pk}-errors.csv"
