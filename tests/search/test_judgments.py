"""Judgments of a small hand-made log equal the values worked out by hand."""

from datetime import timedelta

import pytest
from django.utils import timezone

from search.judgments import click_model_fit, impression_cells, judged_queries, judgments_compute
from search.models import SearchLog
from search.searchlog import search_event_record, search_log_record

pytestmark = pytest.mark.django_db


def logged(query, product_ids, *, session="", at=None):
    search_id = search_log_record(
        kind="text",
        channel="api",
        space=None,
        product_ids=[p.pk for p in product_ids],
        result_count=len(product_ids),
        query=query,
        session=session,
    )
    if at is not None:
        SearchLog.objects.filter(pk=search_id).update(created=at)
    return search_id


def event(search_id, type, product):
    search_event_record(search_id=search_id, type=type, product_id=product.pk)


@pytest.fixture
def three(make_product):
    return [make_product(title=t) for t in ("Navy canvas backpack", "Red mug", "Blue vase")]


def test_click_model_and_grades_of_a_hand_made_log(three):
    a, b, c = three
    # 20 searches show [a, b, c] and 20 show [b, a, c]. Clicks: a 16 of 20 at position 1 and
    # 8 of 20 at position 2; b 6 of 20 at 1 and 3 of 20 at 2; c never. By hand: these rates
    # are exactly theta * gamma with theta_1 = 1, theta_2 = 0.5, gamma_a = 0.8,
    # gamma_b = 0.3, gamma_c = 0, so that is the maximum-likelihood fit.
    for i in range(20):
        first = logged("backpack", [a, b, c])
        if i < 16:
            event(first, "click", a)
        if i < 3:
            event(first, "click", b)
        second = logged("backpack", [b, a, c])
        if i < 6:
            event(second, "click", b)
        if i < 8:
            event(second, "click", a)
        if i == 0:  # one shopper bought a, another put b in the cart
            event(first, "add_to_cart", a)
            event(first, "purchase", a)
            event(second, "add_to_cart", b)

    judgments = judgments_compute()["backpack"]
    assert judgments.searches == 40
    ja, jb, jc = (judgments.products[p.pk] for p in (a, b, c))
    assert (ja.impressions, ja.clicks, ja.carts, ja.purchases) == (40, 24, 1, 1)
    assert (jb.impressions, jb.clicks, jb.carts, jb.purchases) == (40, 9, 1, 0)
    assert (jc.impressions, jc.clicks) == (40, 0)
    assert ja.attractiveness == pytest.approx(0.8, abs=2e-3)
    assert jb.attractiveness == pytest.approx(0.3, abs=2e-3)
    assert jc.attractiveness == pytest.approx(0.0, abs=2e-3)
    # Purchased: 3; in a cart: 2; never clicked though seen 40 times: 0.
    assert (ja.grade, jb.grade, jc.grade) == (3, 2, 0)
    assert (ja.weight, jb.weight) == (3.0, 2.0)

    # The raw click-through rates (0.6 and 0.225) would have under-rated both: position 2 is
    # looked at half as often. The examination curve is the one worked out above.
    model = click_model_fit(impression_cells(since=timezone.now() - timedelta(days=1)))
    assert model.examination[1] == pytest.approx(1.0)
    assert model.examination[2] == pytest.approx(0.5, abs=2e-3)


def test_reformulations_link_the_first_query_within_the_window(three):
    a, b, _ = three
    start = timezone.now() - timedelta(hours=1)
    # Session 1: "rucksack" shows b, no click; a minute later "backpack", a clicked.
    logged("rucksack", [b], session="one", at=start)
    clicked = logged("backpack", [a, b], session="one", at=start + timedelta(minutes=1))
    event(clicked, "click", a)
    # Session 2: "knapsack", then "backpack" ten minutes later: too late to be a reformulation.
    logged("knapsack", [b], session="two", at=start)
    late = logged("backpack", [a, b], session="two", at=start + timedelta(minutes=10))
    event(late, "click", a)
    # Session 3: "rucksack" with a click of its own is no reformulation either.
    own = logged("rucksack", [b], session="three", at=start)
    event(own, "click", b)
    again = logged("backpack", [a], session="three", at=start + timedelta(seconds=30))
    event(again, "click", a)

    judgments = judgments_compute()
    rucksack = judgments["rucksack"]
    assert rucksack.products[a.pk].reformulation_clicks == 1
    assert rucksack.products[a.pk].impressions == 0
    assert rucksack.products[a.pk].grade == 1
    assert rucksack.products[a.pk].weight == 0.5  # weaker than a click
    assert a.pk not in judgments["knapsack"].products
    assert judgments["rucksack"].searches == 2
    # "knapsack" has no relevant product and one search: not enough to evaluate on.
    assert "knapsack" not in judged_queries(judgments, min_searches=1)
    assert "rucksack" in judged_queries(judgments)
