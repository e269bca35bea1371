"""Import uploads kept under MEDIA_ROOT (served by nginx, under the client's file name) move
to private storage under random names; their jobs keep working.

Not atomic: each job's new name commits before its old file is deleted, so a failure
part-way loses nothing (a second run moves the rest).
"""

import uuid

from django.core.files.storage import storages
from django.db import migrations
from django.utils import timezone

FILE_FIELDS = ("source", "images")


def _move(apps, *, from_storage, to_storage, rename):
    """Move the jobs' kept files between storages; the jobs then point at the new copies.

    A file already gone (deleted, or moved by an earlier run) leaves its job as it is: a
    resume then says the upload is missing, as it would have before.
    """
    ImportJob = apps.get_model("catalog", "ImportJob")
    for job in ImportJob.objects.exclude(source="", images="").iterator():
        changed = []
        for field in FILE_FIELDS:
            name = getattr(job, field).name
            if not name or not from_storage.exists(name):
                continue
            with from_storage.open(name, "rb") as file:
                new_name = to_storage.save(rename(name), file)
            setattr(job, field, new_name)
            changed.append((field, name))
        if changed:
            job.save(update_fields=[field for field, _ in changed])  # commits (not atomic)
            for _, name in changed:
                from_storage.delete(name)


def import_files_to_private_storage(apps, schema_editor):
    # Uploads were kept under MEDIA_ROOT, which nginx serves, with the client's file name.
    _move(
        apps,
        from_storage=storages["default"],
        to_storage=storages["imports"],
        rename=lambda name: f"imports/{timezone.now():%Y/%m}/{uuid.uuid4().hex}",
    )


def import_files_to_media_storage(apps, schema_editor):
    _move(
        apps, from_storage=storages["imports"], to_storage=storages["default"], rename=str
    )


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("catalog", "0004_import_files_private"),
    ]

    operations = [
        migrations.RunPython(import_files_to_private_storage, import_files_to_media_storage),
    ]
