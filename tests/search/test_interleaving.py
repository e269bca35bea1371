"""Team-draft interleaving of a held candidate space with the active one: the merge credits
the right space, pages are stable, the sign test decides, a clear win promotes."""

import random

import pytest
from django.db import IntegrityError, transaction
from django.urls import reverse

from catalog.models import Product
from embeddings.encoder import ModelSpec
from embeddings.finetuning import finetune_run_execute
from embeddings.models import EmbeddingSpace, FinetuneRun, ImageEmbedding
from embeddings.spaces import space_active, space_create
from embeddings.training import is_validation_key
from embeddings.vectors import space_is_filled, space_prepare
from search.filters import SearchFilters
from search.interleaving import (
    TEAM_CANDIDATE,
    TEAM_CONTROL,
    TEAM_NONE,
    InterleavingError,
    digest_share,
    interleaving_check,
    interleaving_tally,
    interleaving_test_stop,
    search_digest,
    sign_test,
    team_draft,
)
from search.models import InterleavingTest, MerchandisingRule, RuleProduct, SearchLog
from search.pipeline import product_search_by_text, rank, rule_preview, text_query_prepare
from search.rules import merchandising_rule_save, rule_products_save
from search.searchlog import search_event_record, search_log_record
from search.services import interleaving_test_start
from tests.builders import jpeg_bytes

pytestmark = pytest.mark.django_db

QUERY = "item"


@pytest.fixture
def shop(make_product, embed_on_commit, settings):
    settings.SEARCH_SIMILARITY_FLOOR = -1.0  # every product is relevant in both spaces
    settings.SEARCH_INTERLEAVE_FRACTION = 1.0
    with embed_on_commit():
        for i in range(12):
            make_product(title=f"Item {i}", images=[jpeg_bytes(seed=i)])
    return space_active()


@pytest.fixture
def test_run(shop):
    """A candidate (another seed of the tiny model: a different ranking) under test."""
    candidate = space_create(
        name="candidate", spec=ModelSpec("shop-tiny", seed=5), build_indexes=False
    )
    space_prepare(space=candidate)
    # As fine-tuning records it for a candidate it holds for the test.
    EmbeddingSpace.objects.filter(pk=candidate.pk).update(metrics={"passed_offline_gates": True})
    return interleaving_test_start(candidate=candidate, prepared=True)


def ranking(space: EmbeddingSpace, query: str = QUERY) -> list[int]:
    """The relevant products of `space` for the query, best first, as search ranks them."""
    prepared = text_query_prepare(query=query, filters=SearchFilters())
    return [row.product_id for row in rank(prepared, space) if row.relevant]


def shown(page) -> list[int]:
    return [hit.product.pk for hit in page.results]


def log(page, *, session: str, offset: int = 0) -> SearchLog:
    search_id = search_log_record(
        kind="text",
        channel="api",
        space=page.space,
        product_ids=shown(page),
        result_count=page.count,
        query=QUERY,
        offset=offset,
        session=session,
        interleaved_with=page.interleaved_with,
        teams=page.teams,
    )
    return SearchLog.objects.get(pk=search_id)


# --- the merge ----------------------------------------------------------------------------


def test_team_draft_follows_the_paper():
    merged = team_draft([1, 2, 3, 4], [3, 1, 5, 6], random.Random(0))
    ids = [pid for pid, _ in merged]
    assert sorted(ids) == [1, 2, 3, 4, 5, 6]  # the union, once each
    rankings = {TEAM_CONTROL: [1, 2, 3, 4], TEAM_CANDIDATE: [3, 1, 5, 6]}
    picks = {TEAM_CONTROL: 0, TEAM_CANDIDATE: 0}
    for position, (product_id, team) in enumerate(merged):
        # Each pick is its team's best product not shown yet...
        earlier = {pid for pid, _ in merged[:position]}
        assert product_id == next(p for p in rankings[team] if p not in earlier)
        # ...and a team picks only when it has no more picks than the other.
        assert picks[team] <= picks[1 - team]
        picks[team] += 1


def test_team_draft_continues_with_the_longer_ranking():
    merged = team_draft([1], [2, 3, 4], random.Random(1))
    assert [pid for pid, _ in merged][-2:] == [3, 4]
    assert dict(merged) == {1: TEAM_CONTROL, 2: TEAM_CANDIDATE, 3: 1, 4: 1}


def test_interleaved_search_credits_the_space_that_contributed_each_product(test_run, shop):
    page = product_search_by_text(query=QUERY, limit=50, session="s1")
    assert page.space == shop
    assert page.interleaved_with == test_run.candidate
    assert len(page.teams) == len(page.results) == 12
    control, candidate = ranking(shop), ranking(test_run.candidate)
    assert control != candidate  # two spaces, two orders: the test has something to tell
    rankings = {TEAM_CONTROL: control, TEAM_CANDIDATE: candidate}
    ids = shown(page)
    for position, (product_id, team) in enumerate(zip(ids, page.teams, strict=True)):
        assert team in (TEAM_CONTROL, TEAM_CANDIDATE)
        assert product_id == next(p for p in rankings[team] if p not in ids[:position])
    # A click on a product the candidate contributed credits the candidate.
    row = log(page, session="s1")
    pick = ids[page.teams.index(TEAM_CANDIDATE)]
    search_event_record(search_id=row.pk, type="click", product_id=pick, session="s1")
    tally = interleaving_tally(test=test_run)
    assert (tally.searches, tally.candidate_wins, tally.control_wins, tally.ties) == (1, 1, 0, 0)
    # One more on an active-space product makes it a tie.
    pick = ids[page.teams.index(TEAM_CONTROL)]
    search_event_record(search_id=row.pk, type="click", product_id=pick, session="s1")
    tally = interleaving_tally(test=test_run)
    assert (tally.candidate_wins, tally.control_wins, tally.ties) == (0, 0, 1)


def test_a_pinned_product_keeps_its_place_and_credits_nobody(test_run, shop):
    ids = shown(product_search_by_text(query=QUERY, limit=50, session="s1"))
    rule = merchandising_rule_save(rule=MerchandisingRule(name="pin", query=QUERY))
    last = Product.objects.get(pk=ids[-1])
    rule_products_save(rule_products=[RuleProduct(rule=rule, product=last, position=1)])
    page = product_search_by_text(query=QUERY, limit=50, session="s1")
    assert shown(page)[0] == ids[-1]
    assert page.teams[0] == TEAM_NONE
    assert sorted(shown(page)) == sorted(ids)
    # The admin's rule preview shows the active space alone.
    preview = rule_preview(rule=rule, query=QUERY)
    assert preview.with_rule.interleaved_with is None
    assert preview.without_rule.teams == ()


def test_pages_continue_the_same_merged_list(test_run):
    whole = product_search_by_text(query=QUERY, limit=50, session="s2")
    again = product_search_by_text(query=QUERY, limit=50, session="s2")
    assert shown(again) == shown(whole)
    assert again.teams == whole.teams
    pages = [
        product_search_by_text(query=QUERY, limit=5, offset=offset, session="s2")
        for offset in (0, 5, 10)
    ]
    assert [pid for page in pages for pid in shown(page)] == shown(whole)
    assert tuple(team for page in pages for team in page.teams) == whole.teams
    assert all(page.interleaved_with == test_run.candidate for page in pages)


def test_the_fraction_selects_that_share_of_searches_deterministically(test_run, settings):
    shares = [
        digest_share(
            search_digest(
                test_id=1, session=f"s{i}", query=QUERY, filters=SearchFilters(), sort="relevance"
            )
        )
        for i in range(4000)
    ]
    assert 0.27 < sum(share < 0.3 for share in shares) / len(shares) < 0.33
    settings.SEARCH_INTERLEAVE_FRACTION = 0.5
    chosen = [
        product_search_by_text(query=QUERY, limit=3, session=f"s{i}").interleaved_with is not None
        for i in range(24)
    ]
    assert 4 < sum(chosen) < 20
    again = [
        product_search_by_text(query=QUERY, limit=3, session=f"s{i}").interleaved_with is not None
        for i in range(24)
    ]
    assert again == chosen
    # Other sort orders are never interleaved; off means off.
    assert product_search_by_text(query=QUERY, limit=3, session="s1", sort="price_asc").teams == ()
    settings.SEARCH_INTERLEAVE_FRACTION = 0.0
    assert not any(
        product_search_by_text(query=QUERY, limit=3, session=f"s{i}").teams for i in range(10)
    )


# --- the tally and promotion ---------------------------------------------------------------


def test_sign_test_matches_the_binomial_by_hand():
    assert sign_test(9, 1) == 22 / 1024  # 2 * (C(10,0) + C(10,1)) / 2**10
    assert sign_test(1, 9) == 22 / 1024
    assert sign_test(12, 2) == 2 * (1 + 14 + 91) / 2**14
    assert sign_test(5, 5) == 1.0
    assert sign_test(0, 0) == 1.0


def clicked_searches(test_run, sessions, team):
    """One interleaved search per session, its first product from `team` clicked."""
    for session in sessions:
        page = product_search_by_text(query=QUERY, limit=10, session=session)
        row = log(page, session=session)
        product_id = row.product_ids[list(row.teams).index(team)]
        search_event_record(search_id=row.pk, type="click", product_id=product_id, session=session)


def test_a_clear_win_promotes_the_candidate(
    test_run, shop, settings, django_capture_on_commit_callbacks
):
    settings.SEARCH_INTERLEAVE_AUTO_PROMOTE = True
    settings.SEARCH_INTERLEAVE_MIN_SEARCHES = 9
    clicked_searches(test_run, [f"w{i}" for i in range(8)], TEAM_CANDIDATE)
    tally = interleaving_check()
    assert (tally.decided, tally.candidate_wins) == (8, 8)
    assert tally.p_value < 0.05  # but fewer than the minimum: the test goes on
    assert space_active() == shop
    clicked_searches(test_run, ["w8", "w9"], TEAM_CANDIDATE)
    with django_capture_on_commit_callbacks(execute=True):
        tally = interleaving_check()
    assert tally.p_value == 2 / 2**10
    assert space_active() == test_run.candidate
    test_run.refresh_from_db()
    assert test_run.status == InterleavingTest.Status.PROMOTED
    assert test_run.result["candidate_wins"] == 10
    assert "promoted: the candidate won" in test_run.decision
    # Searches answer from the new active space alone now.
    assert product_search_by_text(query=QUERY, limit=5, session="w1").teams == ()


def test_a_session_is_credited_once_however_often_it_searches(test_run):
    # One client repeating the search and clicking the candidate's product each time.
    for _ in range(10):
        clicked_searches(test_run, ["steerer"], TEAM_CANDIDATE)
    clicked_searches(test_run, ["shopper"], TEAM_CONTROL)
    tally = interleaving_tally(test=test_run)
    assert (tally.searches, tally.decided) == (11, 2)
    assert (tally.candidate_wins, tally.control_wins) == (1, 1)


def test_a_win_promotes_only_a_candidate_that_passed_the_offline_gates(
    test_run, shop, settings, django_capture_on_commit_callbacks
):
    # A candidate started by hand whose fine-tune failed a gate (the probe's: nDCG fell).
    EmbeddingSpace.objects.filter(pk=test_run.candidate_id).update(
        metrics={"passed_offline_gates": False, "decided_by": "query nDCG"}
    )
    settings.SEARCH_INTERLEAVE_AUTO_PROMOTE = True
    settings.SEARCH_INTERLEAVE_MIN_SEARCHES = 9
    clicked_searches(test_run, [f"w{i}" for i in range(10)], TEAM_CANDIDATE)
    with django_capture_on_commit_callbacks(execute=True):
        tally = interleaving_check()
    assert (tally.candidate_wins, tally.p_value) == (10, 2 / 2**10)
    assert space_active() == shop  # staff decide
    test_run.refresh_from_db()
    assert test_run.status == InterleavingTest.Status.RUNNING


def test_an_interleaved_response_does_not_tell_the_teams_apart(test_run, client):
    body = client.get(reverse("api-search"), {"q": QUERY, "limit": 6, "session": "probe"}).json()
    teams = SearchLog.objects.get(pk=body["search_id"]).teams
    assert {TEAM_CONTROL, TEAM_CANDIDATE} <= set(teams)
    # The same fields, in the same form, whichever space placed a result: the merged rank's
    # score and no similarity (each space's own would say which placed it).
    assert [hit["similarity"] for hit in body["results"]] == [None] * 6
    assert [hit["score"] for hit in body["results"]] == [1 / n for n in range(1, 7)]
    assert len({tuple(sorted(hit)) for hit in body["results"]}) == 1
    page_2 = client.get(
        reverse("api-search"), {"q": QUERY, "limit": 6, "offset": 6, "session": "probe"}
    ).json()
    assert [hit["score"] for hit in page_2["results"]] == [1 / n for n in range(7, 13)]
    # A page that is not interleaved keeps the active space's scores.
    plain = client.get(reverse("api-search"), {"q": QUERY, "sort": "price_asc"}).json()
    assert any(hit["similarity"] is not None for hit in plain["results"])


def test_a_clear_loss_stops_the_test_and_keeps_the_active_space(test_run, shop, settings):
    settings.SEARCH_INTERLEAVE_AUTO_PROMOTE = True
    settings.SEARCH_INTERLEAVE_MIN_SEARCHES = 6
    clicked_searches(test_run, [f"l{i}" for i in range(5)], TEAM_CONTROL)
    clicked_searches(test_run, ["l5"], TEAM_CANDIDATE)
    clicked_searches(test_run, [f"l{i}" for i in range(6, 9)], TEAM_CONTROL)
    tally = interleaving_check()
    assert (tally.control_wins, tally.candidate_wins) == (8, 1)
    assert tally.p_value == sign_test(8, 1) < 0.05
    test_run.refresh_from_db()
    assert test_run.status == InterleavingTest.Status.STOPPED
    assert space_active() == shop
    test_run.candidate.refresh_from_db()
    assert test_run.candidate.status == EmbeddingSpace.Status.CANDIDATE
    assert product_search_by_text(query=QUERY, limit=5, session="l1").teams == ()


def test_one_test_at_a_time(test_run):
    other = space_create(name="other", spec=ModelSpec("shop-tiny", seed=6), build_indexes=False)
    with pytest.raises(InterleavingError, match="one test at a time"):
        interleaving_test_start(candidate=other)
    # The database holds to it too, whatever starts a test.
    with pytest.raises(IntegrityError), transaction.atomic():
        InterleavingTest.objects.create(candidate=other, control=test_run.control)
    interleaving_test_stop(test=test_run, decision="stopped by hand")
    with pytest.raises(InterleavingError, match="only a candidate"):
        interleaving_test_start(candidate=space_active())
    assert interleaving_test_start(candidate=other).status == InterleavingTest.Status.PREPARING


def test_admin_starts_a_test_that_fills_its_candidate_first(
    shop, admin_client, django_capture_on_commit_callbacks
):
    candidate = space_create(name="fresh", spec=ModelSpec("shop-tiny", seed=7))
    assert not space_is_filled(candidate)
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            "/admin/search/interleavingtest/add/", {"candidate": candidate.pk}
        )
    assert response.status_code == 302
    test = InterleavingTest.objects.get()
    assert test.status == InterleavingTest.Status.RUNNING
    assert space_is_filled(candidate)
    candidate.refresh_from_db()
    assert candidate.status == EmbeddingSpace.Status.CANDIDATE
    page = product_search_by_text(query=QUERY, limit=5, session="a")
    assert page.interleaved_with == candidate
    log(page, session="a")
    listing = admin_client.get("/admin/search/interleavingtest/").content.decode()
    assert "1 searches, 0 sessions with clicks" in listing
    assert "1.0000" in listing
    # A second start is refused with the reason.
    other = space_create(name="other", spec=ModelSpec("shop-tiny", seed=8))
    response = admin_client.post(
        "/admin/search/interleavingtest/add/", {"candidate": other.pk}, follow=True
    )
    assert "one test at a time" in response.content.decode()


def test_finetuning_holds_a_passing_candidate_for_the_test(shop, settings):
    settings.FINETUNE_VAL_FRACTION = 0.25
    settings.FINETUNE_MIN_PAIRS = 4  # a 12-product shop: one quick epoch
    # Product ids differ from run to run: a split seed that puts 3 to 6 of them in validation.
    ids = list(Product.objects.values_list("pk", flat=True))
    settings.FINETUNE_SPLIT_SEED = next(
        seed
        for seed in range(1000)
        if 3 <= sum(is_validation_key(pk, 0.25, seed) for pk in ids) <= 6
    )
    run = FinetuneRun.objects.create(
        options={"batch_size": 8, "seed": 0, "epochs": 1, "margin": -1.0}
    )
    run = finetune_run_execute(run=run)
    assert run.result["promoted"] is False
    assert run.result["held_for_interleaving"] is True
    assert "the interleaving test started" in run.result["decision"]
    candidate = run.space
    candidate.refresh_from_db()
    assert candidate.status == EmbeddingSpace.Status.CANDIDATE
    assert candidate.metrics["passed_offline_gates"] is True  # what auto-promotion needs
    assert space_active() == shop
    assert ImageEmbedding.objects.filter(space=candidate, vector__isnull=False).count() == 12
    test = InterleavingTest.objects.get(status=InterleavingTest.Status.RUNNING)
    assert (test.candidate, test.control) == (candidate, shop)
    assert product_search_by_text(query=QUERY, limit=5, session="f").interleaved_with == candidate


def test_admin_actions_stop_a_test_or_promote_its_candidate(
    test_run, shop, admin_client, django_capture_on_commit_callbacks
):
    url = "/admin/search/interleavingtest/"
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(url, {"action": "promote", "_selected_action": [test_run.pk]})
    test_run.refresh_from_db()
    assert test_run.status == InterleavingTest.Status.PROMOTED
    assert "promoted by admin" in test_run.decision
    assert space_active() == test_run.candidate
    # A new test, against the new active space, stopped by hand.
    other = space_create(name="other", spec=ModelSpec("shop-tiny", seed=6), build_indexes=False)
    test = interleaving_test_start(candidate=other, prepared=True)
    admin_client.post(url, {"action": "stop", "_selected_action": [test.pk]})
    test.refresh_from_db()
    assert test.status == InterleavingTest.Status.STOPPED
    assert test.decision == "stopped by admin"


def test_an_interleaved_search_id_round_trips_through_the_api_and_the_shop_page(test_run, client):
    body = client.get(reverse("api-search"), {"q": QUERY, "limit": 4, "session": "api"}).json()
    row = SearchLog.objects.get(pk=body["search_id"])
    assert row.interleaved_with == test_run.candidate
    assert row.product_ids == [hit["id"] for hit in body["results"]]
    assert len(row.teams) == 4
    assert set(row.teams) <= {TEAM_CONTROL, TEAM_CANDIDATE}
    # The shopper clicks the candidate's first product: the click names the search_id.
    position = list(row.teams).index(TEAM_CANDIDATE) + 1
    event = {
        "search_id": body["search_id"],
        "type": "click",
        "product_id": row.product_ids[position - 1],
        "position": position,
        "session": "api",  # the search's own session
    }
    response = client.post(reverse("api-events"), event, content_type="application/json")
    assert response.status_code == 201, response.content
    assert interleaving_tally(test=test_run).candidate_wins == 1
    # The shop page (its own session cookie) is interleaved and logged the same way.
    page = client.get(reverse("shop-search"), {"q": QUERY})
    assert page.status_code == 200
    logged = SearchLog.objects.filter(channel="page").get()
    assert logged.interleaved_with == test_run.candidate
    assert len(logged.teams) == len(logged.product_ids) == 12
