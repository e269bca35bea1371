"""Uploaded import files: private (never under MEDIA_ROOT, never served), random names,
deleted when the job is done or has been left for IMPORT_FILES_KEEP_DAYS."""

import importlib
import os
import re
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.apps import apps
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connections
from django.http import Http404
from django.urls import reverse
from django.utils import timezone

from catalog.importing import locks
from catalog.importing.run import import_job_run
from catalog.importing.tasks import import_products, sweep_import_files
from catalog.models import ImportJob, Product
from shop_search.media import product_photo_serve
from tests.builders import csv_bytes, jpeg_bytes, zip_bytes

pytestmark = pytest.mark.django_db

EVIL = b"sku,title,price\n<script>alert(document.cookie)</script>,x,1\n"
ROWS = [{"sku": "A-1", "title": "Mug", "price": "8", "image": "red.jpg"}]
RANDOM_NAME = re.compile(r"imports/\d{4}/\d{2}/[0-9a-f]{32}")


@pytest.fixture(autouse=True)
def own_folders(settings, tmp_path):
    """Empty media and private folders, so a test sees exactly the files it made."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.PRIVATE_ROOT = tmp_path / "private"


def files_under(root) -> list[Path]:
    return sorted(path for path in Path(root).rglob("*") if path.is_file())


def upload(client, data=EVIL, name="evil.html", **extra):
    return client.post(
        reverse("api-imports"),
        {"file": SimpleUploadedFile(name, data, "text/html"), "format": "csv", **extra},
    )


def test_uploads_are_kept_privately_under_random_names(admin_client, settings):
    response = upload(admin_client, dry_run="true")  # queued: this test runs no task
    assert response.status_code == 202
    job = ImportJob.objects.get()
    assert RANDOM_NAME.fullmatch(job.source.name), job.source.name
    assert job.source_name == "evil.html"  # shown to staff, never used as a path
    assert files_under(settings.PRIVATE_ROOT) == [Path(settings.PRIVATE_ROOT) / job.source.name]
    assert files_under(settings.MEDIA_ROOT) == []  # nothing lands where nginx serves
    assert job.source.read() == EVIL
    with pytest.raises(ValueError, match="private file: it has no URL"):
        job.source.url  # noqa: B018


def test_a_finished_job_deletes_its_files_and_keeps_its_report(
    admin_client, embed_on_commit, settings
):
    with embed_on_commit():
        response = admin_client.post(
            reverse("api-imports"),
            {
                "file": SimpleUploadedFile(
                    "shop.csv", csv_bytes(ROWS + [{"sku": "B", "title": ""}])
                ),
                "images": SimpleUploadedFile("photos.zip", zip_bytes({"red.jpg": jpeg_bytes()})),
            },
        )
    job = ImportJob.objects.get(pk=response.json()["id"])
    assert (job.status, job.rows_created, job.rows_failed) == ("done", 1, 1)
    assert (job.source.name, job.images.name) == ("", "")
    assert job.files_deleted is not None
    assert files_under(settings.PRIVATE_ROOT) == []
    report = admin_client.get(reverse("api-import-report", args=[job.pk]))
    assert "is required" in b"".join(report.streaming_content).decode()
    # The photos it imported are the shop's, in MEDIA_ROOT, and stay.
    assert Product.objects.get().images.get().file.read() == jpeg_bytes()


def test_an_interrupted_job_keeps_its_files_until_it_is_done(settings):
    settings.IMPORT_BATCH_SIZE = 1
    job = stored_job(status="pending")

    def worker_killed(job):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        import_job_run(job=job, progress=worker_killed)
    job.refresh_from_db()
    assert job.status == "failed"
    assert Path(job.source.path).exists()
    assert Path(job.images.path).exists()
    import_products.delay(job.pk)  # resumed
    job.refresh_from_db()
    assert (job.status, job.rows_created, job.source.name, job.images.name) == ("done", 1, "", "")
    assert files_under(settings.PRIVATE_ROOT) == []


def old(job: ImportJob, days: float) -> ImportJob:
    ImportJob.objects.filter(pk=job.pk).update(updated=timezone.now() - timedelta(days=days))
    return job


def stored_job(status="failed", **fields) -> ImportJob:
    job = ImportJob(format="csv", source_name="shop.csv", status=status, **fields)
    job.source.save("shop.csv", ContentFile(csv_bytes(ROWS)), save=False)
    job.images.save("photos.zip", ContentFile(zip_bytes({"red.jpg": jpeg_bytes()})), save=False)
    job.save()
    return job


def test_the_sweep_deletes_files_of_jobs_left_for_the_keep_days(settings):
    settings.IMPORT_FILES_KEEP_DAYS = 7
    abandoned = old(stored_job(status="failed"), days=8)
    never_run = old(stored_job(status="pending"), days=30)
    recent = old(stored_job(status="failed"), days=6)
    running = old(stored_job(status="running"), days=9)
    orphan = ImportJob._meta.get_field("source").storage.save(
        "imports/2020/01/" + "0" * 32, ContentFile(b"a deleted job's upload")
    )
    fresh_orphan = ImportJob._meta.get_field("source").storage.save(
        "imports/2026/01/" + "1" * 32, ContentFile(b"a job being created")
    )
    week_ago = time.time() - 8 * 86400
    os.utime(Path(settings.PRIVATE_ROOT) / orphan, (week_ago, week_ago))

    other = connections.create_connection("default")  # the running job's worker
    try:
        with other.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_lock(%s, %s)", [locks.IMPORT_LOCK_NAMESPACE, running.pk]
            )
        assert sweep_import_files.delay().get() == {"jobs": 2, "orphans": 1}
    finally:
        other.close()

    kept = {Path(settings.PRIVATE_ROOT) / name for name in (fresh_orphan,)}
    for job in (recent, running):
        job.refresh_from_db()
        assert job.files_deleted is None
        kept |= {Path(settings.PRIVATE_ROOT) / job.source.name, Path(job.images.path)}
    assert set(files_under(settings.PRIVATE_ROOT)) == kept
    for job in (abandoned, never_run):
        job.refresh_from_db()
        assert (job.source.name, job.images.name) == ("", "")
        assert job.files_deleted is not None
    # Resuming a job whose files are gone says so, and what to do.
    import_products.delay(abandoned.pk)
    abandoned.refresh_from_db()
    assert abandoned.status == "failed"
    assert abandoned.error.startswith("the uploaded files of this import were deleted on ")
    assert abandoned.error.endswith("(they are kept 7 days): upload them again")


def test_the_sweep_runs_on_beat(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["sweep-import-files"]
    assert entry["task"] == sweep_import_files.name == "catalog.importing.tasks.sweep_import_files"
    assert entry["schedule"] == settings.IMPORT_FILES_SWEEP_INTERVAL == 3600
    assert settings.CELERY_TASK_ROUTES[entry["task"]] == {"queue": "default"}


def test_jobs_uploaded_before_the_private_storage_keep_working(settings, embed_on_commit):
    """Migration 0005 moves the files of existing jobs out of MEDIA_ROOT."""
    public = default_storage.save("imports/2026/12/evil.html", ContentFile(csv_bytes(ROWS)))
    photos = default_storage.save(
        "imports/2026/12/photos.zip", ContentFile(zip_bytes({"red.jpg": jpeg_bytes()}))
    )
    job = ImportJob.objects.create(
        format="csv", source_name="evil.html", source=public, images=photos
    )
    untouched = ImportJob.objects.create(
        format="csv", source_name="gone.csv", source="imports/gone.csv"
    )
    migration = importlib.import_module("catalog.migrations.0005_import_files_to_private_storage")

    migration.import_files_to_private_storage(apps, None)
    migration.import_files_to_private_storage(apps, None)  # a second run changes nothing

    job.refresh_from_db()
    assert RANDOM_NAME.fullmatch(job.source.name)
    assert RANDOM_NAME.fullmatch(job.images.name)
    assert files_under(settings.MEDIA_ROOT) == []
    assert job.source.read() == csv_bytes(ROWS)
    untouched.refresh_from_db()
    assert untouched.source.name == "imports/gone.csv"
    with embed_on_commit():
        import_products.delay(job.pk)
    job.refresh_from_db()
    assert (job.status, job.rows_created, job.images_created) == ("done", 1, 1)


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("products/sha256/ab/photo.jpg", "image/jpeg"),
        ("products/sha256/ab/photo.JPG", "image/jpeg"),
        ("products/2026/12/photo.png", "image/png"),
        ("products/2026/12/photo.webp", "image/webp"),
        ("products/2026/12/photo.gif", "image/gif"),
    ],
)
def test_dev_media_serves_product_photos_with_their_type(client, settings, path, content_type):
    settings.DEBUG = True
    default_storage.save(path, ContentFile(b"GIF89a or so"))
    response = client.get(f"/media/{path}")
    assert response.status_code == 200
    assert response["Content-Type"] == content_type
    assert response["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    "path",
    [
        "imports/2026/12/evil.html",  # an import upload of an older version
        "products/evil.html",
        "products/evil.svg",
        "products/photo.jpg.html",
        "products/../imports/2026/12/evil.html",
        "products/../imports/2026/12/evil.jpg",
        "favicon.ico",
    ],
)
def test_dev_media_serves_nothing_else(client, settings, path):
    settings.DEBUG = True
    default_storage.save(path.replace("products/../", ""), ContentFile(b"<script>x</script>"))
    assert client.get(f"/media/{path}").status_code == 404


def test_media_are_not_served_by_django_in_production(rf, settings):
    settings.DEBUG = False
    default_storage.save("products/sha256/ab/photo.jpg", ContentFile(b"jpeg"))
    with pytest.raises(Http404):
        product_photo_serve(rf.get("/"), "products/sha256/ab/photo.jpg")
