"""Every 400 of the API is JSON `{"error", "errors"}`: DRF's own, and those Django raises
before or beside DRF (too many fields or files, fields over the memory limit, a multipart
body it cannot read, a bad Host). Pages off the API keep Django's own 400 page."""

import jsonschema
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from tests.search.test_api_search import response_schema, schema  # noqa: F401

pytestmark = pytest.mark.django_db


def assert_api_400(response, message: str, schema=None):  # noqa: F811
    """A JSON 400 that says `message`; with the schema, the one the endpoint publishes."""
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/json", response.content[:200]
    body = response.json()
    assert body["error"].startswith(message), body
    assert body["errors"] == {}  # no field is at fault
    if schema is not None:
        path = response.wsgi_request.path
        jsonschema.validate(body, response_schema(schema, path, "post", 400))


def fields(count: int) -> dict:
    return {f"field{n}": "x" for n in range(count)}


def test_too_many_form_fields(client, settings, schema):  # noqa: F811
    many = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 1
    photo = client.post(reverse("api-search-image"), fields(many))  # multipart
    assert_api_400(photo, "Too many fields: at most 1000 are read.", schema)
    events = client.post(
        reverse("api-events"),
        "&".join(f"f{n}=x" for n in range(many)),
        content_type="application/x-www-form-urlencoded",
        headers={"Origin": "http://testserver"},
    )
    assert_api_400(events, "Too many fields", schema)
    query = "&".join(f"f{n}=x" for n in range(many))
    assert_api_400(client.get(f"{reverse('api-search')}?q=shirt&{query}"), "Too many fields")


def test_too_many_files(client, settings, schema):  # noqa: F811
    files = {
        f"image{n}": SimpleUploadedFile(f"{n}.jpg", b"x", "image/jpeg")
        for n in range(settings.DATA_UPLOAD_MAX_NUMBER_FILES + 1)
    }
    response = client.post(reverse("api-match"), files)
    assert_api_400(response, "Too many files: at most 100 are read.", schema)


def test_fields_over_the_memory_limit(client, settings, schema):  # noqa: F811
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = client.post(reverse("api-captions"), {"limit": "5", "text": "x" * 2000})
    assert_api_400(response, "The request's fields are over the limit of 0.0 MB", schema)


def test_a_multipart_body_that_cannot_be_read(client, schema):  # noqa: F811
    for content_type in ("multipart/form-data", "multipart/form-data; boundary="):
        response = client.post(reverse("api-search-image"), b"--x\r\n", content_type=content_type)
        assert_api_400(response, "Multipart form parse error", schema)
    broken_json = client.post(reverse("api-events"), "{", content_type="application/json")
    assert_api_400(broken_json, "JSON parse error", schema)


def test_a_bad_host_on_the_api(client):
    response = client.get(reverse("api-search"), {"q": "shirt"}, HTTP_HOST="evil.example")
    assert_api_400(response, "Bad request.")


def test_pages_off_the_api_keep_djangos_400_page(client, settings):
    response = client.post(
        reverse("shop-photo-search"), fields(settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 1)
    )
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/html")
