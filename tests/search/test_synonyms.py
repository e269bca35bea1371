"""Synonym sets: one-way and two-way, the API says which matched, bad sets are refused."""

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from search.models import SynonymSet
from search.pipeline import product_search_by_text
from search.synonyms import synonym_expansion, synonym_set_create, synonyms_expand

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def words_only(settings):
    """Only word matches are relevant: the random tiny model's similarities are near 0."""
    settings.SEARCH_SIMILARITY_FLOOR = 0.99


def relevant(page):
    return [hit.product.sku for hit in page.results if not hit.related]


@pytest.fixture
def bags(make_product):
    return {
        "handbag": make_product(sku="HND-1", title="Leather handbag", brand="Acme"),
        "backpack": make_product(sku="BPK-2", title="Blue canvas backpack", brand="Trail"),
        "paper": make_product(sku="PPR-3", title="Blue paper bag", brand="Acme"),
        "scarf": make_product(sku="SCF-1", title="Blue wool scarf", brand="Acme"),
    }


def test_one_way_synonyms_widen_the_root_only(bags):
    synonym_set_create(root="Bag", terms=["handbag", "Backpack"])
    page = product_search_by_text(query="bag", limit=10)
    # The shopper's own word ranks first, then the products found through a synonym.
    assert relevant(page)[0] == "PPR-3"
    assert set(relevant(page)) == {"HND-1", "BPK-2", "PPR-3"}
    assert page.synonyms == {"bag": ["handbag", "backpack"]}
    matched = {hit.product.sku: hit.matched for hit in page.results}
    assert matched["PPR-3"] == ("text",)
    assert matched["HND-1"] == ("text", "synonym")
    # Not the reverse: "handbag" does not find the paper bag.
    page = product_search_by_text(query="handbag", limit=10)
    assert relevant(page) == ["HND-1"]
    assert page.synonyms == {}


def test_the_other_words_of_the_query_still_have_to_match(bags):
    synonym_set_create(root="bag", terms=["handbag", "backpack"])
    page = product_search_by_text(query="blue bag", limit=10)
    assert set(relevant(page)) == {"BPK-2", "PPR-3"}  # not the handbag (not blue), nor the scarf


def test_two_way_synonyms_match_each_other(catalog_shop, make_product):
    make_product(sku="TOP-900", title="Graphic top")
    synonym_set_create(terms=["top", "t-shirt"])
    page = product_search_by_text(query="top", limit=10)
    assert set(relevant(page)) == {"TOP-900", "TEE-100", "TEE-101"}
    matched = {hit.product.sku: hit.matched for hit in page.results}
    assert matched["TOP-900"] == ("text",)
    assert matched["TEE-100"] == ("text", "synonym", "image")
    assert page.synonyms == {"top": ["t-shirt"]}
    page = product_search_by_text(query="red T-Shirt", limit=10)
    assert relevant(page) == ["TEE-100"]  # "red" still has to match
    page = product_search_by_text(query="t-shirt", limit=10)
    assert set(relevant(page)) == {"TOP-900", "TEE-100", "TEE-101"}
    assert page.synonyms == {"t-shirt": ["top"]}


def test_chinese_synonyms_are_found_inside_a_word(catalog_shop, make_product):
    make_product(sku="TEE-901", title="Short sleeve", attributes={"titles": {"zh": "白色短袖"}})
    synonym_set_create(terms=["T恤", "短袖"])
    page = product_search_by_text(query="白色T恤", limit=10)
    assert set(relevant(page)) == {"TEE-101", "TEE-901"}
    assert page.synonyms == {"t恤": ["短袖"]}


def test_disabled_sets_do_nothing(bags):
    synonym_set_create(root="bag", terms=["backpack"], enabled=False)
    # "handbag" holds "bag" inside the compound (catalog 0006); "backpack" only by the set.
    assert relevant(product_search_by_text(query="bag", limit=10)) == ["PPR-3", "HND-1"]


def test_longer_terms_win_and_spans_never_overlap():
    sets = [("", ["t shirt", "tee"]), ("", ["shirt", "top"]), ("bag", ["handbag"])]
    expansion = synonym_expansion(query="Red T Shirt and shirt, bag!", sets=sets)
    assert expansion.groups == (("t shirt", "tee"), ("shirt", "top"), ("bag", "handbag"))
    assert expansion.rest == "red and"
    assert expansion.applied == {"t shirt": ["tee"], "shirt": ["top"], "bag": ["handbag"]}
    assert not synonym_expansion(query="handbag", sets=sets)


def test_the_lookup_reads_only_sets_the_query_may_contain(db, django_assert_num_queries):
    synonym_set_create(root="bag", terms=["handbag"])
    synonym_set_create(terms=["sofa", "couch"])
    with django_assert_num_queries(1):
        assert synonyms_expand(query="red couch").applied == {"couch": ["sofa"]}
    assert not synonyms_expand(query="!!!")


def test_the_api_says_which_synonyms_matched(client, bags):
    synonym_set_create(root="bag", terms=["handbag", "backpack"])
    body = client.get(reverse("api-search"), {"q": "bag"}).json()
    assert body["synonyms"] == {"bag": ["handbag", "backpack"]}
    matched = {r["sku"]: r["matched"] for r in body["results"] if not r["related"]}
    assert matched == {
        "PPR-3": ["text"],
        "HND-1": ["text", "synonym"],
        "BPK-2": ["text", "synonym"],
    }


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"terms": ["tee"]}, "A two-way set needs at least two different terms"),
        ({"terms": ["tee", "TEE"]}, "A two-way set needs at least two different terms"),
        ({"root": "bag", "terms": ["bag"]}, "A one-way set needs at least one term besides “bag”"),
        ({"terms": ["tee", "!!!"]}, "“!!!” has no letters or digits."),
        ({"root": "?", "terms": ["tee"]}, "has no letters or digits"),
        ({"terms": ["a b c d e", "f"]}, "more than 4 words"),
    ],
)
def test_sets_that_could_never_work_are_refused(db, fields, message):
    with pytest.raises(ValidationError, match=message):
        synonym_set_create(**fields)
    assert not SynonymSet.objects.exists()


def test_the_admin_saves_sets_and_shows_form_errors(admin_client, bags):
    url = reverse("admin:search_synonymset_add")
    response = admin_client.post(url, {"root": "", "terms": "tee", "enabled": "on"})
    assert response.status_code == 200
    assert "A two-way set needs at least two different terms" in response.content.decode()
    form = {"root": "Bag", "terms": "Handbag， backpack,", "enabled": "on"}  # a Chinese comma
    response = admin_client.post(url, form)
    assert response.status_code == 302
    saved = SynonymSet.objects.get()
    assert (saved.root, saved.terms) == ("bag", ["handbag", "backpack"])
    listing = admin_client.get(reverse("admin:search_synonymset_changelist")).content.decode()
    assert "bag → handbag, backpack" in listing
    assert "one-way from “bag”" in listing
    found = admin_client.get(reverse("admin:search_synonymset_changelist"), {"q": "Backpack"})
    assert "bag → handbag, backpack" in found.content.decode()
    assert "HND-1" in relevant(product_search_by_text(query="bag", limit=10))
