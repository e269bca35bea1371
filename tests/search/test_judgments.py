"""Judgments of a small hand-made log equal the values worked out by hand."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from search.engagement import impression_cells
from search.judgments import click_model_fit, judged_queries, judgments_compute
from search.models import SearchEvent, SearchLog
from search.searchlog import search_event_record, search_log_record

pytestmark = pytest.mark.django_db


def logged(query, product_ids, *, session="", client="", at=None):
    search_id = search_log_record(
        kind="text",
        channel="api",
        space=None,
        product_ids=[p.pk for p in product_ids],
        result_count=len(product_ids),
        query=query,
        session=session,
        client=client,
    )
    if at is not None:
        SearchLog.objects.filter(pk=search_id).update(created=at)
    return search_id


def event(search_id, type, product, session=""):
    search_event_record(search_id=search_id, type=type, product_id=product.pk, session=session)


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
    event(clicked, "click", a, "one")
    # Session 2: "knapsack", then "backpack" ten minutes later: too late to be a reformulation.
    logged("knapsack", [b], session="two", at=start)
    late = logged("backpack", [a, b], session="two", at=start + timedelta(minutes=10))
    event(late, "click", a, "two")
    # Session 3: "rucksack" with a click of its own is no reformulation either.
    own = logged("rucksack", [b], session="three", at=start)
    event(own, "click", b, "three")
    again = logged("backpack", [a], session="three", at=start + timedelta(seconds=30))
    event(again, "click", a, "three")

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


# --- whose evidence counts (issue #22) ------------------------------------------------------


def api_search(client, query, session, **filters):
    body = client.get(reverse("api-search"), {"q": query, "session": session, **filters}).json()
    return body["search_id"], [result["id"] for result in body["results"]]


def api_event(client, search_id, type, product_id, session):
    body = {"search_id": search_id, "type": type, "product_id": product_id, "session": session}
    return client.post(reverse("api-events"), body, content_type="application/json").status_code


def test_the_three_request_poisoning_makes_no_judgment(client, catalog_shop, settings):
    settings.SEARCH_SIMILARITY_FLOOR = -1.0  # every product matches: the dress is on the page
    dress = catalog_shop["DRS-201"]
    # The probe: "leather" twice under a shopper filter that shows only dresses, then a
    # purchase of the dress at the first search.
    first, shown = api_search(client, "leather", "attacker", category="clothing-dresses")
    api_search(client, "leather", "attacker", category="clothing-dresses")
    assert dress.pk in shown
    # From another session, or without a click on it in that search: refused.
    assert api_event(client, first, "purchase", dress.pk, "someone-else") == 400
    assert api_event(client, first, "purchase", dress.pk, "attacker") == 400
    # In its own session, after a click, the events are stored, but a search under a filter
    # is no evidence for the query's words: no judgment at all.
    assert api_event(client, first, "click", dress.pk, "attacker") == 201
    assert api_event(client, first, "purchase", dress.pk, "attacker") == 201
    assert "leather" not in judgments_compute()

    # The same purchase without the filter is a shopper's real choice: it counts, once.
    plain, shown = api_search(client, "leather", "shopper")
    assert dress.pk in shown
    assert api_event(client, plain, "click", dress.pk, "shopper") == 201
    assert api_event(client, plain, "purchase", dress.pk, "shopper") == 201
    judged = judgments_compute()["leather"]
    assert judged.searches == 1
    assert (judged.products[dress.pk].purchases, judged.products[dress.pk].grade) == (1, 3)


def test_one_client_weighs_at_most_the_cap(three, settings):
    a, b, c = three
    cap = settings.SEARCH_JUDGMENT_CLIENT_CAP
    # 500 forged clicks on the vase for "backpack", each in a session of its own, from one
    # address; one real shopper elsewhere clicks the backpack.
    for n in range(500):
        search_id = logged("backpack", [a, b, c], session=f"bot-{n}", client="203.0.113.9")
        event(search_id, "click", c, f"bot-{n}")
    real = logged("backpack", [a, b, c], session="real", client="198.51.100.4")
    event(real, "click", a, "real")
    judged = judgments_compute()["backpack"]
    assert judged.searches == cap + 1
    vase, backpack = judged.products[c.pk], judged.products[a.pk]
    assert (vase.impressions, vase.clicks) == (cap + 1, cap)
    assert (backpack.impressions, backpack.clicks) == (cap + 1, 1)


def test_a_session_counts_once_clicked_or_not(three, settings):
    a, b, c = three
    # 120 searches in a minute would make the session a robot, left out whole (below).
    settings.SEARCH_ROBOT_SEARCHES_PER_MINUTE = 0
    # 120 searches without a click from one session cannot strip the backpack of its clicks.
    for _ in range(120):
        logged("backpack", [a, b, c], session="skipper")
    for n in range(3):
        search_id = logged("backpack", [a, b, c], session=f"shopper-{n}")
        event(search_id, "click", a, f"shopper-{n}")
        event(search_id, "click", a, f"shopper-{n}")  # sent twice: stored once
    judged = judgments_compute()["backpack"]
    assert judged.searches == 4
    assert (judged.products[a.pk].impressions, judged.products[a.pk].clicks) == (4, 3)
    assert judged.products[a.pk].grade == 2


def test_a_purchase_without_a_click_in_its_search_counts_for_nothing(three):
    a, b, _ = three
    # Rows written before events were checked (or by hand): the judgments check again.
    search_id = logged("backpack", [a, b])
    SearchEvent.objects.create(search_id=search_id, type="purchase", product_id=b.pk, position=2)
    judged = judgments_compute()["backpack"]
    assert (judged.products[b.pk].purchases, judged.products[b.pk].grade) == (0, 0)


def test_sessions_that_behave_like_robots_give_no_judgments(three, settings):
    a, b, c = three
    settings.SEARCH_JUDGMENT_MIN_SEARCHES = 1
    an_hour_ago = timezone.now() - timedelta(hours=1)

    def shopper(session, query, clicked, *, at, dwell=timedelta(seconds=20)):
        search_id = logged(query, [a, b, c], session=session, at=at)
        event(search_id, "click", clicked, session)
        SearchEvent.objects.filter(search_id=search_id).update(created=at + dwell)

    # A real shopper: one search, a click 20 s later.
    shopper("real", "backpack", a, at=an_hour_ago)
    # Too fast: 40 searches within a minute.
    for n in range(40):
        logged("backpack", [a, b, c], session="rate", at=an_hour_ago + timedelta(seconds=n))
    # No dwell: three clicks each within a second of their search.
    for n in range(3):
        shopper("fast", f"bag {n}", c, at=an_hour_ago + timedelta(minutes=n), dwell=timedelta())
    # One click pattern stamped on five queries: the vase for every bag query.
    for n in range(5):
        shopper("stamp", f"tote {n}", c, at=an_hour_ago + timedelta(minutes=n))

    judgments = judgments_compute()
    assert judgments["backpack"].searches == 1  # the rate robot's 40 searches are not there
    assert judgments["backpack"].products[a.pk].clicks == 1
    assert not any(q.startswith(("bag ", "tote ")) for q in judgments)

    # Each rule has its threshold; 0 turns it off, and the robots' evidence is back.
    settings.SEARCH_ROBOT_SEARCHES_PER_MINUTE = 0
    settings.SEARCH_ROBOT_FAST_CLICKS = 0
    settings.SEARCH_ROBOT_SAME_CLICK_QUERIES = 0
    judgments = judgments_compute()
    assert judgments["backpack"].searches == 2
    assert judgments["bag 0"].products[c.pk].clicks == 1
    assert judgments["tote 4"].products[c.pk].clicks == 1


def test_the_fine_tune_report_shows_what_was_left_out_and_why(three, settings, admin_client):
    from embeddings.spaces import space_ensure_default
    from search.engagement import judgments_discarded
    from search.judgments import judgments_since

    a, b, c = three
    settings.SEARCH_JUDGMENT_CLIENT_CAP = 1
    an_hour_ago = timezone.now() - timedelta(hours=1)
    # A search under a shopper filter, with a click.
    filtered = logged("backpack", [a, b], session="filtering")
    SearchLog.objects.filter(pk=filtered).update(filters={"category": "home-mugs"})
    event(filtered, "click", b, "filtering")
    # A robot: 40 searches in a minute.
    for n in range(40):
        logged("mug", [b], session="robot", at=an_hour_ago + timedelta(seconds=n))
    # Three sessions from one address: two over the cap of one.
    for n in range(3):
        logged("vase", [c], session=f"same-address-{n}", client="203.0.113.9")

    space = space_ensure_default()
    space.metrics = {
        "after": {"mean_recall": 0.5},
        "gates": [],
        "extra_pairs": {
            "shopper queries": {
                "train_pairs": 0,
                "discarded": judgments_discarded(since=judgments_since()),
            }
        },
    }
    space.save()
    page = admin_client.get(reverse("admin:embeddings_embeddingspace_change", args=[space.pk]))
    html = page.content.decode()
    assert "Left out of shopper queries" in html
    for row in (
        "<tr><th>shopper filters</th><td>1</td><td>1</td><td>1</td><td>-</td></tr>",
        "<tr><th>robot sessions</th><td>1</td><td>40</td><td>0</td><td>-</td></tr>",
        "<tr><th>capped by client</th><td>2</td><td>-</td><td>-</td><td>2</td></tr>",
    ):
        assert row in html


def test_the_gate_measures_only_queries_many_clients_agree_on(three, settings):
    from search.judgments import gate_queries, query_is_held_out

    a, _, _ = three
    settings.SEARCH_JUDGMENT_MIN_SEARCHES = 1
    settings.SEARCH_GATE_MIN_CLIENTS = 3
    held_out = [q for q in (f"bag {n}" for n in range(200)) if query_is_held_out(q)][:2]
    few, many = held_out
    for query, clients in ((few, 1), (many, 3)):
        for n in range(clients):
            search_id = logged(query, [a], session=f"{query}-{n}", client=f"10.0.0.{n}")
            event(search_id, "click", a, f"{query}-{n}")
    # Five sessions from one address are still one client: "few" has two.
    for n in range(5):
        search_id = logged(few, [a], session=f"one-address-{n}", client="203.0.113.9")
        event(search_id, "click", a, f"one-address-{n}")
    judged = judged_queries(judgments_compute())
    assert (judged[few].clients, judged[many].clients) == (2, 3)
    assert set(gate_queries(judged)) == {many}
    settings.SEARCH_GATE_MIN_CLIENTS = 2
    assert set(gate_queries(judged)) == {few, many}
