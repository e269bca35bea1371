"""The shop's pages without a query: the home page's categories and products, browsing a
category, the photo searched with above its results, and the product page's photos."""

import base64
import io
import re

from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image

from catalog.models import Product
from search.models import SearchEvent, SearchLog
from search.searchlog import search_log_record
from tests.builders import COLOURS, jpeg_bytes


def test_the_home_page_shows_top_level_categories_with_counts_and_the_newest_products(
    client, catalog_shop
):
    page = client.get(reverse("shop-search")).content.decode()
    tiles = re.findall(
        r'data-category="([^"]+)">\s*<span class="name">([^<]+)</span> '
        r'<span class="count">([^<]+)</span>',
        page,
    )
    # Clothing counts its T-shirts and dresses; sub-categories are not tiles of their own.
    assert ("clothing", "Clothing", "4 products") in tiles
    assert [slug for slug, _, _ in tiles].count("clothing-t-shirts") == 0
    assert "New in" in page
    newest = Product.objects.order_by("-created", "-pk").first()
    assert page.index(f'data-sku="{newest.sku}"') < page.index('data-sku="TEE-100"')
    assert not SearchLog.objects.exists()  # a home page is not a search


def test_the_home_page_leaves_out_archived_products_and_empty_categories(client, catalog_shop):
    Product.objects.filter(category__slug="shoes").update(status=Product.Status.ARCHIVED)
    page = client.get(reverse("shop-search")).content.decode()
    assert 'data-category="shoes"' not in page
    assert 'data-sku="SHO-300"' not in page


def test_the_home_page_row_puts_the_most_bought_first(client, catalog_shop, default_space):
    boots = Product.objects.get(sku="SHO-301")
    dress = Product.objects.get(sku="DRS-201")
    search_id = search_log_record(
        kind="text",
        channel=SearchLog.Channel.API,
        space=default_space,
        query="boots",
        product_ids=[boots.pk, dress.pk],
        result_count=2,
    )
    for product in (boots, dress):
        SearchEvent.objects.create(
            search_id=search_id, type="purchase", product=product, position=1
        )
    other = search_log_record(
        kind="text",
        channel=SearchLog.Channel.API,
        space=default_space,
        query="dress",
        product_ids=[dress.pk],
        result_count=1,
    )
    SearchEvent.objects.create(search_id=other, type="purchase", product=dress, position=1)
    page = client.get(reverse("shop-search")).content.decode()
    assert "Popular now" in page
    skus = re.findall(r'data-sku="([^"]+)"', page)
    assert skus[:2] == ["DRS-201", "SHO-301"]  # two purchases, then one
    assert len(skus) == len(set(skus))  # the newest fill the row without repeating them


def test_a_category_link_browses_the_category_without_a_query(client, catalog_shop):
    response = client.get(reverse("shop-search"), {"category": "clothing"})
    page = response.content.decode()
    assert response.status_code == 200
    assert "4 products in Clothing" in page
    assert sorted(re.findall(r'data-sku="([^"]+)"', page)) == [
        "DRS-200",
        "DRS-201",
        "TEE-100",
        "TEE-101",
    ]
    assert 'data-facet="brand"' in page  # facets over the category, as a search has
    page = client.get(
        reverse("shop-search"), {"category": "clothing", "sort": "price_asc"}
    ).content.decode()
    assert re.findall(r'data-sku="([^"]+)"', page)[0] == "TEE-101"  # the cheapest
    assert not SearchLog.objects.exists()


def test_filters_start_closed_so_a_phone_shows_results_first(client, catalog_shop):
    page = client.get(reverse("shop-search"), {"q": "striped"}).content.decode()
    assert '<details id="filters">' in page  # no `open`: search/filters.js opens it when wide
    assert "search/filters.js" in page


def _photo_search(client, data):
    upload = SimpleUploadedFile("photo.jpg", data, content_type="image/jpeg")
    response = client.post(reverse("shop-photo-search"), {"image": upload})
    assert response.status_code == 302
    return client.get(response["Location"]).content.decode()


def test_photo_results_show_the_photo_searched_with_as_a_small_thumbnail(client, catalog_shop):
    big = Image.new("RGB", (1200, 800), COLOURS[4])
    out = io.BytesIO()
    big.save(out, format="JPEG")
    page = _photo_search(client, out.getvalue())
    match = re.search(
        r'<img src="data:image/jpeg;base64,([^"]+)" alt="The photo you searched', page
    )
    assert match, "the photo searched with is on the page"
    thumbnail = Image.open(io.BytesIO(base64.b64decode(match.group(1))))
    assert thumbnail.size == (160, 107)  # 160 px on the longer side
    assert page.index('id="searched-photo"') < page.index('class="results"')
    assert "look like your photo" in page


def test_a_text_search_shows_no_photo(client, catalog_shop):
    _photo_search(client, jpeg_bytes(COLOURS[4], seed=4))
    page = client.get(reverse("shop-search"), {"q": "striped"}).content.decode()
    assert "searched-photo" not in page


def test_the_product_page_shows_one_large_photo_and_the_others_as_thumbnails(client, make_product):
    product = make_product(
        title="Red scarf",
        images=[jpeg_bytes(COLOURS[n], seed=n) for n in range(3)],
    )
    page = client.get(reverse("product-detail", args=[product.pk])).content.decode()
    assert len(re.findall(r'<img class="main"', page)) == 1
    thumbs = re.search(r'<div class="thumbs">(.*?)</div>', page, re.S).group(1)
    assert thumbs.count("<img") == 2
