"""Attributes read from photos: suggestions that never overwrite an entered value, counted
as facet values and filters once accepted, reviewed in bulk in the admin."""

import pytest
from django.db import connection
from django.urls import reverse

from catalog.inferred import (
    Guess,
    inferred_attributes_record,
    inferred_attributes_review,
    inferred_attributes_sync,
)
from catalog.models import Facet, InferredAttribute, Product
from catalog.services import product_save

pytestmark = pytest.mark.django_db


@pytest.fixture
def words_only(settings):
    settings.SEARCH_SIMILARITY_FLOOR = 0.99


def record(product, name, value, confidence=0.6):
    return inferred_attributes_record(
        space="test-space", guesses={product.pk: [Guess(name, value, confidence)]}
    )


def with_facet_key(key):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT sku FROM catalog_product WHERE facet_keys @> ARRAY[%s] ORDER BY sku", [key]
        )
        return [row[0] for row in cursor.fetchall()]


def found(client, **params):
    response = client.get(reverse("api-search"), {"q": "mug", **params})
    assert response.status_code == 200, response.content
    body = response.json()
    facets = {f["name"]: f for f in body["facets"]["attributes"]}
    counts = {
        name: {v["value"]: v["count"] for v in facet["values"]} for name, facet in facets.items()
    }
    return sorted(h["sku"] for h in body["results"] if not h["related"]), counts


def test_an_inferred_value_never_overwrites_an_entered_one(make_product):
    entered = make_product(sku="M-1", title="Mug", attributes={"colour": "blue"})
    missing = make_product(sku="M-2", title="Mug", attributes={"material": "ceramic"})
    assert record(entered, "colour", "red", 0.99) == []  # it has one: nothing is suggested
    (row,) = record(missing, "colour", "red", 0.99)
    assert row.status == InferredAttribute.Status.SUGGESTED
    row.status = InferredAttribute.Status.CONFIRMED
    row.save()
    inferred_attributes_sync(product_ids=[missing.pk])
    missing.refresh_from_db()
    assert missing.inferred_attributes == {"colour": "red"}
    assert missing.attributes == {"material": "ceramic"}  # what was entered is untouched

    record(missing, "pattern", "dotted")

    # A value entered later wins: the inferred one stops counting, a suggestion goes.
    missing.attributes = {"material": "ceramic", "colour": "green", "pattern": "plain"}
    product_save(product=missing, changed_fields=["attributes"])
    assert not InferredAttribute.objects.filter(name="pattern").exists()
    assert with_facet_key("colour=green") == ["M-2"]
    assert with_facet_key("colour=red") == []
    missing.refresh_from_db()
    assert missing.inferred_attributes == {}
    # And the photos are not asked again about what it has.
    assert record(missing, "colour", "red", 0.99) == []


def test_a_confirmed_value_is_filtered_by_and_counted(client, make_product, words_only):
    Facet.objects.create(name="colour", inferred_threshold=0.9)
    make_product(sku="M-1", title="Red mug", attributes={"colour": "red"})
    unsure = make_product(sku="M-2", title="Plain mug")
    sure = make_product(sku="M-3", title="Another mug")
    record(unsure, "colour", "red", 0.6)
    record(sure, "colour", "red", 0.95)
    # Above the facet's threshold it counts at once; below it waits for review.
    skus, counts = found(client, **{"attr.colour": "red"})
    assert skus == ["M-1", "M-3"]
    assert counts["colour"] == {"red": 2}

    row = InferredAttribute.objects.get(product=unsure)
    inferred_attributes_review(ids=[row.pk], status=InferredAttribute.Status.CONFIRMED)
    skus, counts = found(client, **{"attr.colour": "red"})
    assert skus == ["M-1", "M-2", "M-3"]
    assert counts["colour"] == {"red": 3}

    # A higher threshold leaves only what was entered or confirmed.
    Facet.objects.filter(name="colour").update(inferred_threshold=0.99)
    inferred_attributes_sync()
    skus, _ = found(client, **{"attr.colour": "red"})
    assert skus == ["M-1", "M-2"]


def test_a_rejected_value_is_not_suggested_again_unless_the_photos_change_their_mind(
    make_product,
):
    product = make_product(sku="M-1", title="Mug")
    (row,) = record(product, "pattern", "striped")
    row.status = InferredAttribute.Status.REJECTED
    row.save()
    assert record(product, "pattern", "striped") == []
    (again,) = record(product, "pattern", "checked")
    assert (again.pk, again.status, again.value) == (row.pk, "suggested", "checked")


def test_the_admin_confirms_corrects_and_rejects_in_bulk(admin_client, make_product):
    products = [make_product(sku=f"M-{i}", title="Mug") for i in range(4)]
    rows = [record(p, "colour", "red", 0.5)[0] for p in products]
    url = reverse("admin:catalog_inferredattribute_changelist")
    listing = admin_client.get(url, {"status__exact": "suggested"}).content.decode()
    assert all(p.sku in listing for p in products)
    assert "50%" in listing

    def act(action, ids, **extra):
        data = {"action": action, "_selected_action": [r.pk for r in ids], **extra}
        response = admin_client.post(url, data, follow=True)
        return [str(message) for message in response.context["messages"]]

    assert act("confirm", rows[:2]) == ["2 values confirmed."]
    assert act("correct", rows[2:3], value="navy") == ["1 value confirmed."]
    assert act("correct", rows[3:], value="  ") == ["enter the value to correct to"]
    assert act("reject", rows[3:]) == ["1 value rejected."]

    statuses = dict(InferredAttribute.objects.values_list("product__sku", "status"))
    assert statuses == {
        "M-0": "confirmed",
        "M-1": "confirmed",
        "M-2": "confirmed",
        "M-3": "rejected",
    }
    values = dict(Product.objects.values_list("sku", "inferred_attributes"))
    assert values == {"M-0": {"colour": "red"}, "M-1": {"colour": "red"}, "M-2": {"colour": "navy"},
                      "M-3": {}}  # fmt: skip
    assert InferredAttribute.objects.filter(reviewed_by__isnull=False).count() == 4
