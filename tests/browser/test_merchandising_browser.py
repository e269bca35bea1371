"""Synonyms, a merchandising rule, sorting and related products in a real browser, for a
shopper and for the merchandiser in the admin (tools/browser/merchandising.mjs)."""

import pytest
from django.contrib.auth import get_user_model

from search.rules import merchandising_rule_create
from search.synonyms import synonym_set_create
from tests.browser.scripts import browser_report


@pytest.fixture
def merchandised_shop(settings, live_server, transactional_db, catalog_shop):
    # Only word matches are relevant: the tiny random model's similarities are noise.
    settings.SEARCH_SIMILARITY_FLOOR = 0.99
    settings.ROOT_URLCONF = "tests.browser.urls"
    get_user_model().objects.create_superuser("admin", "admin@example.com", "admin-pass")
    synonym_set_create(root="sneaker", terms=["boots", "shoes"])
    synonym_set_create(terms=["tee", "t-shirt"])
    rule = merchandising_rule_create(
        name="Sneaker campaign",
        query="sneaker",
        pins=[(catalog_shop["TEE-101"], 1), (catalog_shop["DRS-201"], 2)],
        hides=[catalog_shop["SHO-300"]],
    )
    catalog_shop["DRS-201"].delete()  # the rule now names a deleted product
    return live_server.url, rule


def test_a_shopper_and_a_merchandiser_see_synonyms_rules_sorting_related(merchandised_shop):
    url, rule = merchandised_shop
    report = browser_report("merchandising.mjs", url, str(rule.pk))
    assert "error" not in report, report["error"]

    thin = report["thin"]
    assert thin["summary"] == "2 products for “striped”"
    assert sorted(c["sku"] for c in thin["matches"]) == ["DRS-200", "TEE-100"]
    assert thin["divider"] == "Related products"
    # Everything else, most similar first (the deleted dress is gone).
    assert sorted(c["sku"] for c in thin["related"]) == ["SHO-300", "SHO-301", "TEE-101"]
    assert all(c["imageLoaded"] for c in thin["matches"] + thin["related"])

    assert report["sorted"]["current"] == "Price, high to low"
    assert [c["price"] for c in report["sorted"]["matches"]] == ["39.00 USD", "12.50 USD"]

    rule_page = report["rule"]
    assert rule_page["synonyms"] == "Including boots, shoes for “sneaker”."
    # The pinned t-shirt first, the boots by synonym; the hidden shoes nowhere, not even
    # among the related products; the deleted pin is skipped.
    assert [c["sku"] for c in rule_page["matches"]] == ["TEE-101", "SHO-301"]
    assert "SHO-300" not in {c["sku"] for c in rule_page["related"]}

    nonsense = report["nonsense"]
    assert nonsense["message"] == "No products match “asdfgh” with these filters."
    # Dropping the filter is the help; the popular categories come only when nothing else.
    assert nonsense["chips"] == ["Brand: Acme ✕"]
    assert nonsense["related"] == 0
    assert nonsense["afterRemoval"].endswith("/?q=asdfgh")

    admin = report["admin"]
    assert admin["previewBesideForm"]
    assert [row["sku"] for row in admin["previewRows"][:2]] == ["TEE-101", "SHO-301"]
    assert "pinned" in admin["previewRows"][0]["badges"]
    assert admin["problems"] == "broken: pin at position: product DRS-201 was deleted"
    assert "query contains “sneaker”" in admin["listing"]
    assert "broken" in admin["listing"]
    assert "sneaker → boots, shoes" in admin["synonyms"]
    assert "tee ⇄ t-shirt" in admin["synonyms"]

    phone = report["phone"]
    assert not phone["overflows"]
    assert phone["matches"] == 2
    assert phone["related"] == 3
