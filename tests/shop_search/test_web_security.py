"""The web-facing defences, tried as an attacker would, through Django's real request path:
large anonymous bodies, forged client addresses, password guessing, JSON where a form is
expected, weak passwords, inline scripts. (With real processes and nginx: tests/ops.)"""

import base64
import io
import re
import uuid

import pytest
from django.contrib.auth.models import Permission, User
from django.contrib.sessions.models import Session
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from catalog.models import ImportJob
from tests.builders import COLOURS, jpeg_bytes

pytestmark = pytest.mark.django_db

CSRF_SECRET = "a" * 16 + "B" * 16  # any well-formed token: 32 letters and digits
BODY_LIMIT = 100_000


class CountingInput(io.BytesIO):
    """A request body that counts how much of it the server reads."""

    bytes_read = 0

    def read(self, size=-1):
        chunk = super().read(size)
        self.bytes_read += len(chunk)
        return chunk

    def readline(self, size=-1):
        chunk = super().readline(size)
        self.bytes_read += len(chunk)
        return chunk


def multipart_csv(size: int) -> tuple[bytes, str]:
    boundary = "----shop-test-boundary"
    rows = b"sku,title,price\n" + b"BIG-1,Shirt,9.90\n" * (size // 17 + 1)
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="products.csv"\r\nContent-Type: text/csv\r\n\r\n'
        ).encode()
        + rows
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def post_counted(client: Client, path: str, size: int, **extra):
    """POST a multipart body of about `size` bytes, with a valid CSRF cookie and header."""
    body, content_type = multipart_csv(size)
    stream = CountingInput(body)
    client.cookies["csrftoken"] = CSRF_SECRET
    response = client.post(
        path,
        data=body,
        content_type=content_type,
        HTTP_X_CSRFTOKEN=CSRF_SECRET,
        **{"wsgi.input": stream},
        **extra,
    )
    return response, stream


@pytest.fixture
def body_limit(settings):
    settings.ANONYMOUS_MAX_BODY_BYTES = BODY_LIMIT
    return BODY_LIMIT


def products_csv() -> SimpleUploadedFile:
    return SimpleUploadedFile("products.csv", b"sku,title,price\nA-1,Shirt,9.90\n", "text/csv")


def importer(username="merchandiser") -> User:
    staff = User.objects.create_user(username, password="Merch-Password-2024", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="add_importjob"))
    return staff


# --- large bodies from anonymous clients ---------------------------------------------------


@pytest.mark.parametrize("path", ["/admin/catalog/importjob/add/", "/api/imports/"])
def test_large_anonymous_body_is_refused_before_a_byte_is_read(body_limit, path):
    client = Client(enforce_csrf_checks=True)  # as a browser: CSRF would parse the body
    response, stream = post_counted(client, path, size=3 * body_limit)
    assert response.status_code == 413
    text = response.json()["error"] if path.startswith("/api/") else response.content.decode()
    assert "over the limit of 0.1 MB" in text
    assert "signed in as staff" in text
    assert stream.bytes_read == 0
    assert not ImportJob.objects.exists()


@pytest.mark.parametrize("who", ["forged session", "signed out", "shopper", "inactive staff"])
def test_only_a_live_staff_session_may_send_a_large_body(body_limit, who):
    client = Client(enforce_csrf_checks=True)
    if who == "forged session":
        client.cookies["sessionid"] = uuid.uuid4().hex
    elif who == "signed out":
        client.force_login(importer())
        key = client.cookies["sessionid"].value
        client.logout()
        client.cookies["sessionid"] = key  # the old cookie, kept by the attacker
    elif who == "shopper":
        client.force_login(User.objects.create_user("shopper", password="x"))
    else:
        staff = importer()
        client.force_login(staff)
        staff.is_active = False
        staff.save()
    response, stream = post_counted(client, "/api/imports/", size=3 * body_limit)
    assert response.status_code == 413, response.content
    assert stream.bytes_read == 0


def test_signed_in_staff_upload_large_files(body_limit, embed_on_commit):
    client = Client(enforce_csrf_checks=True)
    client.force_login(importer())
    with embed_on_commit():
        response, stream = post_counted(client, "/api/imports/", size=3 * body_limit)
    assert response.status_code in (201, 202), response.content
    assert stream.bytes_read > 3 * body_limit
    assert ImportJob.objects.get().source_bytes > 3 * body_limit


def test_small_anonymous_bodies_go_through(body_limit):
    client = Client(enforce_csrf_checks=True)
    response, stream = post_counted(client, "/admin/catalog/importjob/add/", size=1000)
    assert response.status_code == 302  # to the login page, as before: not refused for size
    assert response["Location"].startswith(reverse("admin:login"))
    assert stream.bytes_read > 1000


# --- who the client is ---------------------------------------------------------------------


@pytest.fixture
def throttled(settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"anon": "3/min"},
    }
    cache.clear()


def test_forwarded_for_cannot_buy_a_fresh_throttle_budget(client, throttled):
    """With no proxy configured (API_NUM_PROXIES unset: 0), X-Forwarded-For is not believed."""
    url = reverse("api-search") + "?q=shirt"
    statuses = [
        client.get(url, HTTP_X_FORWARDED_FOR=f"198.51.100.{n}").status_code for n in range(4)
    ]
    assert statuses == [200, 200, 200, 429]


def test_behind_one_proxy_the_client_is_the_address_it_saw(client, throttled, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    url = reverse("api-search") + "?q=shirt"
    # Whatever the client wrote before the proxy's own entry counts for nothing.
    statuses = [
        client.get(url, HTTP_X_FORWARDED_FOR=f"10.9.9.{n}, 203.0.113.7").status_code
        for n in range(4)
    ]
    assert statuses == [200, 200, 200, 429]
    assert client.get(url, HTTP_X_FORWARDED_FOR="203.0.113.8").status_code == 200


def test_shop_pages_are_throttled_with_the_api(client, throttled, catalog_shop):
    assert client.get(reverse("shop-search"), {"q": "striped"}).status_code == 200
    assert client.get(reverse("api-search") + "?q=striped").status_code == 200
    assert client.get(reverse("shop-search"), {"q": "dress"}).status_code == 200
    page = client.get(reverse("shop-search"), {"q": "shoes"})
    assert page.status_code == 429
    assert "Too many searches from your address: try again in" in page.content.decode()
    assert int(page["Retry-After"]) >= 1
    photo = client.post(reverse("shop-photo-search"), {})
    assert photo.status_code == 429
    # Another address has its own budget; signed-in users are not throttled as anonymous.
    assert client.get("/", {"q": "dress"}, REMOTE_ADDR="203.0.113.9").status_code == 200
    client.force_login(User.objects.create_user("staff", password="x", is_staff=True))
    assert client.get(reverse("shop-search"), {"q": "shoes"}).status_code == 200


# --- logins ----------------------------------------------------------------------------------


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def test_the_api_takes_no_passwords(client):
    importer()
    response = client.post(
        reverse("api-imports"),
        {"file": products_csv()},
        HTTP_AUTHORIZATION=basic("merchandiser", "Merch-Password-2024"),
    )
    assert response.status_code in (401, 403), response.content
    assert not ImportJob.objects.exists()


def test_password_guesses_on_the_api_are_throttled_like_any_request(client, throttled):
    url = reverse("api-search") + "?q=shirt"
    guesses = [
        client.get(url, HTTP_AUTHORIZATION=basic("admin", f"guess-{n}")).status_code
        for n in range(4)
    ]
    assert guesses == [200, 200, 200, 429]  # anonymous requests: no password was checked


def test_scripts_import_with_an_api_token(client, embed_on_commit):
    from rest_framework.authtoken.models import Token

    token = Token.objects.create(user=importer())
    with embed_on_commit():
        response = client.post(
            reverse("api-imports"),
            {"file": products_csv()},
            HTTP_AUTHORIZATION=f"Token {token.key}",
        )
    assert response.status_code in (201, 202), response.content
    assert ImportJob.objects.get().requested_by == token.user


def admin_login(client, password, **extra):
    return client.post(
        reverse("admin:login"), {"username": "merchandiser", "password": password}, **extra
    )


def test_admin_logins_lock_out_after_the_failure_limit(client, settings):
    settings.AXES_FAILURE_LIMIT = 3
    importer()
    # Forwarded addresses are not believed (no proxy configured): all from one client.
    guesses = [
        admin_login(client, f"guess-{n}", HTTP_X_FORWARDED_FOR=f"198.51.100.{n}") for n in range(3)
    ]
    assert [response.status_code for response in guesses] == [200, 200, 429]
    assert "Please enter the correct username and password" in guesses[0].content.decode()
    # Locked: even the right password is refused now, and says why.
    locked = admin_login(client, "Merch-Password-2024")
    assert locked.status_code == 429
    assert "Too many failed logins for this username from your address" in locked.content.decode()
    assert "_auth_user_id" not in client.session
    # The lockout is of this username from this address: elsewhere the merchandiser logs in.
    elsewhere = admin_login(Client(), "Merch-Password-2024", REMOTE_ADDR="203.0.113.20")
    assert elsewhere.status_code == 302


def test_admin_refuses_weak_passwords(client):
    admin = User.objects.create_superuser("boss", password="Boss-Password-2024")
    client.force_login(admin)
    url = reverse("admin:auth_user_password_change", args=[admin.pk])
    for weak, why in [
        ("password", "This password is too common."),
        ("1234567", "This password is too short."),
        ("95873160284", "This password is entirely numeric."),
    ]:
        response = client.post(url, {"password1": weak, "password2": weak})
        assert response.status_code == 200
        assert why in response.content.decode()
    admin.refresh_from_db()
    assert admin.check_password("Boss-Password-2024")


# --- the photo search keeps no session ---------------------------------------------------------


def test_photo_search_stores_no_session(client, catalog_shop):
    def upload():
        return SimpleUploadedFile("boots.jpg", jpeg_bytes(COLOURS[4], seed=4), "image/jpeg")

    first = client.post(reverse("shop-photo-search"), {"image": upload()})
    second = client.post(reverse("shop-photo-search"), {"image": upload()})
    assert first.status_code == second.status_code == 302
    assert not Session.objects.exists()
    assert "sessionid" not in client.cookies
    # A random id per search: it tells nothing about the photo, and is no one else's.
    assert first["Location"] != second["Location"]
    assert re.fullmatch(r"/\?photo=[\w-]{22}", first["Location"])
    page = Client().get(first["Location"]).content.decode()  # the link alone is enough
    assert "6 products look like your photo" in page


# --- Content-Security-Policy -------------------------------------------------------------------


def policy(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    directives = (part.split() for part in header.split(";") if part.strip())
    return {name: values for name, *values in directives}


def test_pages_forbid_inline_and_foreign_scripts(client, db):
    for url in ["/", reverse("admin:login"), reverse("api-docs"), reverse("api-search") + "?q=x"]:
        directives = policy(client.get(url))
        assert directives["script-src"] == ["'self'"], url
        assert directives["default-src"] == ["'self'"]
        assert directives["object-src"] == ["'none'"]
        assert directives["frame-ancestors"] == ["'none'"]


def test_swagger_ui_starts_from_a_script_file(client, db):
    page = client.get(reverse("api-docs")).content.decode()
    inline = [s for s in re.findall(r"<script([^>]*)>", page) if "src=" not in s]
    assert inline == []
    script_url = re.search(r'<script src="([^"]*script=[^"]*)"', page).group(1)
    script = client.get(script_url.replace("&amp;", "&"))
    assert script.status_code == 200
    assert script["Content-Type"].startswith("application/javascript")
    assert reverse("api-schema") in script.content.decode()


def test_import_progress_script_carries_the_requests_nonce(client):
    staff = importer()
    staff.user_permissions.add(Permission.objects.get(codename="view_importjob"))
    client.force_login(staff)
    job = ImportJob.objects.create(
        format="csv", source_name="p.csv", status=ImportJob.Status.RUNNING, requested_by=staff
    )
    response = client.get(reverse("admin:catalog_importjob_change", args=[job.pk]))
    assert response.status_code == 200
    nonce = re.search(r'<script nonce="([^"]+)">', response.content.decode()).group(1)
    assert policy(response)["script-src"] == ["'self'", f"'nonce-{nonce}'"]
