"""The JSON API and the shop page: what a client or a shopper sees, good input and bad."""

import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image

from catalog.models import Product
from tests.builders import corrupt_jpeg_bytes, jpeg_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_similarity_floor(settings):
    """Keep image-only hits: the random tiny model's similarities are all near 0."""
    settings.SEARCH_SIMILARITY_FLOOR = -1.0


@pytest.fixture
def shop(make_product, embed_on_commit):
    with embed_on_commit():
        red = make_product(
            title="Red striped t-shirt",
            price="12.50",
            images=[jpeg_bytes((220, 20, 20), stripes=(250, 250, 250), seed=1)],
        )
        blue = make_product(
            title="Blue jeans", price="49.00", images=[jpeg_bytes((20, 40, 160), seed=2)]
        )
        make_product(title="No photo yet")
    return red, blue


def upload(data: bytes, name="photo.jpg", content_type="image/jpeg"):
    return SimpleUploadedFile(name, data, content_type=content_type)


def test_search_api_returns_ranked_products(client, shop):
    response = client.get(reverse("api-search"), {"q": "red striped t-shirt", "limit": 5})
    assert response.status_code == 200
    body = response.json()
    assert body["space"] == "shop-tiny@random-seed0"
    # The t-shirt matches; the jeans (a photo only) are related; no photo, no ranking.
    assert body["count"] == 1
    assert [(r["sku"], r["related"]) for r in body["results"]] == [
        (shop[0].sku, False),
        (shop[1].sku, True),
    ]
    first = body["results"][0]
    assert set(first) == {
        "id",
        "sku",
        "title",
        "brand",
        "price",
        "currency",
        "in_stock",
        "image_url",
        "variant",
        "score",
        "similarity",
        "matched",
        "related",
    }
    assert first["variant"] is None  # a product without options
    assert first["image_url"].startswith("http://testserver/media/products/")
    assert body["results"][0]["score"] >= body["results"][1]["score"]
    # The title matches the words, so it comes first and says why.
    product = Product.objects.get(pk=first["id"])
    assert product == shop[0]
    assert first["matched"] == ["text", "image"]
    assert first["title"] == product.title
    assert first["price"] == str(product.price)
    assert body["results"][1]["matched"] == ["image"]
    assert set(body["facets"]) == {"categories", "brands", "in_stock", "attributes"}


def test_search_api_pages(client, shop):
    first = client.get(reverse("api-search"), {"q": "jeans", "limit": 1}).json()
    second = client.get(reverse("api-search"), {"q": "jeans", "limit": 1, "offset": 1}).json()
    assert first["count"] == second["count"] == 2
    assert first["results"][0]["id"] != second["results"][0]["id"]
    assert client.get(reverse("api-search"), {"q": "jeans", "offset": 5}).json()["results"] == []


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "q: Enter a search query."),
        ({"q": "   "}, "q: Enter a search query."),
        ({"q": "shoes", "limit": "0"}, "limit: Ensure this value is greater than or equal to 1."),
        ({"q": "shoes", "limit": "many"}, "limit: A valid integer is required."),
        (
            {"q": "shoes", "offset": "-1"},
            "offset: Ensure this value is greater than or equal to 0.",
        ),
        ({"q": "x" * 501}, "q: Ensure this field has no more than 500 characters."),
    ],
)
def test_search_api_bad_input_is_a_400_with_a_clear_message(client, db, params, message):
    response = client.get(reverse("api-search"), params)
    assert response.status_code == 400
    assert response.json()["error"] == message


def test_captions_api_returns_catalog_captions_for_an_image(client, shop):
    response = client.post(
        reverse("api-captions"), {"image": upload(jpeg_bytes((220, 20, 20), seed=9)), "limit": 3}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["space"] == "shop-tiny@random-seed0"
    assert len(body["results"]) == 3
    titles = {p.title for p in Product.objects.all()}
    assert {r["text"] for r in body["results"]} <= titles
    assert set(body["results"][0]) == {"product_id", "field", "text", "score"}
    scores = [r["score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)


def test_captions_api_accepts_png_too(client, shop):
    buffer = io.BytesIO()
    Image.new("RGBA", (80, 60), (0, 0, 200, 255)).save(buffer, "PNG")
    response = client.post(
        reverse("api-captions"), {"image": upload(buffer.getvalue(), "x.png", "image/png")}
    )
    assert response.status_code == 200
    assert response.json()["results"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"just some text, not a photo", "not a recognised image"),
        (corrupt_jpeg_bytes(), "corrupt or truncated"),
        (jpeg_bytes(size=400), "over the limit of 0.0 MB"),
    ],
)
def test_captions_api_bad_uploads_are_a_400(client, shop, settings, data, message):
    settings.MAX_UPLOAD_IMAGE_BYTES = 20_000
    response = client.post(reverse("api-captions"), {"image": upload(data)})
    assert response.status_code == 400
    assert response.json()["error"].startswith("image: ")
    assert message in response.json()["error"]


def test_captions_api_without_an_image_is_a_400(client, db):
    response = client.post(reverse("api-captions"), {"limit": 3})
    assert response.status_code == 400
    assert response.json()["error"] == "image: No file was submitted."
    response = client.post(reverse("api-captions"), {"image": "not-a-file"})
    assert response.status_code == 400


def test_shop_page_shows_the_search_box_and_results(client, shop):
    page = client.get(reverse("shop-search")).content.decode()
    assert 'name="q"' in page
    assert "Type what you are looking for" in page
    page = client.get(reverse("shop-search"), {"q": "red t-shirt"}).content.decode()
    assert "1 product for" in page
    assert "Related products" in page
    for product in shop:
        assert product.title in page
        assert f"{product.price} USD" in page
        assert f'data-sku="{product.sku}"' in page
    assert "No photo yet" not in page


def test_product_page(client, shop):
    red = shop[0]
    page = client.get(reverse("product-detail", args=[red.pk])).content.decode()
    assert red.title in page
    assert red.sku in page
    assert red.images.get().file.url in page
    assert client.get(reverse("product-detail", args=[999999])).status_code == 404
