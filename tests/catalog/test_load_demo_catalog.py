"""manage.py load_demo_catalog: a deterministic shop, embedded, safe to run twice."""

import pytest
from django.core.management import CommandError, call_command

from catalog.demo_catalog import DEMO_FACETS, demo_product
from catalog.models import Category, Facet, FacetValueAlias, Product, ProductImage, ProductVariant
from catalog.services import demo_catalog_load, products_variants_summarise
from embeddings.models import CaptionEmbedding, ImageEmbedding

pytestmark = pytest.mark.django_db


def test_demo_catalog_is_created_embedded_and_complete(embed_on_commit, capsys):
    with embed_on_commit():
        call_command("load_demo_catalog", products=12, seed=3)
    assert "12 demo products created" in capsys.readouterr().out
    expected = demo_product(5, seed=3)
    product = Product.objects.get(sku=expected.sku)
    assert (product.title, product.price, product.brand) == (
        expected.title,
        expected.price,
        expected.brand,
    )
    assert product.attributes["titles"] == {"zh": expected.title_zh}
    assert product.category.name == expected.category[-1]
    assert product.category.parent.name == expected.category[0]
    assert product.images.count() == len(expected.photos)
    image = product.images.first()
    assert (image.width, image.height) == (256, 256)
    assert len(image.sha256) == 64
    total_images = ProductImage.objects.count()
    assert ImageEmbedding.objects.filter(vector__isnull=False).count() == total_images
    # English title, Chinese title and description of every product.
    assert CaptionEmbedding.objects.count() == 12 * 3


def test_running_it_again_adds_only_what_is_missing(capsys):
    demo_catalog_load(count=5, seed=1, embed=False)
    images = ProductImage.objects.count()
    call_command("load_demo_catalog", products=8, seed=1, no_embed=True)
    assert "3 demo products created (5 already there)" in capsys.readouterr().out
    assert Product.objects.count() == 8
    assert ProductImage.objects.count() > images
    assert Category.objects.filter(parent=None).count() >= 1


def test_an_interrupted_load_leaves_no_half_written_product():
    def stop_after_first_batch(count):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        demo_catalog_load(count=9, batch_size=4, embed=False, progress=stop_after_first_batch)
    assert Product.objects.count() == 4
    assert all(
        p.images.count() == len(demo_product(p_index).photos)
        for p_index, p in enumerate(Product.objects.order_by("sku"))
    )
    assert demo_catalog_load(count=9, batch_size=4, embed=False) == 5


def test_bad_count_is_refused():
    with pytest.raises(CommandError, match="at least 1"):
        call_command("load_demo_catalog", products=0)


def test_clothes_and_shoes_are_loaded_with_their_variants_and_colour_photos():
    demo_catalog_load(count=40, embed=False)
    expected = next(demo_product(i) for i in range(40) if len(demo_product(i).colours) == 3)
    product = Product.objects.get(sku=expected.sku)
    variants = list(product.variants.select_related("image"))
    assert [(v.sku, v.options, v.price, v.stock, v.in_stock) for v in variants] == [
        (v.sku, v.options, v.price, v.stock, v.stock > 0) for v in expected.variants
    ]
    # Each colour's variants show its own photo, the product's photo in that colour.
    photos = {c: {v.image.position for v in variants if v.options["Colour"] == c.capitalize()}
              for c in expected.colours}  # fmt: skip
    assert photos == {c: {expected.variants[i].photo} for i, c in _first_of_each(expected)}
    assert len({v.image.sha256 for v in variants}) == 3
    # The product's summary follows its variants.
    assert product.options == [
        {"name": "Colour", "values": [c.capitalize() for c in expected.colours]},
        {
            "name": "Size",
            "values": list(dict.fromkeys(v.options["Size"] for v in expected.variants)),
        },
    ]
    assert (product.price, product.in_stock) == (expected.price, expected.in_stock)
    assert product.price_max == max(v.price for v in expected.variants)
    # Products that are neither clothes nor shoes have none.
    mug = Product.objects.filter(attributes__category="mug").first()
    assert (list(mug.variants.all()), mug.options, mug.price_max) == ([], [], None)
    assert ProductVariant.objects.count() == sum(len(demo_product(i).variants) for i in range(40))
    # The demo writes its products summarised: the catalog's summary finds nothing to change.
    assert products_variants_summarise(Product.objects.values_list("pk", flat=True)) == []


def _first_of_each(product):
    seen = {}
    for i, v in enumerate(product.variants):
        seen.setdefault(v.options["Colour"].lower(), i)
    return [(i, c) for c, i in seen.items()]


def test_the_demo_sets_up_its_facets_once_and_never_over_a_shops_own():
    demo_catalog_load(count=2, embed=False)
    demo_catalog_load(count=3, embed=False)
    assert list(Facet.objects.values_list("name", flat=True)) == [f[0] for f in DEMO_FACETS]
    assert FacetValueAlias.objects.get(facet__name="Colour", alias="红色").value == "Red"
    assert FacetValueAlias.objects.count() == sum(len(f[2]) for f in DEMO_FACETS)

    Facet.objects.all().delete()
    Facet.objects.create(name="Fit")
    demo_catalog_load(count=4, embed=False)
    assert list(Facet.objects.values_list("name", flat=True)) == ["Fit"]
