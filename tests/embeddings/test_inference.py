"""Attributes read from photos by the embed worker and by `manage.py infer_attributes`."""

import pytest
from django.core.management import CommandError, call_command

from catalog.demo_catalog import demo_product, render_product_image
from catalog.models import Facet, InferredAttribute, Product
from catalog.services import category_get_or_create_path
from embeddings.spaces import space_active
from embeddings.zero_shot import attribute_values, zero_shot_cache_clear
from tests.builders import demo_shop_pinned

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_zero_shot():
    zero_shot_cache_clear()
    yield
    zero_shot_cache_clear()


def test_an_untrained_space_reads_nothing(make_product):
    with pytest.raises(CommandError, match="untrained"):
        call_command("infer_attributes")


def test_missing_attributes_are_read_from_photos_by_the_command_and_the_worker(
    settings, make_product, embed_on_commit, capsys
):
    settings.FINETUNE_VAL_FRACTION = 0.25
    settings.INFER_ATTRIBUTES_MIN_LIFT = 0  # every reading is suggested, however unsure
    demo_shop_pinned(64, ids_after=5_300_000)
    call_command(
        "finetune_clip", scratch=True, architecture="shop-micro", epochs=20, batch_size=16,
        lr=3e-3, margin=-1.0, name="inference", no_events=True,
    )  # fmt: skip
    space = space_active()
    Facet.objects.update_or_create(name="pattern", defaults={"inferred_threshold": 0.0})
    # Six single-colour products lose their colour and pattern, as if never entered.
    stripped = list(
        Product.objects.filter(attributes__colour__isnull=False, options__0__name="Size")
        .exclude(options__contains=[{"name": "Colour"}])
        .order_by("pk")[:6]
    )
    entered = {p.pk: dict(p.attributes) for p in stripped}
    for product in stripped:
        for name in ("colour", "pattern"):
            product.attributes.pop(name)
        Product.objects.filter(pk=product.pk).update(attributes=product.attributes)
    capsys.readouterr()

    call_command("infer_attributes", batch_size=20)
    out = capsys.readouterr().out
    assert "20/64 products" in out
    assert "64/64 products" in out
    rows = InferredAttribute.objects.filter(space=space.name)
    # Only what was missing, only for the products missing it.
    assert {(r.product_id, r.name) for r in rows} == {
        (p.pk, name) for p in stripped for name in ("colour", "pattern")
    }
    right = sum(r.value == entered[r.product_id][r.name] for r in rows.filter(name="colour"))
    print(f"colours read right: {right}/6")
    # Pattern's threshold is 0: every pattern read counts as a facet value; colour has none.
    for product in Product.objects.filter(pk__in=entered):
        assert set(product.inferred_attributes) == {"pattern"}
    # Run again: nothing is read twice.
    call_command("infer_attributes")
    assert "Done: 0 values suggested" in capsys.readouterr().out
    # Read again with the default floor: what is hardly surer than a guess is left out.
    settings.INFER_ATTRIBUTES_MIN_LIFT = 2.0
    InferredAttribute.objects.all().delete()
    call_command("infer_attributes")
    kept = InferredAttribute.objects.all()
    assert kept.count() < 12
    assert all(r.confidence >= 2 / len(attribute_values(r.name)) for r in kept)

    # The worker: a new product without a colour gets one read from its photo on upload.
    held_out = demo_product(7001)
    with embed_on_commit():
        product = make_product(
            sku="NEW-1", title="New arrival", category=category_get_or_create_path(["New"]),
            attributes={"pattern": held_out.pattern, "material": held_out.material},
            images=[render_product_image(held_out, 0)],
        )  # fmt: skip
    (row,) = InferredAttribute.objects.filter(product=product)
    assert (row.name, row.status, row.space) == ("colour", "suggested", space.name)
    assert 0 < row.confidence <= 1
