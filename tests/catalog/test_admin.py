"""A merchandiser adds a product with a photo in the admin; shoppers then find it."""

from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from catalog.models import Facet, FacetValueAlias, Product
from embeddings.models import ImageEmbedding
from tests.builders import corrupt_jpeg_bytes, jpeg_bytes

pytestmark = pytest.mark.django_db


def formset(prefix: str, rows: list[dict], initial: int = 0) -> dict:
    """An inline's POST data: its management form and `rows`, one dict of fields a form."""
    data = {
        f"{prefix}-TOTAL_FORMS": str(len(rows)),
        f"{prefix}-INITIAL_FORMS": str(initial),
        f"{prefix}-MIN_NUM_FORMS": "0",
        f"{prefix}-MAX_NUM_FORMS": "1000",
    }
    for i, row in enumerate(rows):
        data.update({f"{prefix}-{i}-{name}": value for name, value in row.items()})
    return data


def form_as_shown(response) -> dict:
    """The POST data of an admin change page as it was shown, inlines included (files
    left out: unchanged), to edit a few fields and send back."""
    forms = [response.context["adminform"].form]
    data = {}
    for inline in response.context["inline_admin_formsets"]:
        management = inline.formset.management_form
        data.update(
            {management[name].html_name: value for name, value in management.initial.items()}
        )
        forms += inline.formset.forms
    for form in forms:
        for field in form:
            value = field.value()
            if isinstance(value, bool):
                if value:
                    data[field.html_name] = "on"
            elif not hasattr(value, "url"):  # a stored file
                data[field.html_name] = "" if value is None else str(value)
    return data


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
        **formset("variants", []),
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


def variant(sku: str, options: str, price: str, *, stock: str = "", in_stock=True, **fields):
    row = {"sku": sku, "options": options, "price": price, "stock": stock, "position": "0"}
    return row | {"active": "on"} | ({"in_stock": "on"} if in_stock else {}) | fields


def test_a_product_with_variants_follows_them(admin_client, client):
    data = product_form(jpeg_bytes((200, 40, 40), seed=5), sku="TEE-V", title="Plain tee")
    data |= formset(
        "variants",
        [
            variant(
                "TEE-V-S",
                '{"Colour": "Red", "Size": "S"}',
                "12.00",
                stock="3",
                compare_at_price="18.00",
            ),
            variant(
                "TEE-V-L", '{"Colour": "Red", "Size": "L"}', "15.00", stock="0", in_stock=False
            ),
        ],
    )
    response = admin_client.post(reverse("admin:catalog_product_add"), data)
    assert response.status_code == 302, response.content.decode()[:3000]
    product = Product.objects.get(sku="TEE-V")
    assert product.options == [  # in the order typed (stored JSON would put Size first)
        {"name": "Colour", "values": ["Red"]},
        {"name": "Size", "values": ["S", "L"]},
    ]
    assert (product.price, product.price_max, product.compare_at_price, product.in_stock) == (
        Decimal("12.00"),
        Decimal("15.00"),
        Decimal("18.00"),
        True,
    )
    listing = admin_client.get(reverse("admin:catalog_product_changelist")).content.decode()
    assert "12.00\u201315.00" in listing
    assert '<td class="field-variant_count">2</td>' in listing

    # The small size sells out, the large comes back, with the product's photo.
    change = reverse("admin:catalog_product_change", args=[product.pk])
    page = admin_client.get(change)
    assert "Size: S, L" in page.content.decode()
    image = product.images.get()
    choices = page.context["inline_admin_formsets"][1].formset.forms[0].fields["image"].queryset
    assert list(choices) == [image]  # the product's own photos only
    data = form_as_shown(page)
    assert "price" not in data  # it follows the variants
    del data["variants-0-in_stock"]
    data |= {"variants-0-stock": "0", "variants-1-in_stock": "on", "variants-1-stock": "5"}
    data["variants-1-image"] = str(image.pk)
    response = admin_client.post(change, data)
    assert response.status_code == 302, response.content.decode()[:3000]
    product.refresh_from_db()
    assert (product.price, product.price_max, product.compare_at_price, product.in_stock) == (
        Decimal("15.00"),
        Decimal("15.00"),
        None,
        True,
    )
    assert image.file.url in admin_client.get(change).content.decode()  # the variant's photo


def test_variant_options_are_checked(admin_client):
    data = product_form(jpeg_bytes(seed=6), sku="TEE-W")
    data |= formset("variants", [variant("TEE-W-1", '["S"]', "9.00")])
    response = admin_client.post(reverse("admin:catalog_product_add"), data)
    assert response.status_code == 200
    assert "Option names and their values" in response.content.decode()
    assert not Product.objects.filter(sku="TEE-W").exists()


def test_status_is_changed_and_filtered_in_the_list(admin_client, client, make_product):
    product = make_product(sku="ST-1", title="Velvet cushion")
    changelist = reverse("admin:catalog_product_changelist")
    response = admin_client.post(
        changelist,
        {
            "form-TOTAL_FORMS": "1",
            "form-INITIAL_FORMS": "1",
            "form-MIN_NUM_FORMS": "0",
            "form-MAX_NUM_FORMS": "1000",
            "form-0-id": str(product.pk),
            "form-0-status": "draft",
            "_save": "Save",
        },
    )
    assert response.status_code == 302
    product.refresh_from_db()
    assert product.status == "draft"
    drafts = admin_client.get(changelist, {"status__exact": "draft"}).content.decode()
    assert "ST-1" in drafts
    assert "ST-1" not in admin_client.get(changelist, {"status__exact": "active"}).content.decode()
    found = client.get(reverse("api-search"), {"q": "velvet cushion"}).json()
    assert found["results"] == []  # a draft is not searchable


def test_facets_are_listed_in_order_with_their_aliases(admin_client):
    admin_client.post(
        reverse("admin:catalog_facet_add"),
        {"name": "Colour", "label": "Colour", "position": "1"}
        | formset("aliases", [{"alias": "dark blue", "value": "Navy"}]),
    )
    Facet.objects.create(name="Size", position=0)
    facet = Facet.objects.get(name="Colour")
    assert FacetValueAlias.objects.get(facet=facet).value == "Navy"
    listing = admin_client.get(reverse("admin:catalog_facet_changelist"))
    assert [f.name for f in listing.context["cl"].result_list] == ["Size", "Colour"]
    assert 'name="form-0-position"' in listing.content.decode()  # edited in the list
    page = admin_client.get(reverse("admin:catalog_facet_change", args=[facet.pk]))
    assert "dark blue" in page.content.decode()
