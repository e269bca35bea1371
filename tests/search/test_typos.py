"""Typo tolerance against the catalog's own words, and nonsense that stays empty."""

import pytest
from django.core.cache import cache

from embeddings.spaces import space_active
from search.models import VocabularyWord
from search.pipeline import product_search_by_text
from search.query import query_analyse
from search.selectors import normalise_query, query_vector_cache_key
from search.typos import Speller

pytestmark = pytest.mark.django_db


@pytest.fixture
def words_only(settings):
    settings.SEARCH_SIMILARITY_FLOOR = 0.99  # the random tiny model: only words find products


def skus(page) -> set[str]:
    """The products found (not the related ones that fill a thin page)."""
    return {hit.product.sku for hit in page.results if not hit.related}


@pytest.mark.parametrize(
    ("query", "corrected", "found"),
    [
        ("stripped shirt", "striped shirt", {"TEE-100"}),  # the demo's complaint
        ("strpied", "striped", {"TEE-100", "DRS-200"}),  # two letters swapped: one edit
        ("Leathr shoes", "leather shoes", {"SHO-300"}),
        ("stepwll", "stepwell", {"SHO-300", "SHO-301"}),  # a brand
        ("sueed boots", "suede boots", {"SHO-301"}),
        ("swaetshrit", None, set()),  # no such word near: nothing to correct to
        ("linnen dres", "linen dres", {"DRS-201"}),  # "dres" is a prefix: it matches as typed
        ("BROWN SEUDE", "BROWN suede", {"SHO-301"}),  # the other words as typed
        ("steppwel", "stepwell", {"SHO-300", "SHO-301"}),  # 8 letters: two edits away
        # two edits from "leather", but under 8 letters: left out, the shoes match
        ("lethr shoes", None, {"SHO-300", "SHO-301"}),
    ],
)
def test_misspelt_catalog_words_find_their_products(
    catalog_shop, words_only, query, corrected, found
):
    page = product_search_by_text(query=query, limit=20)
    assert page.corrected_query == corrected
    assert skus(page) == found


@pytest.mark.parametrize(
    "query",
    [
        "dress",  # a catalog word
        "stri",  # a prefix of one: it matches as typed
        "made to last",  # description words are known too
        "SHO-301",  # a SKU
        "SHO-399",  # SKU-like, unknown: never corrected
        "1200",  # a number
        "bots",  # four letters, but only "boots" is near: corrected below
        "red",  # short words are never corrected
        "shoe",
    ],
)
def test_known_words_skus_and_numbers_are_left_alone(catalog_shop, words_only, query):
    analysis = query_analyse(query=query)
    if query == "bots":
        assert analysis.corrections == (("bots", "boots"),)
        return
    assert analysis.corrections == ()
    assert analysis.corrected_query is None


def test_correction_can_be_turned_off_and_the_text_tower_sees_what_was_typed(
    catalog_shop, words_only
):
    space = space_active()
    cache.clear()
    as_typed = product_search_by_text(query="stripped shirt", limit=20, correct=False)
    assert (as_typed.ignored_words, skus(as_typed)) == (("stripped",), {"TEE-100", "TEE-101"})
    page = product_search_by_text(query="stripped shirt", limit=20)
    assert skus(page) == {"TEE-100"}
    assert cache.get(query_vector_cache_key(space, normalise_query("stripped shirt"))) is not None
    assert cache.get(query_vector_cache_key(space, normalise_query("striped shirt"))) is None


def test_the_nearest_then_the_most_frequent_word_wins():
    speller = Speller.from_counts({"shirt": 3, "short": 9, "skirt": 1, "shirts": 50})
    assert speller.correct("shirt") is None  # known
    assert speller.correct("shrit") == "shirt"  # a swap: one edit, nearer than "short"
    assert speller.correct("shert") == "short"  # one edit from shirt and short: more products
    assert speller.correct("sh1rt") is None  # digits: never
    assert speller.correct("skrt") == "skirt"
    assert speller.correct("xyzt") is None


def test_corrections_follow_the_vocabulary_as_products_change(
    catalog_shop, make_product, words_only, embed_on_commit
):
    assert query_analyse(query="cardigon").corrections == ()
    with embed_on_commit():
        cardigan = make_product(title="Grey wool cardigan")
    assert VocabularyWord.objects.filter(word="cardigan").exists()
    page = product_search_by_text(query="cardigon", limit=20)
    assert page.corrected_query == "cardigan"
    assert [hit.product for hit in page.results if not hit.related] == [cardigan]


# --- nonsense stays empty -----------------------------------------------------------------


def test_queries_without_a_catalog_word_need_the_higher_floor(catalog_shop):
    space = space_active()
    space.similarity_floor = -1.0  # every photo passes the floor of catalog words...
    space.unknown_words_floor = 0.99  # ...but not that of words the catalog never uses
    space.save(update_fields=["similarity_floor", "unknown_words_floor"])
    for nonsense in ("qwerty zxcv", "asdf ghjk lmno", "car engine oil"):
        assert not query_analyse(query=nonsense).in_vocabulary
        assert product_search_by_text(query=nonsense, limit=20).count == 0
    # One catalog word (or a correction to one) is enough for the ordinary floor: its word
    # matches, and photo hits as similar as they are.
    for query, words in (
        ("red qwerty", {"TEE-100", "DRS-200"}),
        ("leathr qwerty", {"SHO-300"}),
        ("红色", {"TEE-100", "DRS-200"}),
    ):
        page = product_search_by_text(query=query, limit=20)
        assert words <= skus(page), query
        assert page.count == len(skus(page))


def test_without_calibration_unknown_words_get_the_setting_or_the_floor(catalog_shop, settings):
    settings.SEARCH_SIMILARITY_FLOOR = -1.0
    assert space_active().unknown_words_floor is None
    assert product_search_by_text(query="qwerty zxcv", limit=20).count >= 1  # the nearest
    settings.SEARCH_UNKNOWN_WORDS_FLOOR = 0.99
    assert product_search_by_text(query="qwerty zxcv", limit=20).count == 0
    assert product_search_by_text(query="striped", limit=20).count >= 2  # the word matches


def test_the_api_and_the_page_say_which_words_were_searched(client, catalog_shop, words_only):
    body = client.get("/api/search/", {"q": "stripped shirt"}).json()
    assert body["corrected_query"] == "striped shirt"
    assert [r["sku"] for r in body["results"] if not r["related"]] == ["TEE-100"]
    assert client.get("/api/search/", {"q": "striped shirt"}).json()["corrected_query"] is None
    as_typed = client.get("/api/search/", {"q": "stripped shirt", "correct": "false"}).json()
    assert (as_typed["count"], as_typed["corrected_query"]) == (2, None)
    assert as_typed["ignored_words"] == ["stripped"]
    page = client.get("/", {"q": "stripped shirt"}).content.decode()
    assert "Showing results for <em>striped shirt</em>" in page
    assert 'href="?q=stripped+shirt&amp;correct=false"' in page
    original = client.get("/", {"q": "stripped shirt", "correct": "false"}).content.decode()
    assert "Showing results for" not in original
    assert "No results for <em>stripped</em>; showing <em>shirt</em>" in original
