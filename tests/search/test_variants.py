"""Products with variants in search: one result per product, variant filters that hold
together on one variant, the variant each result is shown with, facets counted by product."""

from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from catalog.models import Facet, FacetValueAlias, ProductVariant
from catalog.services import (
    category_get_or_create_path,
    product_variants_save,
    products_variants_summarise,
)
from search.pipeline import product_search_by_text
from tests.builders import jpeg_bytes, zip_bytes

pytestmark = pytest.mark.django_db

RED, BLUE, GREEN = (200, 30, 30), (30, 30, 200), (30, 160, 30)


@pytest.fixture
def words_only(settings):
    settings.SEARCH_SIMILARITY_FLOOR = 0.99


@pytest.fixture
def dresses(make_product, embed_on_commit):
    """Three dresses: one in red and blue (sizes S-L; red M out of stock), one in red and
    green (red M in stock, dearer), one plain dress without options; and a red mug."""
    category = category_get_or_create_path(["Clothing", "Dresses"])

    def dress(sku, title, colours, stock, prices):
        product = make_product(
            sku=sku,
            title=title,
            category=category,
            price="0",
            images=[jpeg_bytes(rgb, seed=i) for i, (_, rgb) in enumerate(colours)],
        )
        images = list(product.images.order_by("position"))
        position = 0
        for (colour, _), image in zip(colours, images, strict=True):
            for size in ("S", "M", "L"):
                ProductVariant.objects.create(
                    product=product,
                    sku=f"{sku}-{colour[:3].upper()}-{size}",
                    options={"Colour": colour, "Size": size},
                    price=Decimal(prices.get((colour, size), "40.00")),
                    stock=stock.get((colour, size), 5),
                    in_stock=stock.get((colour, size), 5) > 0,
                    image=image,
                    position=position,
                )
                position += 1
        product.options = [{"name": "Colour", "values": []}, {"name": "Size", "values": []}]
        product.save(update_fields=["options"])
        return product

    with embed_on_commit():
        two_tone = dress(
            "DRS-1", "Summer wrap dress", [("Blue", BLUE), ("Red", RED)], {("Red", "M"): 0}, {}
        )
        red_green = dress(
            "DRS-2",
            "Linen midi dress",
            [("Green", GREEN), ("Red", RED)],
            {},
            {("Red", "M"): "55.00"},
        )
        plain = make_product(sku="DRS-3", title="Plain red jersey dress", category=category)
        make_product(sku="MUG-1", title="Red enamel mug", price="9.00")
    products_variants_summarise([two_tone.pk, red_green.pk])
    return {"two_tone": two_tone, "red_green": red_green, "plain": plain}


def search(query, **options):
    return product_search_by_text(query=query, limit=50, **options)


def api(client, **params):
    response = client.get(reverse("api-search"), params)
    assert response.status_code == 200, response.content
    return response.json()


def test_summary_follows_variants(dresses):
    two_tone = dresses["two_tone"]
    two_tone.refresh_from_db()
    assert two_tone.options == [
        {"name": "Colour", "values": ["Blue", "Red"]},
        {"name": "Size", "values": ["S", "M", "L"]},
    ]
    assert (two_tone.price, two_tone.price_max, two_tone.in_stock) == (40, 40, True)
    red_green = dresses["red_green"]
    red_green.refresh_from_db()
    assert (red_green.price, red_green.price_max) == (Decimal("40.00"), Decimal("55.00"))


def test_option_values_are_words_and_one_result_per_product(dresses, words_only):
    page = search("red dress")
    skus = [hit.product.sku for hit in page.results if not hit.related]
    assert sorted(skus) == ["DRS-1", "DRS-2", "DRS-3"]  # "red" is an option value of two
    assert page.count == 3
    shown = {hit.product.sku: hit.variant for hit in page.results}
    assert shown["DRS-1"].options["Colour"] == "Red"  # the variant the query names
    assert shown["DRS-2"].options["Colour"] == "Red"
    assert shown["DRS-3"] is None  # no variants: the product itself
    red_image = ProductVariant.objects.get(sku="DRS-1-RED-S").image
    assert next(h for h in page.results if h.product.sku == "DRS-1").image == red_image


def test_variant_filters_hold_together_on_one_variant(client, dresses, words_only):
    body = api(client, q="red dress", **{"attr.size": "m", "attr.colour": "RED"}, in_stock="true")
    # DRS-1's red M is out of stock (its blue M is in stock); DRS-2's red M is in stock;
    # DRS-3 has no sizes at all.
    assert [hit["sku"] for hit in body["results"] if not hit["related"]] == ["DRS-2"]
    hit = body["results"][0]
    assert hit["variant"]["sku"] == "DRS-2-RED-M"
    assert hit["variant"]["options"] == {"Colour": "Red", "Size": "M"}
    assert hit["variant"]["price"] == "55.00"
    assert hit["image_url"] == hit["variant"]["image_url"]
    assert body["count"] == 1


def test_variant_filters_follow_edits_of_the_variants(client, dresses, words_only):
    """The filters read each product's summary of its variants (`variant_offers`): an
    edit in the admin's variant table (product_variants_save) reaches them at once."""
    wanted = {"q": "dress", "attr.size": "M", "attr.colour": "Red", "in_stock": "true"}
    red_m = ProductVariant.objects.get(sku="DRS-2-RED-M")
    red_m.stock, red_m.in_stock = 0, False
    product_variants_save(product=dresses["red_green"], variants=[red_m])
    assert api(client, **wanted)["count"] == 0
    blue_m = ProductVariant.objects.get(sku="DRS-1-BLU-M")
    blue_m.options = {"Colour": "Red", "Size": "M"}  # relabelled: now a red M in stock
    product_variants_save(product=dresses["two_tone"], variants=[blue_m])
    body = api(client, **wanted)
    assert [hit["variant"]["sku"] for hit in body["results"] if not hit["related"]] == [
        "DRS-1-BLU-M"
    ]
    blue_m.active = False
    product_variants_save(product=dresses["two_tone"], variants=[blue_m])
    assert api(client, **wanted)["count"] == 0
    assert api(client, q="dress", min_price="50", max_price="60")["count"] == 1  # DRS-2


def test_price_filters_apply_to_variant_prices(client, dresses, words_only):
    body = api(client, q="dress", min_price="50")
    assert [hit["sku"] for hit in body["results"] if not hit["related"]] == ["DRS-2"]
    assert body["results"][0]["variant"]["price"] == "55.00"


def test_values_of_one_name_are_ored(client, dresses, words_only):
    body = api(client, q="dress", **{"attr.colour": ["green", "blue"]})
    assert sorted(h["sku"] for h in body["results"] if not h["related"]) == ["DRS-1", "DRS-2"]


def test_facets_count_products_not_variants(client, dresses, words_only):
    facets = {f["name"]: f for f in api(client, q="dress")["facets"]["attributes"]}
    assert [f for f in facets] == ["colour", "size"]
    colours = {v["value"]: v["count"] for v in facets["colour"]["values"]}
    assert colours == {"Blue": 1, "Red": 2, "Green": 1}
    sizes = [(v["value"], v["count"]) for v in facets["size"]["values"]]
    assert sizes == [("S", 2), ("M", 2), ("L", 2)]  # the shop's order, two products each


def test_facet_configuration_and_aliases(client, dresses, words_only):
    colour = Facet.objects.create(name="colour", label="Colour family", position=1)
    FacetValueAlias.objects.create(facet=colour, alias="Crimson", value="Red")
    Facet.objects.create(name="Size", position=2)
    ProductVariant.objects.filter(sku="DRS-2-RED-S").update(
        options={"Colour": "Crimson", "Size": "S"}
    )
    products_variants_summarise([dresses["red_green"].pk])
    facets = api(client, q="dress")["facets"]["attributes"]
    assert [(f["name"], f["label"]) for f in facets] == [
        ("colour", "Colour family"),
        ("size", "Size"),
    ]
    colours = {v["value"]: v["count"] for v in facets[0]["values"]}
    assert colours["Red"] == 2  # "Crimson" counts as Red
    assert "Crimson" not in colours
    body = api(client, q="dress", **{"attr.colour": "crimson", "attr.size": "S"})
    # "crimson" is Red: DRS-1's red S and DRS-2's crimson S both qualify.
    assert sorted(h["sku"] for h in body["results"] if not h["related"]) == ["DRS-1", "DRS-2"]


def test_attributes_of_products_filter_too(client, make_product, words_only):
    make_product(sku="V-1", title="Wool scarf", attributes={"material": "Wool"})
    make_product(sku="V-2", title="Cotton scarf", attributes={"material": "cotton"})
    body = api(client, q="scarf", **{"attr.Material": "WOOL"})
    assert [h["sku"] for h in body["results"] if not h["related"]] == ["V-1"]


@pytest.mark.parametrize(
    "params",
    [{"attr.": "x"}, {"attr.size": "x" * 101}, {f"attr.a{i}": "x" for i in range(21)}],
)
def test_bad_attribute_filters_are_clear_400s(client, db, params):
    response = client.get(reverse("api-search"), {"q": "dress", **params})
    assert response.status_code == 400
    assert "attr" in response.content.decode().lower()


def test_the_page_offers_option_facets_and_shows_the_variant(client, dresses, words_only):
    response = client.get(reverse("shop-search"), {"q": "red dress", "attr.size": "M"})
    html = response.content.decode()
    assert response.status_code == 200
    assert 'data-facet="attr" data-value="Blue"' in html
    assert "✓ M" in html  # the chosen size is marked
    assert 'name="attr.size" value="M"' in html  # kept by the price form
    red_m = ProductVariant.objects.get(sku="DRS-2-RED-M")
    assert red_m.image.file.url in html


def test_a_configured_facet_value_in_the_query_is_understood(client, dresses, make_product):
    Facet.objects.create(name="Colour")
    FacetValueAlias.objects.create(facet=Facet.objects.get(), alias="scarlet", value="Red")
    with_blue_only = make_product(sku="DRS-4", title="Wrap dress, red trim", price="30")
    ProductVariant.objects.create(
        product=with_blue_only, sku="DRS-4-B", options={"Colour": "Blue"}, price=30
    )
    products_variants_summarise([with_blue_only.pk])
    body = api(client, q="scarlet dress", **{"attr.size": "M"}, in_stock="true")
    understood = {u["kind"]: u for u in body["understood"]}
    assert understood["attribute"]["params"] == {"attr.colour": "scarlet"}
    assert understood["attribute"]["label"] == "Colour: scarlet"
    # The blue-only dress is out though its title says "red"; the dress that the shop never
    # described by colour stays only if it has a size M (it has no sizes: out too).
    found = [h["sku"] for h in body["results"] if not h["related"]]
    assert "DRS-4" not in found
    assert "DRS-2" in found
    assert body["results"][found.index("DRS-2")]["variant"]["sku"] == "DRS-2-RED-M"
    plain = api(client, q="red dress")
    assert "DRS-3" in [h["sku"] for h in plain["results"] if not h["related"]]


def test_photo_search_shows_the_variant_whose_photo_it_is(client, dresses, settings):
    settings.SEARCH_SIMILARITY_FLOOR = -1.0
    photo = SimpleUploadedFile("red.jpg", jpeg_bytes(RED, seed=1), content_type="image/jpeg")
    body = client.post(reverse("api-search-image"), {"image": photo}).json()
    two_tone = next(hit for hit in body["results"] if hit["sku"] == "DRS-1")
    assert two_tone["variant"]["options"]["Colour"] == "Red"  # the same photo
    assert [hit["sku"] for hit in body["results"]].count("DRS-1") == 1


def test_the_product_page_lists_its_variants(client, dresses):
    html = client.get(reverse("product-detail", args=[dresses["red_green"].pk])).content.decode()
    assert "40.00 – 55.00" in html
    assert html.count("data-variant-sku=") == 6
    assert '<tr data-variant-sku="DRS-2-RED-M">\n            <td>Red</td><td>M</td>' in html


def test_an_imported_shopify_shop_searches_by_variant(client, embed_on_commit, words_only):
    """The issue's "done when": "red dress" with attr.size=M&in_stock=true shows one card per
    dress whose red variant in M is in stock, with the red photo; facets count products."""
    from tests.catalog.test_import_shopify import run, shopify_csv, simple, variant

    def dress(handle, title, stock):  # red, blue in S, M, L; `stock`: (colour, size) -> qty
        lines = [
            variant(handle, colour, size, **{
                "Variant SKU": f"{handle}-{colour}-{size}",
                "Variant Inventory Qty": str(stock.get((colour, size), 4)),
                "Variant Inventory Policy": "deny",
                "Variant Image": f"{colour.lower()}.jpg",
            })
            for colour in ("Red", "Blue")
            for size in ("S", "M", "L")
        ]  # fmt: skip
        lines[0].update(
            {"Title": title, "Option1 Name": "Colour", "Option2 Name": "Size", "Status": "active"}
        )
        lines[0].update({"Product Category": "Apparel & Accessories > Clothing > Dresses"})
        lines[1].update({"Image Src": "red.jpg", "Image Position": "1"})
        lines[2].update({"Image Src": "blue.jpg", "Image Position": "2"})
        return lines

    data = shopify_csv(
        [
            *dress("wrap-dress", "Wrap dress", {}),
            *dress("midi-dress", "Midi dress", {("Red", "M"): 0}),  # red M sold out
            *dress("maxi-dress", "Maxi dress", {("Blue", "M"): 0}),
            simple("red-mug", "Red mug"),
        ]
    )
    photos = {"red.jpg": jpeg_bytes(RED, seed=7), "blue.jpg": jpeg_bytes(BLUE, seed=8)}
    with embed_on_commit():
        job = run(data, zip_bytes(photos))
    assert (job.status, job.rows_failed, job.rows_created) == ("done", 0, 4)
    body = api(client, q="red dress", **{"attr.size": "M"}, in_stock="true")
    found = [hit for hit in body["results"] if not hit["related"]]
    assert sorted(hit["sku"] for hit in found) == ["maxi-dress", "wrap-dress"]
    for hit in found:
        assert hit["variant"]["options"] == {"Colour": "Red", "Size": "M"}
        assert hit["variant"]["in_stock"] is True
        assert hit["image_url"] == hit["variant"]["image_url"]
    red_photo = ProductVariant.objects.get(sku="wrap-dress-Red-M").image
    assert found[0]["image_url"].endswith(red_photo.file.url)
    sizes = {f["name"]: f for f in body["facets"]["attributes"]}["size"]["values"]
    assert {v["value"]: v["count"] for v in sizes} == {"S": 2, "M": 2, "L": 2}
