"""The learned ranker on simulated shoppers: it learns what the fused order cannot know
(shoppers skip what is out of stock and prefer what others chose), goes live through the
gates, is refused when clicks are random, and forged clicks from one client steer nothing."""

import random
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from catalog.demo_catalog import CATEGORIES
from catalog.models import Product
from catalog.services import demo_catalog_load
from embeddings.spaces import space_active
from search.features import popularity_forget
from search.filters import SearchFilters
from search.interleaving import (
    TEAM_CANDIDATE,
    TEAM_CONTROL,
    interleaving_check,
)
from search.models import InterleavingTest, Ranker, SearchEvent, SearchLog
from search.pipeline import product_search_by_text, rank, text_query_prepare
from search.ranker import ranker_forget, ranker_live, ranker_load, ranker_rollback
from search.searchlog import client_key, session_key
from search.simulation import ShopperBehaviour, shoppers_simulate

pytestmark = pytest.mark.django_db

PRODUCTS = 96
SEARCHES = 500
# Then shoppers see the candidate's and fusion's orders merged, this many searches between
# two of the beat's checks, for at most this many checks.
INTERLEAVED, CHECKS = 100, 5
CHOOSY = ShopperBehaviour(
    colour=0.3, out_of_stock_appeal=0.0, favourite_share=0.3, other_appeal=0.3
)
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
    # Listed over the last three months, as a shop's catalog is. All listed in the same
    # second, the products' ages (a feature) would differ by the seconds loading took and
    # grow while the test runs: a ranker that split on them would order the interleaved
    # searches differently from one run, and one machine's load, to the next.
    listed = random.Random(4)
    products = list(Product.objects.order_by("pk"))
    for product in products:
        product.created = timezone.now() - timedelta(days=listed.uniform(0, 90))
    Product.objects.bulk_update(products, ["created"])
    yield space_active()
    ranker_forget()
    popularity_forget()


def order(query: str, ranker) -> list[int]:
    prepared = text_query_prepare(query=query, filters=SearchFilters())
    return [row.product_id for row in rank(prepared, space_active(), ranker=ranker) if row.relevant]


def test_choosy_shoppers_teach_a_ranker_that_goes_live_and_forgers_do_not(
    shop, capsys, admin_client, settings
):
    shoppers_simulate(searches=SEARCHES, seed=1, behaviour=CHOOSY)
    settings.SEARCH_INTERLEAVE_FRACTION = 1.0
    settings.SEARCH_INTERLEAVE_AUTO_PROMOTE = True
    settings.SEARCH_INTERLEAVE_MIN_SEARCHES = 30  # sessions with clicks; a shop's: 200
    call_command("train_ranker", name="choosy")
    out = capsys.readouterr().out
    ranker = Ranker.objects.get(name="choosy")
    ndcg = ranker.metrics["ndcg@10"]
    assert ranker.metrics["held_out_queries"] >= 5
    assert ndcg["candidate"] > ndcg["fusion"] + 0.03, out  # measured: 0.793 -> 0.905
    # Passed offline: held for an interleaving test against fusion.
    assert ranker.metrics["promotion"]["verdict"] == "hold"
    assert "the interleaving test started" in out
    test = InterleavingTest.objects.get(candidate_ranker=ranker)
    assert ranker_live() is None
    # Other shoppers (another seed, the same shop) now see its order and fusion's merged,
    # each click credited to one of them; the beat checks the tally between rounds and, once
    # the ranker's win is significant, promotes it: the normal path, nobody decides by hand.
    for check in range(CHECKS):
        shoppers_simulate(searches=INTERLEAVED, seed=3 + check, behaviour=CHOOSY)
        tally = interleaving_check()
        test.refresh_from_db()
        if test.status != InterleavingTest.Status.RUNNING:
            break
    assert tally.searches == INTERLEAVED * (check + 1)
    merged = SearchLog.objects.filter(interleaved_with=shop).values_list("teams", flat=True)
    assert {TEAM_CONTROL, TEAM_CANDIDATE} <= {team for teams in merged for team in teams}
    # measured: promoted after 100 searches (22 sessions won to 9, p = 0.03) or 200 (42 to
    # 13, p = 0.0001): the traffic still differs a little between runs; 150 gave 27-15 to 38-12
    assert tally.candidate_wins > tally.control_wins, str(tally)
    assert tally.p_value < 0.05, str(tally)
    assert test.status == InterleavingTest.Status.PROMOTED, test.decision
    ranker.refresh_from_db()
    assert ranker.status == Ranker.Status.ACTIVE
    settings.SEARCH_INTERLEAVE_FRACTION = 0.0
    importance = ranker.metrics["importance"]
    assert max(importance, key=importance.get) in {"in_stock", "popularity"}

    # Its admin page: the gain over fusion, what it learned, the shared decision.
    admin_page = admin_client.get(reverse("admin:search_ranker_change", args=[ranker.pk]))
    text = admin_page.content.decode()
    assert "Held-out nDCG@10" in text
    assert "feature importance" in text
    assert "Promotion: hold" in text  # what training decided; interleaving promoted it
    assert f"{tally.searches} searches" in text  # its interleaving tally

    # Served: the search re-ranks with it; out-of-stock matches move down the pages.
    assert ranker_live().name == "choosy"
    out_of_stock = set(Product.objects.filter(in_stock=False).values_list("pk", flat=True))

    def out_of_stock_places(ranker) -> int:
        return sum(
            place
            for category in CATEGORIES.values()
            for place, pid in enumerate(order(category.name.lower(), ranker))
            if pid in out_of_stock
        )

    assert out_of_stock_places(ranker_live()) > out_of_stock_places(None)
    query = "backpack"
    page = product_search_by_text(query=query, limit=30, interleave=False)
    ranked = order(query, ranker_live())
    assert len(ranked) > 3
    assert [hit.product.pk for hit in page.results if not hit.related] == ranked
    assert page.count == len(ranked)  # re-ranking changes the order, not the count

    # 500 clicks on a ranker's last match, from one client in 500 sessions (each session
    # searched, then clicked what it was shown: events the API accepts), and a ranker
    # trained on the same log without them, then with them.
    call_command("train_ranker", name="unforged", no_promote=True)
    ranked = order(query, ranker_load(Ranker.objects.get(name="unforged")))
    target = ranked[-1]
    logged = SearchLog.objects.filter(query=query, product_ids__contains=[target]).latest("created")
    forged = SearchLog.objects.bulk_create(
        SearchLog(
            kind=logged.kind,
            channel=logged.channel,
            query=query,
            space=logged.space,
            product_ids=logged.product_ids,
            result_count=logged.result_count,
            session=session_key(f"forger-{i}"),
            client=client_key("203.0.113.9"),
            features=logged.features,
        )
        for i in range(500)
    )
    SearchEvent.objects.bulk_create(
        SearchEvent(
            search=search,
            type="click",
            product_id=target,
            position=logged.product_ids.index(target) + 1,
        )
        for search in forged
    )
    popularity_forget()
    call_command("train_ranker", name="forged", no_promote=True)
    assert order(query, ranker_load(Ranker.objects.get(name="forged"))) == ranked

    # Rolled back: fusion again.
    assert ranker_rollback() is None
    assert ranker_live() is None


def test_random_clickers_teach_nothing_and_the_ranker_is_refused(shop, capsys):
    shoppers_simulate(searches=SEARCHES, seed=2, behaviour=RANDOM)
    call_command("train_ranker", name="random")
    ranker = Ranker.objects.get(name="random")
    out = capsys.readouterr().out
    assert ranker.metrics["promotion"]["verdict"] == "refuse", out
    assert "refused: the held-out nDCG@10 gate failed" in out
    assert ranker.status == Ranker.Status.CANDIDATE
    assert ranker_live() is None
