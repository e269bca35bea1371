"""Draft and archived products are found by no shopper's search (photo, similar products,
words, SKU, captions, filters alone), have no page for shoppers and are never suggested;
made active again, they come back. A variant's SKU finds its product."""

import pytest
from django.urls import reverse

from catalog.images import decode_image
from catalog.models import Product, ProductVariant
from catalog.services import category_get_or_create_path, product_save
from search.filters import SearchFilters
from search.pipeline import product_search_by_text
from search.query import query_is_sku
from search.related import categories_popular
from search.rules import merchandising_rule_create
from search.selectors import captions_by_image, product_search_by_image, products_similar
from search.suggest import suggestions_for_prefix
from tests.builders import COLOURS, jpeg_bytes

pytestmark = pytest.mark.django_db

DRAFT, ARCHIVED, ACTIVE = Product.Status.DRAFT, Product.Status.ARCHIVED, Product.Status.ACTIVE
# The photo of SHO-301, "Brown suede boots", in the catalog_shop fixture (its sixth product).
BOOTS_PHOTO = jpeg_bytes(COLOURS[5], seed=5)


@pytest.fixture(autouse=True)
def no_floor(settings):
    settings.SEARCH_SIMILARITY_FLOOR = -1.0  # every product in the window is on the page


def status_set(product, status, embed_on_commit):
    product.status = status
    with embed_on_commit():
        product_save(product=product, changed_fields=["status"])


def everywhere(product, *, similar_to) -> dict[str, bool]:
    """Where a shopper's searches find `product` (on the page or among related products)."""

    def on(page):
        return product.pk in {hit.product.pk for hit in page.results}

    _, captions = captions_by_image(image=decode_image(BOOTS_PHOTO), limit=50)
    return {
        "photo": on(product_search_by_image(image=decode_image(BOOTS_PHOTO), limit=50)),
        "similar": on(products_similar(product=similar_to, limit=50)),
        "words": on(product_search_by_text(query=product.title, limit=50)),
        "sku": on(product_search_by_text(query=product.sku, limit=50)),
        "captions": product.pk in {hit.product_id for hit in captions},
    }


def test_archiving_hides_a_product_from_every_search_and_reactivating_brings_it_back(
    catalog_shop, embed_on_commit
):
    boots, shoes = catalog_shop["SHO-301"], catalog_shop["SHO-300"]
    found = dict.fromkeys(["photo", "similar", "words", "sku", "captions"], True)
    assert everywhere(boots, similar_to=shoes) == found

    status_set(boots, ARCHIVED, embed_on_commit)
    assert everywhere(boots, similar_to=shoes) == dict.fromkeys(found, False)
    assert not query_is_sku("SHO-301")

    status_set(boots, ACTIVE, embed_on_commit)
    assert everywhere(boots, similar_to=shoes) == found
    assert query_is_sku("SHO-301")


def test_a_draft_is_found_by_no_search_not_even_by_its_category_brand_or_pin(
    catalog_shop, make_product, embed_on_commit
):
    shoes = category_get_or_create_path(["Shoes"])
    with embed_on_commit():
        draft = make_product(
            sku="SHO-399",
            title="Brown suede boots",  # the title of SHO-301, and its very photo
            brand="Stepwell",
            category=shoes,
            price="99.00",
            status=DRAFT,
            images=[BOOTS_PHOTO],
        )
    assert everywhere(draft, similar_to=catalog_shop["SHO-301"]) == dict.fromkeys(
        ["photo", "similar", "words", "sku", "captions"], False
    )

    def skus(query, **filters):
        page = product_search_by_text(query=query, filters=SearchFilters(**filters), limit=50)
        # Counted, faceted and cut off without it, not only left off the page at the end.
        assert page.count == len([hit for hit in page.results if not hit.related])
        assert sum(brand.count for brand in page.facets.brands) == page.count
        return {hit.product.sku for hit in page.results}

    # "shoes" matches every product in Shoes by its category's name; "stepwell" is a brand
    # understood as a filter, so every product of the brand is a match.
    assert skus("shoes") >= {"SHO-300", "SHO-301"}
    assert "SHO-399" not in skus("shoes") | skus("stepwell") | skus("stepwell under 100")
    assert not query_is_sku("SHO-399")
    assert "SHO-399" not in skus("SHO-399")
    merchandising_rule_create(name="Pin the draft", query="boots", pins=[(draft, 1)])
    assert "SHO-399" not in skus("boots")


def test_the_page_of_a_draft_is_a_404_for_shoppers_and_a_preview_for_staff(
    client, admin_client, catalog_shop, embed_on_commit
):
    dress = catalog_shop["DRS-201"]
    status_set(dress, DRAFT, embed_on_commit)
    page = reverse("product-detail", args=[dress.pk])
    api = reverse("api-product-similar", args=[dress.pk])
    assert client.get(page).status_code == 404
    assert client.get(api).status_code == 404
    preview = admin_client.get(page)
    assert preview.status_code == 200
    assert "This product is a draft: shoppers get a 404 here" in preview.content.decode()
    assert admin_client.get(api).status_code == 200
    # Other products' pages never offer it among similar products.
    similar = client.get(reverse("api-product-similar", args=[catalog_shop["DRS-200"].pk]))
    assert "DRS-201" not in {hit["sku"] for hit in similar.json()["results"]}

    status_set(dress, ACTIVE, embed_on_commit)
    assert client.get(page).status_code == 200
    assert 'id="hidden-from-shoppers"' not in admin_client.get(page).content.decode()


def test_suggestions_and_popular_categories_leave_hidden_products_out(
    catalog_shop, make_product, embed_on_commit
):
    gloves = category_get_or_create_path(["Gloves"])
    with embed_on_commit():
        draft = make_product(
            title="Velvet opera gloves", brand="Nightjar", category=gloves, status=DRAFT
        )

    def suggested(prefix):
        return {hit.text for hit in suggestions_for_prefix(prefix=prefix, limit=10)}

    assert suggested("velv") == suggested("nightj") == suggested("glov") == set()
    assert "Gloves" not in {category.name for category in categories_popular()}

    status_set(draft, ACTIVE, embed_on_commit)
    assert suggested("velv") == {"Velvet opera gloves", "velvet gloves"}  # title, query
    assert suggested("nightj") == {"Nightjar"}
    assert "Gloves" in suggested("glov")

    # Archiving an active product takes back its title, and a brand only it had.
    status_set(draft, ARCHIVED, embed_on_commit)
    assert suggested("velv") == suggested("nightj") == set()
    status_set(catalog_shop["DRS-201"], ARCHIVED, embed_on_commit)  # Juniper's only product
    assert suggested("junip") == set()
    assert suggested("blue linen") == set()


def test_a_variant_sku_finds_its_product(catalog_shop, embed_on_commit):
    tee = catalog_shop["TEE-100"]
    ProductVariant.objects.create(product=tee, sku="TEE-100-RED-M", options={"Size": "M"}, price=1)
    ProductVariant.objects.create(
        product=tee, sku="TEE-100-RED-XXL", options={"Size": "XXL"}, price=1, active=False
    )
    for query in ("TEE-100-RED-M", "tee-100-red-m", " TEE-100-RED-M "):
        assert query_is_sku(query)
        page = product_search_by_text(query=query, limit=10)
        assert page.results[0].product == tee
        assert "sku" in page.results[0].matched
        assert [hit.product for hit in page.results if not hit.related] == [tee]
    # A variant no longer sold, or one of a product shoppers cannot see, finds nothing.
    assert not query_is_sku("TEE-100-RED-XXL")
    status_set(tee, ARCHIVED, embed_on_commit)
    assert not query_is_sku("TEE-100-RED-M")
    page = product_search_by_text(query="TEE-100-RED-M", limit=10)
    assert tee not in [hit.product for hit in page.results]
