"""Sorting the relevant set, related products under a thin page, help on an empty one."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone

from catalog.models import Category, Product
from catalog.selectors import category_subtree_ids
from search.filters import SearchFilters
from search.pipeline import product_search_by_text
from search.related import POPULAR_CATEGORIES_KEY
from search.rules import merchandising_rule_create
from search.sorting import Sort

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def words_only(settings):
    """Only word matches are relevant: the random tiny model's similarities are near 0."""
    settings.SEARCH_SIMILARITY_FLOOR = 0.99
    cache.delete(POPULAR_CATEGORIES_KEY)


def relevant(page):
    return [hit for hit in page.results if not hit.related]


def every_page(query, *, limit, **kwargs):
    hits, offset = [], 0
    while page := relevant(
        product_search_by_text(query=query, limit=limit, offset=offset, **kwargs)
    ):
        hits += page
        offset += limit
    return hits


@pytest.fixture
def mugs(make_product, embed_on_commit):
    """17 mugs with prices and ages, and cheap products that are not mugs, all with photos."""
    from tests.builders import COLOURS, jpeg_bytes

    with embed_on_commit():
        mugs = [
            make_product(
                sku=f"MUG-{i:03d}",
                title=f"Ceramic mug {i}",
                price=f"{(i * 7) % 17 + 5}.50",  # prices repeat: ties keep the relevance order
                images=[jpeg_bytes(COLOURS[i % 8], seed=i)],
            )
            for i in range(17)
        ]
        cheap = [
            make_product(
                sku=f"PEN-{i}",
                title=f"Ballpoint pen {i}",
                price="0.99",
                images=[jpeg_bytes(COLOURS[i % 8], seed=100 + i)],
            )
            for i in range(3)
        ]
    now = timezone.now()
    for i, mug in enumerate(mugs):  # MUG-005 is the newest, then MUG-012, ...
        Product.objects.filter(pk=mug.pk).update(created=now - timedelta(days=(i * 5) % 17))
    return mugs, cheap


@pytest.mark.parametrize(
    ("sort", "key", "reverse"),
    [
        (Sort.PRICE_ASC, lambda p: p.price, False),
        (Sort.PRICE_DESC, lambda p: p.price, True),
        (Sort.NEWEST, lambda p: p.created, True),
    ],
)
def test_sort_orders_hold_over_pages_and_keep_the_relevant_set(mugs, sort, key, reverse):
    _, cheap = mugs
    by_relevance = every_page("mug", limit=20)
    assert len(by_relevance) == 17
    sorted_hits = every_page("mug", limit=4, sort=sort)
    products = [hit.product for hit in sorted_hits]
    assert {p.sku for p in products} == {hit.product.sku for hit in by_relevance}
    assert [key(p) for p in products] == sorted((key(p) for p in products), reverse=reverse)
    # Ties keep the relevance order, so pages are stable.
    rank = {hit.product.pk: i for i, hit in enumerate(by_relevance)}
    for a, b in zip(products, products[1:], strict=False):
        if key(a) == key(b):
            assert rank[a.pk] < rank[b.pk]
    assert not {p.sku for p in products} & {p.sku for p in cheap}  # never float up
    page = product_search_by_text(query="mug", limit=4, sort=sort)
    assert page.facets == product_search_by_text(query="mug", limit=4).facets
    assert page.count == 17
    assert page.sort == sort


def test_sorting_ignores_pin_positions_but_keeps_pinned_products(mugs):
    mugs_, cheap = mugs
    merchandising_rule_create(name="Pens", query="mug", pins=[(cheap[0], 1)], hides=[mugs_[3]])
    hits = every_page("mug", limit=5, sort=Sort.PRICE_DESC)
    skus = [hit.product.sku for hit in hits]
    assert skus[-1] == cheap[0].sku  # the cheapest: last by price, still marked pinned
    assert "pinned" in hits[-1].matched
    assert mugs_[3].sku not in skus
    assert every_page("mug", limit=5)[0].product == cheap[0]


def test_a_thin_page_is_filled_with_related_products(mugs):
    page = product_search_by_text(query="mug 3", limit=10)
    matches = relevant(page)
    related = [hit for hit in page.results if hit.related]
    assert [hit.product.sku for hit in matches] == ["MUG-003"]
    assert page.count == 1
    assert len(related) == 9
    similarities = [hit.similarity for hit in related]
    assert similarities == sorted(similarities, reverse=True)
    assert all(hit.matched == ("image",) for hit in related)
    # The next page has neither matches nor related products.
    assert product_search_by_text(query="mug 3", limit=10, offset=10).results == []
    # A full page of matches has no room for related products.
    assert not any(hit.related for hit in product_search_by_text(query="mug", limit=10).results)


def test_related_products_keep_the_filters_and_the_hides(mugs, make_product):
    mugs_, cheap = mugs
    merchandising_rule_create(name="No pens", hides=[cheap[1]])
    page = product_search_by_text(query="mug 3", limit=30)
    related = {hit.product.sku for hit in page.results if hit.related}
    assert related == {p.sku for p in mugs_ + cheap} - {"MUG-003", cheap[1].sku}
    page = product_search_by_text(
        query="mug 3", limit=30, filters=SearchFilters(min_price=Decimal("5"))
    )
    assert not {hit.product.sku for hit in page.results} & {p.sku for p in cheap}


def test_nonsense_shows_nothing_related_but_suggests_what_to_try(catalog_shop):
    clothing = Category.objects.get(slug="clothing")
    filters = SearchFilters(
        category_ids=tuple(category_subtree_ids(category=clothing)), brand="Acme", in_stock=True
    )
    page = product_search_by_text(query="asdfgh", filters=filters, limit=20)
    assert page.results == []
    assert page.count == 0
    removals = [(r.param, r.label) for r in page.suggestions.remove_filters]
    assert removals == [
        ("category", "Category: Clothing"),
        ("brand", "Brand: Acme"),
        ("in_stock", "In stock only"),
    ]
    # Dropping a filter may help: the popular categories come only when nothing else does.
    assert page.suggestions.categories == []
    page = product_search_by_text(query="asdfgh", limit=20)
    assert page.count == 0
    assert page.suggestions.remove_filters == []
    assert not page.suggestions.nearest  # nonsense is near nothing
    popular = [(c.slug, c.count) for c in page.suggestions.categories]
    assert popular == [("clothing-dresses", 2), ("shoes", 2), ("clothing-t-shirts", 2)]  # by name
    # A query that matches has no suggestions.
    assert product_search_by_text(query="striped", limit=20).suggestions is None


def test_the_api_marks_related_hits_and_refuses_unknown_sorts(client, mugs):
    body = client.get(reverse("api-search"), {"q": "mug 3", "limit": 5}).json()
    assert [r["related"] for r in body["results"]] == [False, True, True, True, True]
    assert body["count"] == 1
    assert body["suggestions"] is None
    assert body["sort"] == "relevance"
    body = client.get(reverse("api-search"), {"q": "mug", "sort": "price_asc", "limit": 3}).json()
    assert [r["price"] for r in body["results"]] == ["5.50", "6.50", "7.50"]
    response = client.get(reverse("api-search"), {"q": "mug", "sort": "cheapest"})
    assert response.status_code == 400
    assert response.json()["error"] == (
        "sort: Unknown sort “cheapest”: use one of relevance, price_asc, price_desc, newest."
    )
    body = client.get(reverse("api-search"), {"q": "asdfgh", "brand": "Nobody"}).json()
    assert body["suggestions"]["remove_filters"] == [{"param": "brand", "label": "Brand: Nobody"}]


def test_the_shop_page_sorts_and_shows_related_products_under_a_divider(client, mugs):
    html = client.get(reverse("shop-search"), {"q": "mug 3"}).content.decode()
    assert "1 product for “mug 3”" in html
    matches, related = html.split("Related products")
    assert matches.count('class="card"') == 1
    assert related.count('class="card"') == 19
    html = client.get(reverse("shop-search"), {"q": "mug", "sort": "price_desc"}).content.decode()
    assert '<strong aria-current="true" data-sort="price_desc">Price, high to low</strong>' in html
    assert 'href="?q=mug&amp;sort=price_asc"' in html
    assert '<input type="hidden" name="sort" value="price_desc">' in html  # filters keep it
    response = client.get(reverse("shop-search"), {"q": "mug", "sort": "cheapest"})
    assert response.status_code == 400
    assert "Unknown sort “cheapest”" in response.content.decode()


def test_the_shop_page_suggests_removing_filters_and_popular_categories(client, catalog_shop):
    html = client.get(
        reverse("shop-search"), {"q": "asdfgh", "brand": "Acme", "max_price": "20"}
    ).content.decode()
    assert "No products match “asdfgh” with these filters." in html
    assert 'href="?q=asdfgh&amp;max_price=20" data-remove="brand">Brand: Acme ✕</a>' in html
    assert 'data-remove="max_price">Price up to 20.00 ✕</a>' in html
    assert "Popular categories" not in html  # dropping a filter comes first
    assert "Related products" not in html
    html = client.get(reverse("shop-search"), {"q": "asdfgh"}).content.decode()
    assert 'href="/?q=Shoes" data-category="shoes">Shoes</a>' in html
