"""Suggestions as you type: ranked by popularity then prefix, per word, Chinese by characters."""

import pytest
from django.urls import reverse

from catalog.services import category_get_or_create_path
from search.suggest import suggestion_queries_store, suggestions_for_prefix

pytestmark = pytest.mark.django_db


@pytest.fixture
def striped_shop(make_product, embed_on_commit):
    tees = category_get_or_create_path(["Clothing", "T-Shirts"])
    shirts = category_get_or_create_path(["Clothing", "Shirts"])
    scarves = category_get_or_create_path(["Accessories", "Scarves"])
    rows = [
        ("Red striped t-shirt", "Acme", tees, "红色条纹T恤"),
        ("Red striped t-shirt", "Acme", tees, "红色条纹T恤"),
        ("Red striped t-shirt", "Acme", tees, "红色条纹T恤"),
        ("Striped linen shirt", "Stripe Studio", shirts, "条纹亚麻衬衫"),
        ("Blue stripy scarf", "Stripe Studio", scarves, "蓝色围巾"),
        ("Blue stripy scarf", "Stripe Studio", scarves, "蓝色围巾"),
    ]
    with embed_on_commit():
        for title, brand, category, zh in rows:
            make_product(
                title=title, brand=brand, category=category, attributes={"titles": {"zh": zh}}
            )


def suggest(prefix, limit=8):
    return [(s.text, s.kind, s.count) for s in suggestions_for_prefix(prefix=prefix, limit=limit)]


def test_suggestions_rank_by_popularity_then_prefix(striped_shop):
    assert suggest("stri") == [
        ("Stripe Studio", "brand", 3),  # as popular as the t-shirts, and it starts with "stri"
        ("Red striped t-shirt", "title", 3),
        ("Blue stripy scarf", "title", 2),
        ("striped shirt", "query", 1),  # the catalog's stand-in for a popular query
        ("Striped linen shirt", "title", 1),
    ]
    assert suggest("stri", limit=2) == suggest("stri")[:2]


def test_every_typed_word_is_a_prefix_of_a_word(striped_shop):
    assert suggest("red str") == [("Red striped t-shirt", "title", 3)]
    assert suggest("STR red") == suggest("red str")  # any order, any case
    assert suggest("t-sh") == [
        ("T-Shirts", "category", 3),  # it starts with what was typed
        ("red t-shirt", "query", 3),  # then the shorter
        ("Red striped t-shirt", "title", 3),
    ]
    assert suggest("clo") == [("Clothing", "category", 4)]
    assert suggest("red blue") == []
    assert suggest("sca") == [
        ("Scarves", "category", 2),
        ("blue scarf", "query", 2),
        ("Blue stripy scarf", "title", 2),
    ]


def test_chinese_prefixes_match_by_characters(striped_shop):
    assert suggest("红") == [("红色t恤", "query", 3), ("红色条纹T恤", "title", 3)]
    assert suggest("红色条") == [("红色条纹T恤", "title", 3)]
    assert ("条纹亚麻衬衫", "title", 1) in suggest("条纹")
    # The start of a word, not of the title:
    assert suggest("衬") == [("条纹衬衫", "query", 1), ("条纹亚麻衬衫", "title", 1)]
    assert suggest("纹") == []  # inside a word: no


def test_popular_queries_from_a_search_log_plug_in(striped_shop):
    suggestion_queries_store(counts={"Striped dress": 40, "striped  DRESS": 2, "scarf": 7})
    assert suggest("stri")[0] == ("Striped dress", "query", 42)
    assert ("striped shirt", "query", 1) not in suggest("stri")  # the stand-ins are replaced


def test_suggest_api(client, striped_shop):
    response = client.get(reverse("api-suggest"), {"q": "red str", "limit": 3})
    assert response.status_code == 200
    assert response.json() == {
        "query": "red str",
        "suggestions": [{"text": "Red striped t-shirt", "kind": "title", "count": 3}],
    }


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "q: Type the start of a search."),
        ({"q": ""}, "q: Type the start of a search."),
        ({"q": "   "}, "q: Type the start of a search."),
        ({"q": "a" * 101}, "q: The prefix is too long: at most 100 characters."),
        ({"q": "red", "limit": "0"}, "limit: Ensure this value is greater than or equal to 1."),
        ({"q": "red", "limit": "21"}, "limit: Ensure this value is less than or equal to 20."),
        ({"q": "red", "limit": "many"}, "limit: A valid integer is required."),
    ],
)
def test_suggest_api_bad_input_is_a_clear_400(client, db, params, message):
    response = client.get(reverse("api-suggest"), params)
    assert response.status_code == 400
    assert response.json()["error"] == message


@pytest.mark.parametrize("prefix", ["%", "_", "\\", "'; DROP TABLE x; --", "!!!", "🙂", "ｓｔｒｉ"])
def test_odd_prefixes_are_answered_not_failed(client, striped_shop, prefix):
    response = client.get(reverse("api-suggest"), {"q": prefix})
    assert response.status_code == 200
    found = [(s["text"], s["kind"], s["count"]) for s in response.json()["suggestions"]]
    assert found == (suggest("stri") if prefix == "ｓｔｒｉ" else [])  # full-width letters fold
