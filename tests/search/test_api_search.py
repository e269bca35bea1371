"""The search API and the shop pages: filters, photos, similar products, match, the schema."""

import jsonschema
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from drf_spectacular.validation import validate_schema

from embeddings.spaces import space_active
from tests.builders import COLOURS, corrupt_jpeg_bytes, jpeg_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_similarity_floor(settings):
    settings.SEARCH_SIMILARITY_FLOOR = -1.0


def upload(data: bytes, name="photo.jpg", content_type="image/jpeg"):
    return SimpleUploadedFile(name, data, content_type=content_type)


def own_photo(index):
    """The exact photo catalog_shop gave its product number `index`."""
    return upload(jpeg_bytes(COLOURS[index % 8], seed=index))


def skus(body):
    return {result["sku"] for result in body["results"]}


# --- text search with filters -------------------------------------------------------------


def test_search_api_filters_and_facets(client, catalog_shop):
    response = client.get(
        reverse("api-search"),
        {"q": "striped", "category": "clothing", "max_price": "40", "in_stock": "true"},
    )
    assert response.status_code == 200
    body = response.json()
    # Clothing includes its sub-categories; one dress is out of stock, the other too dear.
    # The plain t-shirt passes the filters, but it is not striped: related, not counted.
    assert skus(body) == {"TEE-100", "TEE-101"}
    assert body["count"] == 1
    assert [(r["sku"], r["related"]) for r in body["results"]] == [
        ("TEE-100", False),
        ("TEE-101", True),
    ]
    assert body["results"][0]["matched"] == ["text", "image"]
    facets = body["facets"]  # of the matches only
    assert facets["in_stock"] == 1
    assert [(c["slug"], c["count"], c["depth"]) for c in facets["categories"]] == [
        ("clothing", 1, 0),
        ("clothing-t-shirts", 1, 1),
    ]
    assert [(b["brand"], b["count"]) for b in facets["brands"]] == [("Acme", 1)]


def test_search_api_brand_filter_and_blank_parameters(client, catalog_shop):
    body = client.get(
        reverse("api-search"), {"q": "shoes", "brand": "Stepwell", "category": "", "min_price": ""}
    ).json()
    assert skus(body) == {"SHO-300", "SHO-301"}


def test_search_api_exact_sku_first(client, catalog_shop):
    body = client.get(reverse("api-search"), {"q": "dRs-201"}).json()
    assert body["results"][0]["sku"] == "DRS-201"
    assert "sku" in body["results"][0]["matched"]


def test_search_api_says_nothing_matches_nonsense(client, catalog_shop):
    space = space_active()
    space.similarity_floor = 0.5
    space.save(update_fields=["similarity_floor"])
    body = client.get(reverse("api-search"), {"q": "asdfgh"}).json()
    assert body["count"] == 0
    assert body["results"] == []
    assert body["facets"] == {"categories": [], "brands": [], "in_stock": 0, "attributes": []}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"q": ""}, "q: Enter a search query."),
        ({"q": "shoes", "category": "nope"}, "category: Unknown category 'nope'."),
        ({"q": "shoes", "min_price": "-1"},
         "min_price: Ensure this value is greater than or equal to 0."),
        ({"q": "shoes", "max_price": "cheap"}, "max_price: A valid number is required."),
        ({"q": "shoes", "min_price": "50", "max_price": "10"},
         "max_price: Must be at least min_price (50.00)."),
        ({"q": "shoes", "in_stock": "maybe"}, "in_stock: Must be a valid boolean."),
    ],
)  # fmt: skip
def test_search_api_bad_filters_are_a_400(client, catalog_shop, params, message):
    response = client.get(reverse("api-search"), params)
    assert response.status_code == 400
    assert response.json()["error"] == message


# --- search by photo ----------------------------------------------------------------------


def test_image_search_api_has_the_text_search_shape(client, catalog_shop):
    response = client.post(reverse("api-search-image"), {"image": own_photo(4), "limit": 3})
    assert response.status_code == 200
    body = response.json()
    text_body = client.get(reverse("api-search"), {"q": "boots", "limit": 3}).json()
    assert set(body) == set(text_body)
    assert set(body["results"][0]) == set(text_body["results"][0])
    assert body["results"][0]["sku"] == "SHO-300"
    assert body["results"][0]["similarity"] > 0.999
    assert body["results"][0]["matched"] == ["image"]
    assert body["count"] == len(catalog_shop)
    assert len(body["results"]) == 3


def test_image_search_api_filters(client, catalog_shop):
    body = client.post(
        reverse("api-search-image"), {"image": own_photo(4), "category": "clothing-dresses"}
    ).json()
    assert skus(body) == {"DRS-200", "DRS-201"}
    assert body["count"] == 2
    # Empty form fields are "not given", as in the query string.
    response = client.post(
        reverse("api-search-image"), {"image": own_photo(4), "min_price": "", "brand": ""}
    )
    assert response.status_code == 200
    assert response.json()["count"] == len(catalog_shop)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"image": upload(b"not a photo at all")}, "not a recognised image"),
        ({"image": upload(corrupt_jpeg_bytes())}, "corrupt or truncated"),
        ({}, "No file was submitted."),
        ({"image": upload(jpeg_bytes()), "brand": "x" * 121}, "brand: Ensure this field"),
    ],
)
def test_image_search_api_bad_input_is_a_400(client, db, data, message):
    response = client.post(reverse("api-search-image"), data)
    assert response.status_code == 400
    assert message in response.json()["error"]


# --- similar products and image-text match ------------------------------------------------


def test_similar_products_api(client, catalog_shop):
    product = catalog_shop["TEE-100"]
    response = client.get(reverse("api-product-similar", args=[product.pk]), {"limit": 3})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"search_id", "count", "space", "results"}
    assert body["count"] == 3
    assert product.sku not in skus(body)
    similarities = [r["similarity"] for r in body["results"]]
    assert similarities == sorted(similarities, reverse=True)


def test_similar_products_api_errors(client, catalog_shop):
    response = client.get(reverse("api-product-similar", args=[999999]))
    assert response.status_code == 404
    assert response.json()["error"]
    product = catalog_shop["TEE-100"]
    response = client.get(reverse("api-product-similar", args=[product.pk]), {"limit": "0"})
    assert response.status_code == 400
    assert response.json()["error"] == "limit: Ensure this value is greater than or equal to 1."


def test_match_api_scores_a_photo_against_a_text(client, catalog_shop):
    response = client.post(
        reverse("api-match"), {"image": own_photo(0), "text": "Red striped T-Shirt"}
    )
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"space", "score", "rank", "rank_label", "compared", "top_captions"}
    assert -1 <= body["score"] <= 1
    assert body["rank"] >= 1
    assert body["rank_label"] == str(body["rank"])
    # Titles, translated titles and descriptions of six products.
    assert body["compared"] == 18
    assert len(body["top_captions"]) == 5


def test_match_api_rank_beyond_the_compared_captions(client, catalog_shop, settings):
    settings.MATCH_TOP_CAPTIONS = 1
    bodies = [
        client.post(reverse("api-match"), {"image": own_photo(0), "text": text}).json()
        for text in ("Red striped T-Shirt", "Blue linen dress", "Brown suede boots")
    ]
    assert {b["compared"] for b in bodies} == {1}
    beyond = [b for b in bodies if b["rank"] is None]
    assert beyond
    assert {b["rank_label"] for b in beyond} == {"> 1"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"text": "red"}, "image: No file was submitted."),
        ({"image": "x", "text": "red"}, "image: The submitted data was not a file."),
        ({"image": jpeg_bytes(), "text": ""}, "text: Enter the text to match."),
        ({"image": b"GIF89a but not really", "text": "red"}, "not a recognised image"),
    ],
)
def test_match_api_bad_input_is_a_400(client, db, data, message):
    data = {k: upload(v) if isinstance(v, bytes) else v for k, v in data.items()}
    response = client.post(reverse("api-match"), data)
    assert response.status_code == 400
    assert message in response.json()["error"]


# --- the OpenAPI schema -------------------------------------------------------------------


@pytest.fixture
def schema(client, db):
    response = client.get(reverse("api-schema"), {"format": "json"})
    assert response.status_code == 200
    document = response.json()
    validate_schema(document)  # a valid OpenAPI 3 document
    return document


def json_schema(node, components):
    """An OpenAPI 3.0 schema as JSON Schema; objects refuse keys the schema does not list."""
    if isinstance(node, list):
        return [json_schema(item, components) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return json_schema(components[node["$ref"].rsplit("/", 1)[1]], components)
    out = {k: json_schema(v, components) for k, v in node.items() if k != "nullable"}
    if "properties" in node and "additionalProperties" not in node:
        out["additionalProperties"] = False
    return {"anyOf": [out, {"type": "null"}]} if node.get("nullable") else out


def response_schema(schema, path, method, status):
    content = schema["paths"][path][method]["responses"][str(status)]["content"]
    return json_schema(content["application/json"]["schema"], schema["components"]["schemas"])


def test_schema_lists_what_the_search_endpoints_accept(schema):
    search = schema["paths"]["/api/search/"]["get"]
    assert {p["name"] for p in search["parameters"]} == {
        "q",
        "limit",
        "offset",
        "category",
        "brand",
        "min_price",
        "max_price",
        "in_stock",
        "sort",
        "correct",
        "understand",
        "session",
        "attr.<name>",
    }
    assert next(p for p in search["parameters"] if p["name"] == "q")["required"] is True
    components = schema["components"]["schemas"]
    image = schema["paths"]["/api/search/image/"]["post"]["requestBody"]["content"]
    body = json_schema(image["multipart/form-data"]["schema"], components)
    assert set(body["properties"]) == {
        "image",
        "limit",
        "offset",
        "category",
        "brand",
        "min_price",
        "max_price",
        "in_stock",
        "sort",
        "session",
    }
    assert body["required"] == ["image"]
    match = schema["paths"]["/api/match/"]["post"]["requestBody"]["content"]
    assert json_schema(match["multipart/form-data"]["schema"], components)["required"] == [
        "image",
        "text",
    ]
    similar = schema["paths"]["/api/products/{product_id}/similar/"]["get"]["parameters"]
    assert {p["name"] for p in similar} == {"product_id", "limit", "session"}


def test_schema_describes_what_the_endpoints_return(client, schema, catalog_shop, make_product):
    product = catalog_shop["TEE-100"]
    calls = [
        ("/api/search/", "get", 200, client.get("/api/search/", {"q": "red"})),
        ("/api/search/", "get", 400, client.get("/api/search/", {"q": ""})),
        # Nothing relevant: suggestions instead of results.
        ("/api/search/", "get", 200, client.get("/api/search/", {"q": "x", "brand": "Nobody"})),
        ("/api/search/", "get", 200, client.get("/api/search/", {"q": "stripped shirt"})),
        ("/api/suggest/", "get", 200, client.get("/api/suggest/", {"q": "str"})),
        ("/api/suggest/", "get", 400, client.get("/api/suggest/", {"q": " "})),
        (
            "/api/search/image/",
            "post",
            200,
            client.post("/api/search/image/", {"image": own_photo(1)}),
        ),
        (
            "/api/products/{product_id}/similar/",
            "get",
            200,
            client.get(f"/api/products/{product.pk}/similar/"),
        ),
        (
            "/api/products/{product_id}/similar/",
            "get",
            404,
            client.get("/api/products/999999/similar/"),
        ),
        (
            "/api/match/",
            "post",
            200,
            client.post("/api/match/", {"image": own_photo(1), "text": "white t-shirt"}),
        ),
        ("/api/captions/", "post", 200, client.post("/api/captions/", {"image": own_photo(1)})),
        ("/api/captions/", "post", 400, client.post("/api/captions/", {})),
    ]
    for path, method, status, response in calls:
        assert response.status_code == status, (path, response.content)
        jsonschema.validate(response.json(), response_schema(schema, path, method, status))
    # Nullable fields are nullable in practice too: a product with no photo, a text-only hit.
    make_product(title="Quilted jacket")
    body = client.get("/api/search/", {"q": "quilted"}).json()
    quilted = next(r for r in body["results"] if r["title"] == "Quilted jacket")
    assert quilted["image_url"] is None
    assert quilted["similarity"] is None
    jsonschema.validate(body, response_schema(schema, "/api/search/", "get", 200))


def test_api_docs_page_serves_swagger_ui_locally(client, db):
    page = client.get(reverse("api-docs")).content.decode()
    assert "swagger-ui" in page
    assert "drf_spectacular_sidecar" in page
    assert "cdn." not in page
    assert "//unpkg" not in page
    # Its start-up script is a file of its own (?script), which points at the schema.
    script = client.get(reverse("api-docs"), {"script": ""}).content.decode()
    assert reverse("api-schema") in script


@pytest.mark.parametrize("url", ["/api/search/image/", "/api/match/", "/api/captions/"])
@pytest.mark.parametrize("body", ["[]", '"x"', "1", "null", '{"image": "x"}'])
def test_photo_endpoints_refuse_json_bodies_with_a_415(client, db, url, body):
    response = client.post(url, data=body, content_type="application/json")
    assert response.status_code == 415
    assert response.json() == {
        "error": "Unsupported media type 'application/json': send the photo and fields as "
        "multipart/form-data."
    }


# --- the shop pages -----------------------------------------------------------------------


def test_page_filters_with_counts_and_clear_link(client, catalog_shop):
    page = client.get(reverse("shop-search"), {"q": "striped"}).content.decode()
    assert 'data-facet="category" data-value="clothing"' in page
    assert "T-Shirts</a>" in page
    assert "(2)" in page
    page = client.get(
        reverse("shop-search"), {"q": "striped", "brand": "Acme", "in_stock": "true"}
    ).content.decode()
    assert "1 product for" in page
    assert 'data-sku="TEE-100"' in page
    assert 'data-sku="DRS-200"' not in page  # out of stock
    assert "Clear filters" in page
    assert 'name="in_stock" value="true" checked' in page


def test_page_bad_filter_says_why(client, catalog_shop):
    response = client.get(reverse("shop-search"), {"q": "dress", "category": "nope"})
    assert response.status_code == 400
    assert "category: Unknown category &#x27;nope&#x27;." in response.content.decode()


def test_page_nonsense_says_nothing_matches(client, catalog_shop):
    space = space_active()
    space.similarity_floor = 0.5
    space.save(update_fields=["similarity_floor"])
    page = client.get(reverse("shop-search"), {"q": "asdfgh"}).content.decode()
    assert "No products match “asdfgh”" in page
    assert 'class="card"' not in page


def test_page_search_by_photo_then_filter(client, catalog_shop):
    response = client.post(reverse("shop-photo-search"), {"image": own_photo(4)})
    assert response.status_code == 302
    results_url = response["Location"]
    assert results_url.startswith("/?photo=")
    page = client.get(results_url).content.decode()
    assert page.index('data-sku="SHO-300"') < page.index('data-sku="SHO-301"')
    assert "6 products look like your photo" in page
    page = client.get(results_url + "&category=shoes").content.decode()
    assert "2 products look like your photo" in page


def test_page_photo_errors(client, catalog_shop):
    response = client.post(reverse("shop-photo-search"), {"image": upload(b"text")})
    assert response.status_code == 400
    assert "not a recognised image" in response.content.decode()
    page = client.get(reverse("shop-search"), {"photo": "0123456789abcdef"}).content.decode()
    assert "That photo search has expired" in page


def test_product_page_shows_similar_products(client, catalog_shop):
    product = catalog_shop["DRS-201"]
    page = client.get(reverse("product-detail", args=[product.pk])).content.decode()
    assert "Similar products" in page
    similar = page[page.index("Similar products") :]
    assert similar.count('class="card"') == 5
    assert 'data-sku="DRS-201"' not in similar
