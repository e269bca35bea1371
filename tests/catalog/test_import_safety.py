"""Hostile files: zip slip, zip bombs, decompression bombs, and imports by non-staff users."""

import zipfile

import pytest
from django.contrib.auth.models import Permission, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.urls import reverse

from catalog.importing.selectors import import_report_row
from catalog.models import ImportJob, Product
from tests.builders import csv_bytes, jpeg_bytes, png_bomb, zip_bytes

pytestmark = pytest.mark.django_db

RED = jpeg_bytes((220, 20, 20), seed=1)
ROWS = [{"sku": "A-1", "title": "Mug", "price": "8", "image": "red.jpg"}]


def import_command(tmp_path, archive: bytes, rows=ROWS):
    data, images = tmp_path / "p.csv", tmp_path / "i.zip"
    data.write_bytes(csv_bytes(rows))
    images.write_bytes(archive)
    call_command("import_products", str(data), images=str(images))


@pytest.mark.parametrize("name", ["../../evil.jpg", "/etc/evil.jpg", "img/..\\..\\evil.jpg"])
def test_zip_entries_escaping_the_archive_are_refused(tmp_path, name):
    archive = zip_bytes({"red.jpg": RED, name: b"#!/bin/sh\necho owned\n"})
    with pytest.raises(CommandError, match="has an absolute path or '..' \\(zip slip\\)"):
        import_command(tmp_path, archive)
    assert not Product.objects.exists()


def test_a_row_naming_a_path_outside_the_archive_is_refused(run_import):
    rows = [{"sku": "A-1", "title": "Mug", "price": "8", "image": "../red.jpg"}]
    job = run_import(csv_bytes(rows), zip_bytes({"red.jpg": RED}))
    assert "'../red.jpg': not a path inside the ZIP" in job.row_errors.get().message


def test_a_zip_bomb_is_refused_by_its_compression_ratio(tmp_path):
    bomb = zip_bytes({"red.jpg": RED, "bomb.jpg": b"\0" * (20 * 1024 * 1024)})
    assert len(bomb) < 100_000
    with pytest.raises(CommandError, match="over the compression ratio limit of 100:1"):
        import_command(tmp_path, bomb)
    assert not Product.objects.exists()


def test_an_archive_expanding_beyond_the_limit_is_refused(tmp_path, settings):
    settings.IMPORT_ZIP_MAX_BYTES = 50_000
    archive = zip_bytes(
        {f"photo-{n}.jpg": jpeg_bytes(seed=n) for n in range(20)}, compression=zipfile.ZIP_STORED
    )
    with pytest.raises(CommandError, match="the ZIP expands to .* over the limit of 50.0 kB"):
        import_command(tmp_path, archive)


def test_a_file_that_is_not_a_zip_is_refused(tmp_path):
    with pytest.raises(CommandError, match="the images file is not a ZIP archive"):
        import_command(tmp_path, b"PK but not really")


@pytest.mark.parametrize(
    ("size", "reason"),
    [
        # Over our 40 Mpx limit: refused from the header, before decoding.
        ((8000, 6000), "image is 8000x6000 pixels, over the limit of 40,000,000 pixels"),
        # Far over: Pillow's own guard fires while opening; still a clean row error.
        ((30000, 30000), "over the limit of 40,000,000 pixels (decompression bomb)"),
    ],
)
def test_decompression_bombs_are_refused_and_the_other_rows_imported(run_import, size, reason):
    bomb = png_bomb(*size)
    assert len(bomb) < 200_000
    rows = [
        {"sku": "BOMB", "title": "Innocent", "price": "1", "image": "bomb.png"},
        {"sku": "A-1", "title": "Mug", "price": "8", "image": "red.jpg"},
    ]
    job = run_import(csv_bytes(rows), zip_bytes({"bomb.png": bomb, "red.jpg": RED}))
    assert list(Product.objects.values_list("sku", flat=True)) == ["A-1"]
    assert job.row_errors.get().message == f"'bomb.png': {reason}"


def test_a_base64_line_too_long_for_an_image_is_skipped_unread(run_import, settings):
    settings.MAX_UPLOAD_IMAGE_BYTES = 1000
    data = b"huge\t" + b"A" * 100_000 + b"\nsmall\t" + b"B" * 10 + b"\n"
    job = run_import(data, format="tsv")
    assert list(job.row_errors.values_list("line", "field")) == [(1, "image"), (2, "image")]
    assert "its image is over the limit of 1.0 kB" in job.row_errors.first().message


def upload_request():
    return {
        "file": SimpleUploadedFile("p.csv", csv_bytes(ROWS), content_type="text/csv"),
        "images": SimpleUploadedFile("i.zip", zip_bytes({"red.jpg": RED})),
    }


def test_only_staff_allowed_to_import_may_import(client, django_user_model):
    url = reverse("api-imports")
    assert client.post(url, upload_request()).status_code == 403  # anonymous
    shopper = django_user_model.objects.create_user("shopper", password="x")
    client.force_login(shopper)
    response = client.post(url, upload_request())
    assert response.status_code == 403
    assert response.json() == {
        "error": "Only staff members allowed to import products can do this."
    }
    clerk = django_user_model.objects.create_user("clerk", password="x", is_staff=True)
    client.force_login(clerk)
    assert client.post(url, upload_request()).status_code == 403  # staff, not allowed
    assert client.get(reverse("admin:catalog_importjob_add")).status_code == 403
    assert not ImportJob.objects.exists()
    assert not Product.objects.exists()

    clerk.user_permissions.add(Permission.objects.get(codename="add_importjob"))
    clerk = User.objects.get(pk=clerk.pk)  # fresh permission cache
    client.force_login(clerk)
    assert client.post(url, upload_request()).status_code == 202


def test_anonymous_users_are_sent_to_the_admin_login(client):
    for name in ("admin:catalog_importjob_add", "admin:catalog_importjob_changelist"):
        response = client.get(reverse(name))
        assert response.status_code == 302
        assert "/admin/login/" in response["Location"]


FORMULAS = ['=HYPERLINK("http://evil.example/","open")', "+1+2", "-3+4", "@SUM(A1:A9)"]


def test_report_cells_that_a_spreadsheet_would_run_are_escaped(
    admin_client, tmp_path, embed_on_commit
):
    rows = [{"sku": formula, "title": "", "price": "1"} for formula in FORMULAS]
    with embed_on_commit():
        job_id = admin_client.post(
            reverse("api-imports"), {"file": SimpleUploadedFile("p.csv", csv_bytes(rows))}
        ).json()["id"]
    report = admin_client.get(reverse("api-import-report", args=[job_id]))
    lines = b"".join(report.streaming_content).decode("utf-8-sig").splitlines()
    expected = [
        "line,sku,field,error",
        '2,"\'=HYPERLINK(""http://evil.example/"",""open"")",title,is required',
        "3,'+1+2,title,is required",
        "4,'-3+4,title,is required",
        "5,'@SUM(A1:A9),title,is required",
    ]
    assert lines == expected
    # The command's --report file is escaped the same way.
    data, out = tmp_path / "p.csv", tmp_path / "report.csv"
    data.write_bytes(csv_bytes(rows))
    call_command("import_products", str(data), dry_run=True, report=str(out), verbosity=0)
    assert out.read_text().splitlines() == expected


def test_report_cells_starting_with_a_tab_or_return_are_escaped():
    assert import_report_row(7, "\tA-1", "\rtitle", "=1") == [7, "'\tA-1", "'\rtitle", "'=1"]
    assert import_report_row(7, "A-1", "title", "'x' is not a number") == [
        7,
        "A-1",
        "title",
        "'x' is not a number",
    ]


def staff_with(django_user_model, name, *codenames):
    user = django_user_model.objects.create_user(name, password="x", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return User.objects.get(pk=user.pk)  # a fresh permission cache


def test_with_only_the_add_permission_a_user_follows_only_their_own_imports(
    client, django_user_model, embed_on_commit
):
    alice = staff_with(django_user_model, "alice", "add_importjob")
    bob = staff_with(django_user_model, "bob", "add_importjob")
    client.force_login(alice)
    with embed_on_commit():
        job_id = client.post(reverse("api-imports"), upload_request()).json()["id"]
    pages = {
        "api": reverse("api-import-detail", args=[job_id]),
        "api report": reverse("api-import-report", args=[job_id]),
        "admin": reverse("admin:catalog_importjob_change", args=[job_id]),
        "admin report": reverse("admin:catalog_importjob_report", args=[job_id]),
    }
    assert {name: client.get(url).status_code for name, url in pages.items()} == dict.fromkeys(
        pages, 200
    )
    assert "p.csv" in client.get(reverse("admin:catalog_importjob_changelist")).content.decode()

    client.force_login(bob)
    assert client.get(pages["api"]).status_code == 404
    assert client.get(pages["api"]).json() == {"error": f"there is no import {job_id}"}
    assert client.get(pages["api report"]).status_code == 404
    assert client.get(pages["admin"]).status_code == 302  # "does not exist", to the index
    assert client.get(pages["admin report"]).status_code == 404
    assert "p.csv" not in client.get(reverse("admin:catalog_importjob_changelist")).content.decode()


def test_the_view_permission_shows_every_import_and_starts_none(
    client, django_user_model, embed_on_commit
):
    alice = staff_with(django_user_model, "alice", "add_importjob")
    client.force_login(alice)
    with embed_on_commit():
        job_id = client.post(reverse("api-imports"), upload_request()).json()["id"]
    client.force_login(staff_with(django_user_model, "auditor", "view_importjob"))
    assert client.get(reverse("api-import-detail", args=[job_id])).json()["id"] == job_id
    assert client.get(reverse("api-import-report", args=[job_id])).status_code == 200
    assert client.get(reverse("admin:catalog_importjob_change", args=[job_id])).status_code == 200
    assert client.post(reverse("api-imports"), upload_request()).status_code == 403
    assert ImportJob.objects.count() == 1
