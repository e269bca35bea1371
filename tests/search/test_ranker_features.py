"""The learned ranker's features, logged when the page is built: one float4 row per product
shown, in FEATURES order, in the same row as the search."""

import math

import pytest

from search.features import FEATURES, popularity_forget
from search.models import SearchLog
from search.searchlog import search_event_record

pytestmark = pytest.mark.django_db


def feature_rows(search: SearchLog) -> list[dict]:
    width = len(FEATURES)
    return [
        dict(zip(FEATURES, search.features[i : i + width], strict=True))
        for i in range(0, len(search.features), width)
    ]


def test_a_text_search_logs_the_features_of_what_it_showed(client, catalog_shop, settings):
    settings.SEARCH_RANKER_POPULARITY_SECONDS = 0
    first = client.get("/api/search/", {"q": "red striped", "session": "s1"}).json()
    search = SearchLog.objects.get(pk=first["search_id"])
    rows = feature_rows(search)
    assert len(rows) == len(search.product_ids) > 1
    top = rows[0]
    expected = {"text_match": 1, "query_words": 2, "words_matched": 2, "words_share": 1}
    assert {name: top[name] for name in expected} == expected
    assert top["fused"] > 0
    assert top["photos"] >= 1
    assert top["popularity"] == 0
    assert {row["in_stock"] for row in rows} <= {0.0, 1.0}
    assert 0 <= top["price_position"] <= 1
    assert math.isnan(top["similarity"]) or -1 <= top["similarity"] <= 1

    # A click of the searching session makes the product popular in the next search.
    clicked = search.product_ids[0]
    search_event_record(search_id=search.pk, type="click", product_id=clicked, session="s1")
    popularity_forget()
    again = client.get("/api/search/", {"q": "red striped", "session": "s2"}).json()
    later = SearchLog.objects.get(pk=again["search_id"])
    popular = feature_rows(later)[later.product_ids.index(clicked)]["popularity"]
    assert popular > 0
