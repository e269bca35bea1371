"""Hybrid ranking: words and SKUs fused with the vector ranking, floors, filters, paging."""

from decimal import Decimal

import numpy as np
import pytest
from django.core.cache import cache
from django.db import connection

from catalog.models import Category, Product, ProductImage
from catalog.services import demo_catalog_load
from embeddings.encoder import ModelSpec
from embeddings.models import ImageEmbedding
from embeddings.spaces import space_active, space_create
from search.filters import SearchFilters
from search.pipeline import product_search_by_text, rank, text_query_prepare
from search.selectors import (
    normalise_query,
    products_nearest,
    query_vector_cache_key,
    text_vector,
)
from tests.builders import brute_force_ranking

pytestmark = pytest.mark.django_db


def ids(page):
    """The relevant results, without the related products that fill a thin page."""
    return [hit.product.pk for hit in page.results if not hit.related]


def relevant_skus(page):
    return {hit.product.sku for hit in page.results if not hit.related}


@pytest.fixture
def no_floor(settings):
    settings.SEARCH_SIMILARITY_FLOOR = -1.0


# --- ranking rules ------------------------------------------------------------------------


def test_exact_sku_comes_first_in_any_case(catalog_shop, no_floor):
    for query in ("SHO-301", "sho-301", "  SHO-301 "):
        page = product_search_by_text(query=query, limit=10)
        assert page.results[0].product == catalog_shop["SHO-301"]
        assert "sku" in page.results[0].matched


def test_text_and_vector_lists_are_fused_by_reciprocal_rank(catalog_shop, settings):
    """score = 1/(k + vector rank) + 1/(k + text rank), k = 60; one title matches here."""
    space = space_active()
    query = "brown suede boots"
    window = rank(text_query_prepare(query=query, filters=SearchFilters()), space)
    vector_ranks = {
        pid: rank
        for rank, (pid, _) in enumerate(brute_force_ranking(space, text_vector(space, query)), 1)
    }
    k = settings.SEARCH_RRF_K
    assert k == 60
    expected = {pid: 1 / (k + rank) for pid, rank in vector_ranks.items()}
    expected[catalog_shop["SHO-301"].pk] += 1 / (k + 1)  # the only text match: text rank 1
    ordered = sorted(expected, key=lambda pid: (-expected[pid], pid))
    assert [row.product_id for row in window] == ordered
    np.testing.assert_allclose([row.score for row in window], [expected[p] for p in ordered])
    page = product_search_by_text(query=query, limit=10)
    assert page.results[0].product == catalog_shop["SHO-301"]
    assert page.results[0].matched == ("text", "image")


def test_text_matches_rank_by_weight_title_before_description(make_product, no_floor):
    in_title = make_product(title="Quilted jacket", description="Warm.")
    in_description = make_product(title="Winter coat", description="A quilted lining inside.")
    page = product_search_by_text(query="quilted", limit=10)
    assert ids(page) == [in_title.pk, in_description.pk]
    assert all(hit.matched == ("text",) for hit in page.results)  # no photos: text only


def test_nonsense_finds_nothing_under_the_similarity_floor(catalog_shop, settings):
    space = space_active()
    settings.SEARCH_SIMILARITY_FLOOR = -1.0
    # No floor: the photo hits nearest the query, those at the top of the window, count.
    assert 1 <= product_search_by_text(query="asdfgh", limit=20).count < len(catalog_shop)
    # The random tiny model's similarities are all far below 0.5: every image-only hit goes.
    space.similarity_floor = 0.5
    space.save(update_fields=["similarity_floor"])
    page = product_search_by_text(query="asdfgh", limit=20)
    assert page.count == 0
    assert page.results == []
    # Words still find their products, whatever their similarity.
    page = product_search_by_text(query="striped", limit=20)
    assert set(ids(page)) == {catalog_shop["TEE-100"].pk, catalog_shop["DRS-200"].pk}
    assert all("text" in hit.matched for hit in page.results if not hit.related)


def test_the_settings_floor_applies_when_the_space_has_none(catalog_shop, settings):
    settings.SEARCH_SIMILARITY_FLOOR = 0.5
    assert space_active().similarity_floor is None
    assert product_search_by_text(query="asdfgh", limit=20).count == 0
    settings.SEARCH_SIMILARITY_FLOOR = -1.0
    assert product_search_by_text(query="asdfgh", limit=20).count >= 1


@pytest.mark.parametrize(
    ("query", "skus"),
    [
        ("红色连衣裙", {"DRS-200"}),  # words need not be adjacent: 红色[条纹]连衣裙
        ("连衣裙", {"DRS-200", "DRS-201"}),
        ("红色", {"TEE-100", "DRS-200"}),
        ("皮鞋", {"SHO-300"}),
        ("蓝色连衣裙", {"DRS-201"}),
        ("绿色连衣裙", {"DRS-200", "DRS-201"}),  # no green one: 绿色 is left out
        ("T恤", {"TEE-100", "TEE-101"}),
        ("红色条纹", {"TEE-100", "DRS-200"}),
        # 白色 and 条纹 are both in the shop, never in one title: the one in more goes.
        ("白色条纹", {"TEE-101"}),
    ],
)
def test_chinese_titles_match_by_words(catalog_shop, settings, query, skus):
    settings.SEARCH_SIMILARITY_FLOOR = 0.99  # words only
    page = product_search_by_text(query=query, limit=20)
    assert relevant_skus(page) == skus


def test_chinese_words_must_stand_together_and_adjacent_words_rank_first(make_product, settings):
    """jieba segments 红色连衣裙 into 红色 + 连衣裙: each word must be whole in the title."""
    settings.SEARCH_SIMILARITY_FLOOR = 0.99
    make_product(title="连衣 红 裙 色")  # every character, but neither word
    apart = make_product(title="连衣裙 红色")
    adjacent = make_product(title="红色连衣裙")
    assert ids(product_search_by_text(query="红色连衣裙", limit=5)) == [adjacent.pk, apart.pk]


@pytest.mark.parametrize(
    ("query", "skus"),
    [
        ("stri", {"TEE-100", "DRS-200"}),  # a prefix of a word
        ("tshirt", {"TEE-100", "TEE-101"}),  # hyphenated words joined
        ("t-shirt", {"TEE-100", "TEE-101"}),
        ("T-SHIRT red", {"TEE-100"}),  # every word must match
        ("stepwell", {"SHO-300", "SHO-301"}),  # brand
        ("made to last", None),  # description words: every product's
        ("SHO-3", {"SHO-300", "SHO-301"}),  # a SKU prefix
        ("!!! ???", set()),
    ],
)
def test_words_match_as_prefixes_in_title_brand_description_and_sku(
    catalog_shop, settings, query, skus
):
    settings.SEARCH_SIMILARITY_FLOOR = 0.99
    skus = set(catalog_shop) if skus is None else skus
    page = product_search_by_text(query=query, limit=20)
    assert relevant_skus(page) == skus


def test_every_write_path_updates_the_text_document(catalog_shop, settings):
    """The document is a generated column: admin saves, services and bulk writes all count."""
    settings.SEARCH_SIMILARITY_FLOOR = 0.99
    Product.objects.filter(sku="SHO-300").update(title="Black patent loafers")
    assert ids(product_search_by_text(query="loafers", limit=5)) == [catalog_shop["SHO-300"].pk]
    Product.objects.bulk_create(
        [Product(sku="SHO-300", title="Oxford brogues", price=Decimal("1"))],
        update_conflicts=True,
        unique_fields=["sku"],
        update_fields=["title"],
    )
    assert product_search_by_text(query="loafers", limit=5).count == 0
    assert ids(product_search_by_text(query="brogues", limit=5)) == [catalog_shop["SHO-300"].pk]


# --- filters and paging -------------------------------------------------------------------


def test_category_filter_includes_sub_categories(catalog_shop, no_floor):
    clothing = Category.objects.get(slug="clothing")
    filters = SearchFilters(category_ids=tuple(c.pk for c in _subtree(clothing)))
    page = product_search_by_text(query="made to last", filters=filters, limit=20)
    assert relevant_skus(page) == {"TEE-100", "TEE-101", "DRS-200", "DRS-201"}
    assert page.count == 4
    categories = {(f.value, f.count, f.depth) for f in page.facets.categories}
    assert categories == {
        ("clothing", 4, 0),
        ("clothing-t-shirts", 2, 1),
        ("clothing-dresses", 2, 1),
    }


def _subtree(category):
    from catalog.selectors import category_subtree_ids

    return Category.objects.filter(pk__in=category_subtree_ids(category=category))


@pytest.mark.parametrize(
    ("filters", "skus"),
    [
        (SearchFilters(brand="Acme"), {"TEE-100", "DRS-200"}),
        (SearchFilters(min_price=Decimal("39.00")), {"DRS-200", "DRS-201", "SHO-300", "SHO-301"}),
        (SearchFilters(max_price=Decimal("12.50")), {"TEE-100", "TEE-101"}),
        (
            SearchFilters(min_price=Decimal("10"), max_price=Decimal("60"), in_stock=True),
            {"TEE-100", "DRS-201"},
        ),
        (SearchFilters(in_stock=False), {"DRS-200"}),
        (SearchFilters(brand="Nobody"), set()),
    ],
)
def test_filters_keep_only_matching_products(catalog_shop, no_floor, filters, skus):
    page = product_search_by_text(query="made to last", filters=filters, limit=20)  # all
    assert relevant_skus(page) == skus
    assert page.count == len(skus)
    for query in ("red striped", "asdfgh"):  # some text matches, none
        page = product_search_by_text(query=query, filters=filters, limit=20)
        assert {hit.product.sku for hit in page.results} <= skus  # related ones too
        assert page.count == len(relevant_skus(page))


def test_facets_count_the_whole_window_not_the_page(catalog_shop, no_floor):
    page = product_search_by_text(query="made to last", limit=2)
    assert len(page.results) == 2
    assert page.count == len(catalog_shop)
    assert {(f.value, f.count) for f in page.facets.brands} == {
        ("Acme", 2),
        ("Basics", 1),
        ("Juniper", 1),
        ("Stepwell", 2),
    }
    assert page.facets.in_stock == 5
    assert [(f.value, f.depth) for f in page.facets.categories][0] == ("clothing", 0)


def test_hybrid_pages_do_not_overlap_or_skip(catalog_shop, no_floor):
    filters = SearchFilters(max_price=Decimal("100"))
    whole = ids(product_search_by_text(query="made to last", filters=filters, limit=20))
    pages = [
        ids(product_search_by_text(query="made to last", filters=filters, limit=2, offset=o))
        for o in (0, 2, 4, 6)
    ]
    assert [pid for page in pages for pid in page] == whole
    assert len(whole) == 5


def test_a_filter_keeping_1_percent_still_fills_the_page(db, settings):
    """2,000 products, 20 of brand "Rare", all far from the query in vector space.

    The unfiltered window of nearest images holds none of them; the filtered search still
    returns all 20 (iterative index scan or exact plan), and `count` says 20.
    """
    settings.SEARCH_MAX_RESULTS = 50
    space = space_active()
    rng = np.random.default_rng(1)
    centre = rng.standard_normal(space.embed_dim).astype(np.float32)
    products = Product.objects.bulk_create(
        Product(
            sku=f"BULK-{i:05d}",
            title=f"Bulk {i}",
            price="5.00",
            brand="Rare" if i % 100 == 7 else "Common",
        )
        for i in range(2000)
    )
    images = ProductImage.objects.bulk_create(
        ProductImage(product=p, file=f"products/bulk{p.pk}.jpg", sha256=f"{p.pk:064x}")
        for p in products
    )
    vectors = [
        (-centre if product.brand == "Rare" else centre)
        + rng.standard_normal(space.embed_dim) * 0.3
        for product in products
    ]
    ImageEmbedding.objects.bulk_create(
        ImageEmbedding(image=image, space=space, vector=vector, source_sha256=image.sha256)
        for image, vector in zip(images, vectors, strict=True)
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE embeddings_imageembedding")
        cursor.execute("ANALYZE catalog_product")
    unfiltered = products_nearest(space=space, vector=centre, limit=20)
    assert unfiltered.count == 50
    assert not any(h.product.brand == "Rare" for h in unfiltered.results)

    page = products_nearest(
        space=space, vector=centre, filters=SearchFilters(brand="Rare"), limit=20
    )
    assert len(page.results) == 20
    assert page.count == 20
    assert {hit.product.brand for hit in page.results} == {"Rare"}
    similarities = [hit.similarity for hit in page.results]
    assert similarities == sorted(similarities, reverse=True)


# --- query vector cache -------------------------------------------------------------------


def test_query_vectors_are_cached_per_space_and_normalised_query(db):
    space = space_active()
    assert normalise_query("  Red   T-Shirt ") == "red t-shirt"
    first = text_vector(space, "  Red   T-Shirt ")
    key = query_vector_cache_key(space, "red t-shirt")
    assert np.array_equal(np.frombuffer(cache.get(key), np.float32), first)
    # The next lookup of the same normalised query reads the cache, not the text tower.
    planted = np.arange(space.embed_dim, dtype=np.float32)
    cache.set(key, planted.tobytes())
    np.testing.assert_array_equal(text_vector(space, "RED t-shirt"), planted)
    other = space_create(name="other-cache", spec=ModelSpec("shop-tiny", seed=3))
    assert query_vector_cache_key(other, "red t-shirt") != key


# --- the demo catalog ---------------------------------------------------------------------


def test_english_and_chinese_queries_work_on_the_demo_catalog(
    db, settings, django_capture_on_commit_callbacks
):
    settings.SEARCH_SIMILARITY_FLOOR = 0.5  # the random tiny model: words decide
    with django_capture_on_commit_callbacks(execute=True):
        demo_catalog_load(count=48, embed=True)
    colours = {p.pk: p.attributes["colour"] for p in Product.objects.all()}
    # Red, or sold in red among other colours (a Colour option: its values are its words).
    red = {pk for pk, colour in colours.items() if colour == "red" or "red" in list(colour)}
    # A product sold in several colours names none in its titles: in Chinese only the red ones.
    red_named = {pk for pk, colour in colours.items() if colour == "red"}
    dresses = {p.pk for p in Product.objects.all() if p.attributes["category"] == "dress"}
    assert red_named
    assert red - red_named
    assert dresses
    for query, expected in (("red", red), ("红色", red_named)):
        page = product_search_by_text(query=query, limit=50)
        assert set(ids(page)) == expected, query
    for query in ("dress", "连衣裙"):
        page = product_search_by_text(query=query, limit=50)
        assert set(ids(page)) == dresses, query
