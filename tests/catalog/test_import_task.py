"""The import task: continues an interrupted job, and one job never runs twice at once."""

import pytest
from django.core.files.base import ContentFile
from django.db import connections

from catalog.importing import locks, run, services
from catalog.importing.tasks import import_products
from catalog.models import ImportJob, Product
from tests.builders import csv_bytes

pytestmark = pytest.mark.django_db

ROWS = [{"sku": f"A-{n}", "title": f"Mug {n}", "price": "8"} for n in range(5)]


def queued_job() -> ImportJob:
    job = ImportJob(format="csv", source_name="shop.csv")
    job.source.save("shop.csv", ContentFile(csv_bytes(ROWS)), save=False)
    job.save()
    return job


def test_the_task_continues_a_job_interrupted_after_a_committed_batch(settings):
    """A worker stopped mid-job (killed, or past its time limit) left one committed batch;
    the task delivered again finishes the rest, and nothing is imported twice."""
    settings.IMPORT_BATCH_SIZE = 2
    job = queued_job()

    def stop_after_first_batch(job):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run.import_job_run(job=job, progress=stop_after_first_batch)
    assert Product.objects.count() == 2
    import_products.delay(job.pk)
    job.refresh_from_db()
    assert (job.status, job.rows_processed, job.rows_created, job.error) == ("done", 5, 5, "")
    assert sorted(Product.objects.values_list("sku", flat=True)) == [r["sku"] for r in ROWS]


def test_a_job_already_running_elsewhere_is_left_to_its_runner():
    job = queued_job()
    other = connections.create_connection("default")  # another worker's session
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s, %s)", [locks.IMPORT_LOCK_NAMESPACE, job.pk])
        import_products.delay(job.pk)
        job.refresh_from_db()
        assert job.status == "pending"
        assert not Product.objects.exists()
        assert services.import_job_requeue(job=job).status == "pending"
    finally:
        other.close()
    import_products.delay(job.pk)
    job.refresh_from_db()
    assert job.status == "done"
    assert Product.objects.count() == 5


def test_a_task_for_a_deleted_job_does_nothing():
    assert import_products.delay(987654).get() == {}


def test_a_command_line_import_cannot_be_resumed_from_the_admin():
    job = ImportJob.objects.create(format="csv", source_name="/srv/shop.csv", status="running")
    import_products.delay(job.pk)
    job.refresh_from_db()
    assert job.status == "failed"
    assert job.error == (
        "this import read /srv/shop.csv on the command line: run the command again to complete it"
    )
