"""The learned ranker on simulated shoppers: it learns what the fused order cannot know
(shoppers skip what is out of stock and prefer what others chose), goes live through the
gates, is refused when clicks are random, and forged clicks from one client steer nothing."""

import random

import pytest
from django.core.management import call_command

from catalog.models import Product
from catalog.services import demo_catalog_load
from embeddings.spaces import space_active
from search.features import popularity_forget
from search.models import Ranker, SearchLog
from search.pipeline import product_search_by_text, rank, text_query_prepare
from search.ranker import ranker_forget, ranker_live, ranker_load, ranker_rollback
from search.retrieval import SearchFilters
from search.searchlog import search_event_record, search_logged
from search.simulation import ShopperBehaviour, shoppers_simulate

pytestmark = pytest.mark.django_db

PRODUCTS = 64
SEARCHES = 500
CHOOSY = ShopperBehaviour(out_of_stock_appeal=0.05, favourite_share=0.3, other_appeal=0.3)
RANDOM = ShopperBehaviour(click_relevant=0.3, click_other=0.3, cart=0.0)


@pytest.fixture
def shop(embed_on_commit, settings):
    settings.FINETUNE_VAL_FRACTION = 0.3
    settings.SEARCH_RANKER_POPULARITY_SECONDS = 0
    settings.SEARCH_RANKER_REFRESH_SECONDS = 0
    settings.SEARCH_RANKER_MIN_QUERIES = 5
    settings.SEARCH_INTERLEAVE_FRACTION = 0.0
    ranker_forget()
    popularity_forget()
    with embed_on_commit():
        demo_catalog_load(count=PRODUCTS, seed=0)
    # A third of the shop out of stock, whatever the fused order thinks of it.
    ids = sorted(Product.objects.values_list("pk", flat=True))
    Product.objects.filter(pk__in=random.Random(3).sample(ids, len(ids) // 3)).update(
        in_stock=False
    )
    yield space_active()
    ranker_forget()
    popularity_forget()


def order(query: str, ranker) -> list[int]:
    prepared = text_query_prepare(query=query, filters=SearchFilters())
    return [row.product_id for row in rank(prepared, space_active(), ranker=ranker) if row.relevant]


def test_choosy_shoppers_teach_a_ranker_that_goes_live(shop, capsys):
    shoppers_simulate(searches=SEARCHES, seed=1, behaviour=CHOOSY)
    call_command("train_ranker", name="choosy")
    out = capsys.readouterr().out
    ranker = Ranker.objects.get(name="choosy")
    ndcg = ranker.metrics["ndcg@10"]
    print(out, ndcg, ranker.metrics["held_out_queries"], ranker.metrics["trained_queries"])
    assert ranker.metrics["held_out_queries"] >= 5
    assert ndcg["candidate"] > ndcg["fusion"] + 0.05
    assert ranker.metrics["promotion"]["verdict"] == "promote"
    assert ranker.status == Ranker.Status.ACTIVE
    assert "decision: live" in out
    importance = ranker.metrics["importance"]
    assert max(importance, key=importance.get) in {"in_stock", "popularity"}

    # Served: the search re-ranks with it, in-stock products first among the matches.
    assert ranker_live().name == "choosy"
    page = product_search_by_text(query="backpack", limit=10)
    fused = product_search_by_text(query="backpack", limit=10, interleave=False)
    assert page.count == fused.count
    in_stock = [hit.product.in_stock for hit in page.results if not hit.related]
    assert in_stock == sorted(in_stock, reverse=True)

    # Rolled back: fusion again.
    assert ranker_rollback() is None
    assert ranker_live() is None


def test_random_clickers_teach_nothing_and_the_ranker_is_refused(shop, capsys):
    shoppers_simulate(searches=SEARCHES, seed=2, behaviour=RANDOM)
    call_command("train_ranker", name="random")
    ranker = Ranker.objects.get(name="random")
    print(capsys.readouterr().out)
    assert ranker.metrics["promotion"]["verdict"] == "refuse"
    assert ranker.status == Ranker.Status.CANDIDATE
    assert ranker_live() is None


def test_forged_clicks_from_one_client_do_not_change_the_order(shop, capsys):
    shoppers_simulate(searches=SEARCHES, seed=1, behaviour=CHOOSY)
    call_command("train_ranker", name="before", no_promote=True)
    before = ranker_load(Ranker.objects.get(name="before"))
    query = "backpack"
    ranked = order(query, before)
    target = ranked[-1]  # the ranker's last match: the forger wants it first
    page = product_search_by_text(query=query, limit=len(ranked) + 5, interleave=False)
    assert target in [hit.product.pk for hit in page.results]
    for i in range(500):
        logged = search_logged(
            page,
            kind=SearchLog.Kind.TEXT,
            channel=SearchLog.Channel.API,
            query=query,
            session=f"forger-{i}",
            client="203.0.113.9",
        )
        search_event_record(
            search_id=logged.search_id, type="click", product_id=target, session=f"forger-{i}"
        )
    popularity_forget()
    call_command("train_ranker", name="after", no_promote=True)
    after = ranker_load(Ranker.objects.get(name="after"))
    assert order(query, after) == ranked
