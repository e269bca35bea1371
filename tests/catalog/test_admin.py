"""A merchandiser adds a product with a photo in the admin; shoppers then find it."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from catalog.models import Product
from embeddings.models import ImageEmbedding
from tests.builders import corrupt_jpeg_bytes, jpeg_bytes

pytestmark = pytest.mark.django_db


def product_form(photo: bytes, **fields):
    data = {
        "sku": "ADM-1",
        "title": "Yellow raincoat",
        "description": "",
        "brand": "Acme",
        "category": "",
        "price": "59.00",
        "currency": "USD",
        "in_stock": "on",
        "status": "active",
        "attributes": "{}",
        "images-TOTAL_FORMS": "1",
        "images-INITIAL_FORMS": "0",
        "images-MIN_NUM_FORMS": "0",
        "images-MAX_NUM_FORMS": "1000",
        "images-0-file": SimpleUploadedFile("coat.jpg", photo, content_type="image/jpeg"),
        "images-0-position": "0",
    }
    data.update(fields)
    return data


def test_product_added_in_admin_is_embedded_and_found(
    admin_client, client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            reverse("admin:catalog_product_add"), product_form(jpeg_bytes((240, 220, 30), seed=3))
        )
    assert response.status_code == 302, response.content.decode()[:2000]
    product = Product.objects.get(sku="ADM-1")
    image = product.images.get()
    assert len(image.sha256) == 64
    assert (image.width, image.height) == (96, 96)
    assert ImageEmbedding.objects.get(image=image).vector is not None

    found = client.get(reverse("api-search"), {"q": "yellow raincoat"}).json()
    assert [r["sku"] for r in found["results"]] == ["ADM-1"]

    # The admin lists show the thumbnail and the embedding status.
    listing = admin_client.get(reverse("admin:catalog_productimage_changelist")).content.decode()
    assert image.file.url in listing
    assert "embedded" in listing
    listing = admin_client.get(reverse("admin:catalog_product_changelist")).content.decode()
    assert image.file.url in listing


def test_a_draft_added_in_admin_is_found_once_made_active(
    admin_client, client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(
            reverse("admin:catalog_product_add"),
            product_form(jpeg_bytes((240, 220, 30), seed=3), status="draft"),
        )
    product = Product.objects.get(sku="ADM-1")
    image = product.images.get()
    assert not ImageEmbedding.objects.filter(image=image).exists()

    def found():
        results = client.get(reverse("api-search"), {"q": "yellow raincoat"}).json()["results"]
        return [r["sku"] for r in results]

    assert found() == []

    def status_set(status):
        form = product_form(b"", status=status)
        form.pop("images-0-file")
        form.update({"images-INITIAL_FORMS": "1", "images-0-id": str(image.pk)})
        form["images-0-product"] = str(product.pk)
        with django_capture_on_commit_callbacks(execute=True):
            response = admin_client.post(
                reverse("admin:catalog_product_change", args=[product.pk]), form
            )
        assert response.status_code == 302, response.content.decode()[:2000]

    status_set("active")
    assert ImageEmbedding.objects.get(image=image).vector is not None
    assert found() == ["ADM-1"]
    status_set("archived")
    assert not ImageEmbedding.objects.filter(image=image).exists()
    assert found() == []


def test_admin_refuses_a_file_that_is_not_an_image(admin_client):
    response = admin_client.post(
        reverse("admin:catalog_product_add"), product_form(b"not an image at all")
    )
    assert response.status_code == 200  # the form again, with the error
    assert "Upload a valid image" in response.content.decode()
    assert not Product.objects.exists()


def test_admin_shows_why_an_image_failed(admin_client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(
            reverse("admin:catalog_product_add"), product_form(jpeg_bytes(seed=4), sku="ADM-2")
        )
    product = Product.objects.get(sku="ADM-2")
    # A file replaced behind the admin's back by a truncated one (e.g. a broken sync).
    image = product.images.get()
    with open(image.file.path, "wb") as f:
        f.write(corrupt_jpeg_bytes())
    from catalog.services import product_image_fill_metadata
    from embeddings.tasks import embed_images

    product_image_fill_metadata(image)
    image.save()
    embed_images.delay([image.pk])
    listing = admin_client.get(reverse("admin:catalog_productimage_changelist")).content.decode()
    assert "failed: image data is corrupt or truncated" in listing


def test_anonymous_users_cannot_use_the_admin(client):
    response = client.get(reverse("admin:catalog_product_add"))
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
