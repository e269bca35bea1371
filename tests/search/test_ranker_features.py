"""The learned ranker's features, logged when the page is built (one float4 row per product
shown, in FEATURES order, in the same row as the search), and the live ranker serving them:
matches reordered, the count, the SKU match and a broken ranker's fallback to fusion."""

import math

import pytest

from search.features import FEATURES, popularity_forget
from search.models import Ranker, SearchLog
from search.pipeline import product_search_by_text
from search.ranker import ranker_activate, ranker_forget
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

    # Clicks of searching sessions make the product popular, from the third client on.
    clicked = search.product_ids[0]

    def popularity_after(session: str, address: str) -> float:
        body = client.get(
            "/api/search/", {"q": "red striped", "session": session}, REMOTE_ADDR=address
        ).json()
        later = SearchLog.objects.get(pk=body["search_id"])
        search_event_record(search_id=later.pk, type="click", product_id=clicked, session=session)
        popularity_forget()
        return feature_rows(later)[later.product_ids.index(clicked)]["popularity"]

    # One client in many sessions counts once.
    assert [popularity_after(f"s{i}", "192.0.2.1") for i in range(3)] == [0, 0, 0]
    assert popularity_after("s3", "192.0.2.2") == 0
    assert popularity_after("s4", "192.0.2.3") == 0  # its own click counts from the next
    # Three clients: 3 a day over its first week (SMOOTHING_DAYS), for a product listed now.
    assert popularity_after("s5", "192.0.2.4") == pytest.approx(3 / 7, rel=1e-3)


@pytest.fixture
def live_ranker(settings):
    """A live ranker that prefers what is cheapest (trained on made-up examples: price
    alone decides), read at every search."""
    import lightgbm
    import numpy as np

    from search.ranker_training import PARAMS

    settings.SEARCH_RANKER_REFRESH_SECONDS = 0
    rng = np.random.default_rng(0)
    features = rng.uniform(0, 100, (400, len(FEATURES))).astype(np.float32)
    price = features[:, FEATURES.index("price")]
    labels = np.clip(9 - price // 10, 0, 9).astype(int)  # a grade per 10 of price
    booster = lightgbm.train(
        {**PARAMS, "min_data_in_leaf": 5},
        lightgbm.Dataset(features, label=labels, group=[20] * 20, feature_name=list(FEATURES)),
        num_boost_round=60,
    )
    ranker = Ranker.objects.create(
        name="cheapest", model_text=booster.model_to_string(), features=list(FEATURES)
    )
    ranker_forget()
    yield ranker_activate(ranker=ranker)
    ranker_forget()


def shown(page) -> list[int]:
    return [hit.product.pk for hit in page.results if not hit.related]


def test_the_live_ranker_reorders_matches_and_leaves_the_rest(catalog_shop, live_ranker, settings):
    ranked = product_search_by_text(query="t-shirt dress shoes", limit=20)
    prices = [hit.product.price for hit in ranked.results if not hit.related]
    assert prices == sorted(prices)  # the cheapest first, as it learned
    settings.SEARCH_RANKER_ENABLED = False
    fused = product_search_by_text(query="t-shirt dress shoes", limit=20)
    assert (ranked.count, sorted(shown(ranked))) == (fused.count, sorted(shown(fused)))
    settings.SEARCH_RANKER_ENABLED = True
    # An exact SKU match stays first and alone a match.
    sku = product_search_by_text(query="SHO-301", limit=20)
    assert [hit.product.sku for hit in sku.results if not hit.related] == ["SHO-301"]


def test_a_broken_ranker_leaves_fusion_and_says_so(catalog_shop, live_ranker, settings, caplog):
    settings.SEARCH_RANKER_ENABLED = False
    fused = shown(product_search_by_text(query="t-shirt dress shoes", limit=20))
    settings.SEARCH_RANKER_ENABLED = True
    Ranker.objects.filter(pk=live_ranker.pk).update(model_text="not a model")
    with caplog.at_level("ERROR", logger="search.ranker"):
        assert shown(product_search_by_text(query="t-shirt dress shoes", limit=20)) == fused
    assert "learned ranker not used, fusion ranks" in caplog.text
