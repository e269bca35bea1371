"""manage.py load_demo_catalog: a deterministic shop, embedded, safe to run twice."""

import pytest
from django.core.management import CommandError, call_command

from catalog.demo_catalog import demo_product
from catalog.models import Category, Product, ProductImage
from catalog.services import demo_catalog_load
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
    assert product.images.count() == expected.image_count
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
        p.images.count() == demo_product(p_index).image_count
        for p_index, p in enumerate(Product.objects.order_by("sku"))
    )
    assert demo_catalog_load(count=9, batch_size=4, embed=False) == 5


def test_bad_count_is_refused():
    with pytest.raises(CommandError, match="at least 1"):
        call_command("load_demo_catalog", products=0)
