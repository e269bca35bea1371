"""One runner per import job: a Postgres advisory lock on (namespace, job id)."""

from django.db import connection

from catalog.models import ImportJob

IMPORT_LOCK_NAMESPACE = 0x494D  # pg advisory locks of import jobs: (namespace, job id)


def import_job_lock(job: ImportJob) -> bool:
    # One runner per job: a redelivered task finds the first one still at work.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_try_advisory_lock(%s, %s)", [IMPORT_LOCK_NAMESPACE, job.pk % 2**31]
        )
        return cursor.fetchone()[0]


def import_job_unlock(job: ImportJob) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [IMPORT_LOCK_NAMESPACE, job.pk % 2**31])
