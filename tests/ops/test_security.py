"""Security, tried as an attacker would: who may write, how much, how often, what is loaded.

(Production settings refusing a missing secret, DEBUG and '*' hosts: tests/shop_search.)
"""

import pytest
from django.contrib.auth.models import Permission, User
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from catalog.models import ImportJob, Product
from embeddings.encoder import CheckpointError, ClipEncoder, ModelSpec
from embeddings.models import FinetuneRun
from tests.builders import jpeg_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture
def shopper(client):
    """A logged-in customer account: authenticated, but not staff."""
    user = User.objects.create_user("shopper", password="shopper-password")
    client.force_login(user)
    return user


def import_upload():
    return {"file": SimpleUploadedFile("products.csv", b"sku,title,price\nA-1,Shirt,9.90\n")}


@pytest.mark.parametrize("who", ["anonymous", "shopper"])
def test_imports_need_staff(client, who, request):
    if who == "shopper":
        request.getfixturevalue("shopper")
    response = client.post(reverse("api-imports"), import_upload())
    assert response.status_code in (401, 403), response.content
    assert "error" in response.json()
    assert not ImportJob.objects.exists()


def test_staff_with_the_permission_may_import(client, embed_on_commit):
    staff = User.objects.create_user("merchandiser", password="x", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="add_importjob"))
    client.force_login(staff)
    with embed_on_commit():
        response = client.post(reverse("api-imports"), import_upload())
    assert response.status_code in (201, 202), response.content  # the gate is staff, not everyone


@pytest.mark.parametrize("who", ["anonymous", "shopper"])
def test_admin_writes_need_staff(client, who, request):
    if who == "shopper":
        request.getfixturevalue("shopper")
    add = reverse("admin:catalog_product_add")
    assert client.get(add)["Location"].startswith(reverse("admin:login"))
    response = client.post(add, {"sku": "EVIL", "title": "x", "price": "1", "currency": "USD"})
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))
    assert not Product.objects.exists()


@pytest.mark.parametrize("who", ["anonymous", "shopper", "staff without permission"])
def test_fine_tuning_needs_a_staff_member_allowed_to_start_it(client, who, request):
    if who == "shopper":
        request.getfixturevalue("shopper")
    elif who == "staff without permission":
        client.force_login(User.objects.create_user("intern", password="x", is_staff=True))
    response = client.post(reverse("admin:embeddings_embeddingspace_finetune"))
    assert response.status_code == 302
    assert not FinetuneRun.objects.exists()


def test_anonymous_search_is_throttled(client, settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"anon": "3/min"},
    }
    cache.clear()
    url = reverse("api-search") + "?q=shirt"
    assert [client.get(url).status_code for _ in range(3)] == [200, 200, 200]
    response = client.get(url)
    assert response.status_code == 429
    assert response.json()["error"].startswith("Request was throttled")
    assert "Retry-After" in response.headers
    # Counted per client address: another shopper is not affected.
    assert client.get(url, REMOTE_ADDR="203.0.113.9").status_code == 200
    # Staff (authenticated) are not throttled as anonymous.
    client.force_login(User.objects.create_user("staff", password="x", is_staff=True))
    assert client.get(url).status_code == 200


def test_throttling_lets_requests_through_when_its_cache_is_down(client, settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"anon": "3/min"},
    }
    # A Redis that is not there (a closed port): search stays up, unthrottled, meanwhile.
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:9/0",
            "OPTIONS": {"socket_connect_timeout": 0.2},
        }
    }
    url = reverse("api-search") + "?q=shirt"
    assert [client.get(url).status_code for _ in range(4)] == [200] * 4


def test_uploads_over_the_size_limit_are_refused(client, settings):
    settings.MAX_UPLOAD_IMAGE_BYTES = 4_000
    photo = jpeg_bytes(size=256, seed=1)
    assert len(photo) > 4_000
    response = client.post(
        reverse("api-captions"), {"image": SimpleUploadedFile("big.jpg", photo, "image/jpeg")}
    )
    assert response.status_code == 400
    assert "over the limit" in response.json()["error"]


def test_form_bodies_over_the_memory_limit_are_refused(client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    response = client.post(reverse("api-captions"), {"limit": "1" * 20_000})
    assert response.status_code == 400


def test_checkpoint_with_code_inside_is_never_run(tmp_path):
    import torch

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):  # unpickling this would create the marker file
            return (open, (str(marker), "w"))

    checkpoint = tmp_path / "evil.pt"
    torch.save({"visual.proj": Payload()}, checkpoint)
    with pytest.raises(CheckpointError, match="weights only"):
        ClipEncoder(ModelSpec("shop-tiny", checkpoint=str(checkpoint)), device="cpu")
    assert not marker.exists()
