"""Relevance on what shoppers type: word forms, category names, words the catalog does not
know, price phrases, brands, honest counts (search.pipeline and its stages)."""

from decimal import Decimal

import pytest
from django.urls import reverse

from catalog.models import Category
from catalog.services import category_get_or_create_path, product_create
from search.filters import SearchFilters
from search.pipeline import product_search_by_text, text_query_prepare
from tests.builders import jpeg_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture
def words_only(settings):
    """The random tiny model's photos never count: what words match is what is tested."""
    settings.SEARCH_SIMILARITY_FLOOR = 0.99


def skus(page) -> set[str]:
    return {hit.product.sku for hit in page.results if not hit.related}


def search(query, **options):
    return product_search_by_text(query=query, limit=50, **options)


# --- word forms and category names --------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("dresses", {"DRS-200", "DRS-201"}),  # plural of a title word
        ("boot", {"SHO-301"}),  # singular of one
        ("stripes", {"TEE-100", "DRS-200"}),  # "striped" by its stem
        ("shirts", {"TEE-100", "TEE-101"}),
        ("lasts", None),  # a description word's form: every product's
    ],
)
def test_word_forms_match(catalog_shop, words_only, query, expected):
    assert skus(search(query)) == (set(catalog_shop) if expected is None else expected)


def test_category_names_and_their_ancestors_match_their_products(
    make_product, embed_on_commit, words_only
):
    mugs = category_get_or_create_path(["Home", "Mugs"], names=[{"zh": "家居"}, {"zh": "马克杯"}])
    vases = category_get_or_create_path(["Home", "Vases"])
    with embed_on_commit():
        cup = make_product(sku="CUP-1", title="Speckled stoneware cup", category=mugs)
        jar = make_product(sku="JAR-1", title="Tall stoneware jar", category=vases)
        make_product(sku="TEE-1", title="Plain tee")
    assert skus(search("mugs")) == {cup.sku}  # no title says "mug"
    assert skus(search("home")) == {cup.sku, jar.sku}  # the parent's name
    assert skus(search("家居")) == {cup.sku, jar.sku}  # translated names too
    assert skus(search("马克杯")) == {cup.sku}
    assert skus(search("stoneware mug")) == {cup.sku}


def test_a_category_head_noun_becomes_a_removable_filter(catalog_shop, words_only, client):
    page = search("red dresses")
    assert skus(page) == {"DRS-200"}
    (item,) = page.understood
    assert (item.kind, item.words, item.params) == (
        "category",
        "dresses",
        {"category": "clothing-dresses"},
    )
    assert {f.value for f in page.facets.categories} == {"clothing", "clothing-dresses"}
    # "leather" is not the head of "Leather Shoes" and names no category of this shop
    assert not search("leather").understood
    body = client.get(reverse("shop-search"), {"q": "red dresses"}).content.decode()
    assert "Category: Dresses ✕" in body
    assert "understand=false" in body


def test_corrections_reach_words_products_contain(catalog_shop, words_only, embed_on_commit):
    assert search("sneeker").count == 0  # no sneakers here
    with embed_on_commit():  # the vocabulary follows on commit
        product_create(sku="SNK-1", title="White canvas sneakers", price="40", images=[])
    # One edit from the stem of "sneakers" (two from the word itself)
    page = search("sneeker")
    assert page.corrected_query == "sneakers"
    assert skus(page) == {"SNK-1"}


# --- words the catalog does not know -------------------------------------------------------


def test_unknown_and_stop_words_are_left_out_and_said(catalog_shop, words_only, client):
    page = search("i need a red dress for a wedding")
    assert skus(page) == {"DRS-200"}
    assert page.ignored_words == ("need", "wedding")
    assert page.matched_words == ("red", "dress")
    answer = client.get("/api/search/", {"q": "i need a red dress for a wedding"}).json()
    assert answer["ignored_words"] == ["need", "wedding"]
    assert answer["count"] == 1
    body = client.get(reverse("shop-search"), {"q": "i need a red dress for a wedding"})
    assert (
        "No results for <em>need wedding</em>; showing <em>red dress</em>" in body.content.decode()
    )


def test_the_least_selective_word_goes_when_no_product_has_every_word(catalog_shop, words_only):
    # "red" (2 products) and "boots" (1) are both known, never in one product
    page = search("red boots")
    assert skus(page) == {"SHO-301"}
    assert page.ignored_words == ("red",)


def test_products_matching_more_words_rank_first(make_product, words_only):
    titles = ["Navy scarf", "Navy coat", "Linen coat", "Linen shirt", "Linen trousers", "Grey coat"]
    for i, title in enumerate(titles):
        make_product(sku=f"P{i}", title=title, description="Warm.")
    page = search("navy linen coat")
    # No product has all three: "coat" and "linen" (3 products each) go before "navy" (2),
    # and of the navy products the one with "coat" too comes first.
    assert [hit.product.sku for hit in page.results if not hit.related] == ["P1", "P0"]
    assert page.ignored_words == ("linen", "coat")


def test_chinese_stop_words_and_unknown_words(catalog_shop, words_only):
    page = search("我要红色的连衣裙")
    assert skus(page) == {"DRS-200"}
    assert page.ignored_words == ()


# --- prices, "cheap", brands ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "low", "high"),
    [
        ("dresses under $40", None, Decimal("40.00")),
        ("shoes over 100", Decimal("100.00"), None),
        ("dress between 50 and 30", Decimal("30.00"), Decimal("50.00")),  # swapped
        ("低于50的连衣裙", None, Decimal("50.00")),
        ("100元以上的靴子", Decimal("100.00"), None),
    ],
)
def test_price_phrases_become_a_price_filter(catalog_shop, words_only, query, low, high):
    page = search(query)
    price = next(item for item in page.understood if item.kind == "price")
    assert price.params == {
        name: str(value) for name, value in (("min_price", low), ("max_price", high)) if value
    }
    assert page.results
    for hit in page.results:  # related ones too: the filter applies to the whole window
        assert low is None or hit.product.price >= low
        assert high is None or hit.product.price <= high


def test_understand_false_takes_every_word_as_a_word(catalog_shop, words_only, client):
    answer = client.get("/api/search/", {"q": "dresses under 40", "understand": "false"}).json()
    assert answer["understood"] == []
    assert {r["sku"] for r in answer["results"] if not r["related"]} == {"DRS-200", "DRS-201"}
    assert answer["ignored_words"] == ["40"]
    answer = client.get("/api/search/", {"q": "dresses under 40"}).json()
    assert [(u["kind"], u["words"]) for u in answer["understood"]] == [
        ("price", "under 40"),
        ("category", "dresses"),
    ]
    assert [u["label"] for u in answer["understood"]] == ["Under 40", "Category: Dresses"]
    assert {r["sku"] for r in answer["results"] if not r["related"]} == {"DRS-200"}


def test_the_shoppers_own_price_filter_wins(catalog_shop, words_only):
    page = search("dresses under 40", filters=SearchFilters(max_price=Decimal("100")))
    assert skus(page) == {"DRS-200", "DRS-201"}
    assert [item.kind for item in page.understood] == ["category"]


def test_a_brand_name_is_a_brand_even_when_its_words_look_like_a_price(make_product, words_only):
    armour = make_product(sku="UA-1", title="Running shorts", brand="Under Armour", price="30")
    make_product(sku="UA-2", title="Running jacket", brand="Under Armour", price="80")
    make_product(sku="NB-1", title="Running shorts", brand="Nimbus", price="20")
    page = search("under armour shorts under 50")
    assert skus(page) == {armour.sku}
    assert {item.kind: item.params for item in page.understood} == {
        "brand": {"brand": "Under Armour"},
        "price": {"max_price": "50.00"},
    }
    assert skus(search("Under Armour")) == {"UA-1", "UA-2"}  # the brand's whole range


def test_cheap_prefers_lower_prices_among_the_matches(make_product, words_only):
    for i, price in enumerate(["90", "15", "45", "30"]):
        make_product(sku=f"MUG-{i}", title="Stoneware mug", price=price)
    make_product(sku="TEE-9", title="Cheap tee", price="5")
    page = search("cheap mug")
    prices = [hit.product.price for hit in page.results if not hit.related]
    assert prices == sorted(prices)
    assert {hit.product.sku for hit in page.results if not hit.related} == {
        "MUG-0", "MUG-1", "MUG-2", "MUG-3"
    }  # fmt: skip


def test_a_number_that_is_a_sku_is_not_a_price(make_product, words_only):
    make_product(sku="100-200", title="Gift card", price="500")
    page = search("100-200")
    assert page.understood == ()
    assert skus(page) == {"100-200"}


# --- honest counts ----------------------------------------------------------------------------


def test_a_sku_is_the_only_match_for_its_sku(catalog_shop, settings):
    settings.SEARCH_SIMILARITY_FLOOR = -1.0  # every photo would count otherwise
    page = search("SHO-300")
    assert page.count == 1
    assert [hit.product.sku for hit in page.results if not hit.related] == ["SHO-300"]


def test_photo_only_hits_must_be_as_similar_as_the_word_matches(catalog_shop, settings):
    settings.SEARCH_SIMILARITY_FLOOR = -1.0
    prepared = text_query_prepare(query="striped", filters=SearchFilters())
    from embeddings.spaces import space_active
    from search.pipeline import rank

    rows = rank(prepared, space_active())
    words = sorted(r.similarity for r in rows if r.text_match)
    for row in rows:
        if row.relevant and not row.text_match:
            assert row.similarity >= words[round(0.5 * (len(words) - 1))]
    page = search("striped", sort="price_asc")
    assert page.count == len(skus(page))
    prices = [hit.product.price for hit in page.results if not hit.related]
    assert prices == sorted(prices)


def test_an_empty_page_offers_the_nearest_categories(catalog_shop, settings):
    settings.SEARCH_SIMILARITY_FLOOR = 0.99
    page = search("red boots", filters=SearchFilters(brand="Acme"))
    assert page.count == 0
    assert [r.param for r in page.suggestions.remove_filters] == ["brand"]
    assert page.suggestions.nearest
    assert {c.slug for c in page.suggestions.categories} <= set(
        Category.objects.values_list("slug", flat=True)
    )


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "under 1e309",
        "between 50 and 10",
        "under -5",
        "between $10 and €20",
        "the of and a",
        " ".join(["dress"] + list("abcdefghij") * 20),  # 201 words
        "的了吗",
        "$$$ 50",
    ],
)
def test_odd_queries_answer_sensibly(catalog_shop, client, query):
    response = client.get("/api/search/", {"q": query})
    assert response.status_code == 200, response.content
    answer = response.json()
    assert answer["count"] == len([r for r in answer["results"] if not r["related"]])
    page = client.get(reverse("shop-search"), {"q": query})
    assert page.status_code == 200


def test_a_query_over_500_characters_is_a_clear_400(client):
    answer = client.get("/api/search/", {"q": "dress " * 100})
    assert answer.status_code == 400
    assert answer.json()["error"] == "q: Ensure this field has no more than 500 characters."


def test_a_photo_per_product_and_words_still_find_it(make_product, embed_on_commit, words_only):
    with embed_on_commit():
        lamp = make_product(sku="LMP-1", title="Brass desk lamp", images=[jpeg_bytes(seed=3)])
    assert skus(search("lamp for my desk")) == {lamp.sku}
    assert skus(search("lamps")) == {lamp.sku}


def test_understood_filters_narrow_the_window_after_the_index_scan(catalog_shop, settings):
    """The vector scan runs as without them (fast); its window and every list keep only
    what they allow, related products too."""
    settings.SEARCH_SIMILARITY_FLOOR = -1.0
    prepared = text_query_prepare(query="dresses under 50", filters=SearchFilters())
    assert prepared.scanned == SearchFilters()
    assert prepared.filters.max_price == Decimal("50.00")
    assert prepared.filters.category_ids
    page = search("dresses under 50")
    assert [hit.product.sku for hit in page.results] == ["DRS-200"]
    shopper = SearchFilters(in_stock=True)
    assert text_query_prepare(query="dresses under 50", filters=shopper).scanned == shopper


def test_two_price_phrases_combine_and_a_contradiction_keeps_the_first(catalog_shop, words_only):
    page = search("shoes over 50 under 100")
    assert [item.label for item in page.understood if item.kind == "price"] == [
        "Over 50",
        "Under 100",
    ]
    assert skus(page) == {"SHO-300"}  # 89.00; the boots are 120.00
    page = search("shoes over 100 under 50")
    assert [item.label for item in page.understood if item.kind == "price"] == ["Over 100"]
    assert skus(page) == {"SHO-301"}


def test_the_search_log_keeps_what_was_understood(catalog_shop, words_only, client):
    from search.models import SearchLog

    answer = client.get("/api/search/", {"q": "dresses under 40", "in_stock": "true"}).json()
    log = SearchLog.objects.get(pk=answer["search_id"])
    assert log.filters == {
        "in_stock": True,
        "understood": [
            {"kind": "price", "words": "under 40", "params": {"max_price": "40.00"}},
            {"kind": "category", "words": "dresses", "params": {"category": "clothing-dresses"}},
        ],
    }
