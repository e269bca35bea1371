"""Imports through the JSON API and the admin page: upload, follow, download the report."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from drf_spectacular.generators import SchemaGenerator

from catalog.models import ImportJob, Product
from tests.builders import csv_bytes, jpeg_bytes, zip_bytes

pytestmark = pytest.mark.django_db

RED = jpeg_bytes((220, 20, 20), seed=1)
ROWS = [
    {"sku": "A-1", "title": "Red mug", "price": "8", "image": "red.jpg"},
    {"sku": "A-2", "title": "Lost mug", "price": "9", "image": "lost.jpg"},
    {"sku": "A-3", "title": "", "price": "x"},
]


def upload(name, data, content_type="application/octet-stream"):
    return SimpleUploadedFile(name, data, content_type=content_type)


def files(**extra):
    return {
        "file": upload("shop.csv", csv_bytes(ROWS), "text/csv"),
        "images": upload("photos.zip", zip_bytes({"red.jpg": RED})),
        **extra,
    }


def test_api_import_runs_and_reports_its_status_and_errors(admin_client, embed_on_commit):
    with embed_on_commit():
        response = admin_client.post(reverse("api-imports"), files())
    assert response.status_code == 202, response.content
    job_id = response.json()["id"]

    body = admin_client.get(reverse("api-import-detail", args=[job_id])).json()
    assert body["status"] == "done"
    assert body["progress"] == 1.0
    assert (body["format"], body["source_name"], body["images_name"], body["dry_run"]) == (
        "csv",
        "shop.csv",
        "photos.zip",
        False,
    )
    assert body["rows"] == {"processed": 3, "created": 1, "updated": 0, "unchanged": 0, "failed": 2}
    assert body["failure"] is None
    assert body["images_created"] == 1
    assert body["errors"] == [
        {"line": 3, "sku": "A-2", "field": "image", "error": "'lost.jpg': not in the ZIP"},
        {"line": 4, "sku": "A-3", "field": "title", "error": "is required"},
        {
            "line": 4,
            "sku": "A-3",
            "field": "price",
            "error": "'x' is not a number (write 12.50, without a currency sign)",
        },
    ]
    assert body["report_url"] == f"http://testserver/api/imports/{job_id}/report/"
    assert Product.objects.get().images.count() == 1
    assert ImportJob.objects.get().requested_by.username == "admin"

    report = admin_client.get(body["report_url"])
    assert report["Content-Type"] == "text/csv; charset=utf-8"
    assert f'filename="import-{job_id}-errors.csv"' in report["Content-Disposition"]
    lines = b"".join(report.streaming_content).decode("utf-8-sig").splitlines()
    assert lines == [
        "line,sku,field,error",
        "3,A-2,image,'lost.jpg': not in the ZIP",
        "4,A-3,title,is required",
        "4,A-3,price,\"'x' is not a number (write 12.50, without a currency sign)\"",
    ]


def test_api_dry_run_reports_without_writing(admin_client, embed_on_commit):
    with embed_on_commit():
        response = admin_client.post(reverse("api-imports"), files(dry_run="true"))
    body = admin_client.get(reverse("api-import-detail", args=[response.json()["id"]])).json()
    assert body["dry_run"] is True
    assert body["rows"]["created"] == 1
    assert not Product.objects.exists()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "file: No file was submitted."),
        ({"file": upload("shop.xlsx", b"PK..")}, "format: cannot tell the format of 'shop.xlsx'"),
        ({"file": upload("p.csv", b"name,price\n")}, "file: the header has no 'sku' or 'title'"),
        (
            {"file": upload("p.csv", csv_bytes(ROWS)), "images": upload("i.zip", b"no zip")},
            "images: the images file is not a ZIP archive",
        ),
        (
            {
                "file": upload("p.csv", csv_bytes(ROWS)),
                "images": upload("i.zip", zip_bytes({"../../x.jpg": RED})),
            },
            "images: the ZIP entry '../../x.jpg' has an absolute path or '..' (zip slip)",
        ),
        (
            {"file": upload("p.tsv", b"t\tAAAA\n"), "images": upload("i.zip", zip_bytes({}))},
            "images: a TSV file carries its images in base64",
        ),
        ({"file": upload("p.csv", b"sku,title\n"), "format": "xls"}, 'format: "xls" is not'),
    ],
)
def test_api_refuses_bad_uploads_with_a_clear_400(admin_client, data, message):
    response = admin_client.post(reverse("api-imports"), data)
    assert response.status_code == 400
    assert response.json()["error"].startswith(message), response.json()
    assert not ImportJob.objects.exists()


def test_api_report_answers_a_client_that_asks_for_csv(admin_client):
    job = ImportJob.objects.create(format="csv", source_name="shop.csv", status="done")
    url = reverse("api-import-report", args=[job.pk])
    report = admin_client.get(url, HTTP_ACCEPT="text/csv")
    assert (report.status_code, report["Content-Type"]) == (200, "text/csv; charset=utf-8")
    assert b"".join(report.streaming_content).decode("utf-8-sig") == "line,sku,field,error\r\n"
    missing = admin_client.get(reverse("api-import-report", args=[999]), HTTP_ACCEPT="text/csv")
    assert missing.status_code == 404
    assert missing.json() == {"error": "there is no import 999"}


def test_api_unknown_job_is_a_404(admin_client):
    response = admin_client.get(reverse("api-import-detail", args=[999]))
    assert response.status_code == 404
    assert response.json() == {"error": "there is no import 999"}


def test_admin_upload_page_runs_the_import_and_shows_progress_and_report(
    admin_client, embed_on_commit
):
    page = admin_client.get(reverse("admin:catalog_importjob_add"))
    assert page.status_code == 200
    assert "Import products" in page.content.decode()

    with embed_on_commit():
        response = admin_client.post(
            reverse("admin:catalog_importjob_add"),
            {
                "file": upload("shop.csv", csv_bytes(ROWS)),
                "images": upload("photos.zip", zip_bytes({"red.jpg": RED})),
            },
        )
    job = ImportJob.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:catalog_importjob_change", args=[job.pk])

    detail = admin_client.get(response["Location"]).content.decode()
    assert "shop.csv + photos.zip" in detail
    assert "done" in detail
    assert '<td data-field="created">1</td>' in detail
    assert '<td data-field="failed">2</td>' in detail
    assert "&#x27;lost.jpg&#x27;: not in the ZIP" in detail
    report_url = reverse("admin:catalog_importjob_report", args=[job.pk])
    assert report_url in detail
    report = b"".join(admin_client.get(report_url).streaming_content).decode("utf-8-sig")
    assert "3,A-2,image,'lost.jpg': not in the ZIP" in report

    listing = admin_client.get(reverse("admin:catalog_importjob_changelist")).content.decode()
    assert f"import {job.pk} of shop.csv" in listing
    assert "100%" in listing


def test_admin_upload_refuses_a_hostile_zip_on_the_form(admin_client):
    response = admin_client.post(
        reverse("admin:catalog_importjob_add"),
        {
            "file": upload("shop.csv", csv_bytes(ROWS)),
            "images": upload("photos.zip", zip_bytes({"/etc/passwd": b"root"})),
        },
    )
    assert response.status_code == 200
    assert "(zip slip): archive refused" in response.content.decode()
    assert not ImportJob.objects.exists()


def test_a_running_import_page_polls_for_live_progress(admin_client):
    job = ImportJob.objects.create(format="csv", source_name="big.csv", status="running")
    detail = admin_client.get(reverse("admin:catalog_importjob_change", args=[job.pk]))
    html = detail.content.decode()
    assert f'data-status-url="/api/imports/{job.pk}/"' in html
    assert "fetch(" in html
    status = admin_client.get(reverse("api-import-detail", args=[job.pk])).json()
    assert (status["status"], status["progress"]) == ("running", 0.0)


def test_admin_action_resumes_an_interrupted_import(admin_client, embed_on_commit):
    admin_client.post(reverse("api-imports"), files())  # queued, and its worker died
    job = ImportJob.objects.get()
    ImportJob.objects.filter(pk=job.pk).update(status="running")
    with embed_on_commit():
        response = admin_client.post(
            reverse("admin:catalog_importjob_changelist"),
            {"action": "resume", "_selected_action": [job.pk]},
        )
    assert response.status_code == 302
    job.refresh_from_db()
    assert (job.status, job.rows_processed, job.rows_created) == ("done", 3, 1)
    assert Product.objects.filter(sku="A-1").exists()


def test_the_openapi_schema_describes_the_import_endpoints():
    schema = SchemaGenerator().get_schema(request=None, public=True)
    paths, components = schema["paths"], schema["components"]["schemas"]

    def component(ref):
        return components[ref["$ref"].rsplit("/", 1)[1]]

    create = paths["/api/imports/"]["post"]
    form = component(create["requestBody"]["content"]["multipart/form-data"]["schema"])
    assert list(form["properties"]) == ["file", "images", "format", "dry_run"]
    assert form["properties"]["file"]["format"] == "binary"  # an upload
    assert form["required"] == ["file"]
    assert set(create["responses"]) == {"202", "400", "403"}
    job = component(create["responses"]["202"]["content"]["application/json"]["schema"])
    assert set(job["properties"]) == {
        "id", "status", "format", "dry_run", "source_name", "images_name", "progress", "rows",
        "images_created", "failure", "errors", "report_url", "created", "started", "finished",
    }  # fmt: skip
    assert set(component(job["properties"]["rows"])["properties"]) == {
        "processed", "created", "updated", "unchanged", "failed"
    }  # fmt: skip
    row_error = component(job["properties"]["errors"]["items"])
    assert set(row_error["properties"]) == {"line", "sku", "field", "error"}
    error = component(create["responses"]["400"]["content"]["application/json"]["schema"])
    assert set(error["properties"]) == {"error", "errors"}

    detail = paths["/api/imports/{job_id}/"]["get"]
    assert set(detail["responses"]) == {"200", "403", "404"}
    assert (
        detail["responses"]["200"]["content"]["application/json"]["schema"]
        == (create["responses"]["202"]["content"]["application/json"]["schema"])
    )

    report = paths["/api/imports/{job_id}/report/"]["get"]
    assert report["responses"]["200"]["content"] == {"text/csv": {"schema": {"type": "string"}}}
    assert set(report["responses"]) == {"200", "403", "404"}
