"""Every search is logged with its search_id; shopper events come back through the API, the
shop page's links and the no-JavaScript redirect; old searches are deleted in batches."""

import json
import re
import threading
import uuid
from datetime import timedelta
from urllib.parse import urlencode

import jsonschema
import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from search.models import SearchEvent, SearchLog
from search.searchlog import search_log_prune, search_log_record, session_key
from search.tasks import search_log_prune as search_log_prune_task
from shop_search.celery import app
from tests.search.test_api_search import own_photo, response_schema, schema  # noqa: F401

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_similarity_floor(settings):
    settings.SEARCH_SIMILARITY_FLOOR = -1.0


def result_ids(body) -> list[int]:
    return [result["id"] for result in body["results"]]


# --- searches are logged -------------------------------------------------------------------


def test_api_text_search_returns_its_search_id_and_logs_what_it_showed(client, catalog_shop):
    response = client.get(
        reverse("api-search"),
        {
            "q": "  Striped   SHIRT ",
            "brand": "Acme",
            "min_price": "5",
            "in_stock": "true",
            "category": "clothing",
            "sort": "price_asc",
            "limit": 1,
            "offset": 0,
            "session": "visit-7f3a@shop",
        },
    )
    assert response.status_code == 200, response.content
    body = response.json()
    log = SearchLog.objects.get(pk=body["search_id"])
    assert (log.kind, log.channel, log.query) == ("text", "api", "striped shirt")
    assert log.filters == {
        "category": "clothing",
        "brand": "Acme",
        "min_price": "5.00",
        "in_stock": True,
    }
    assert (log.sort, log.offset, log.result_count) == ("price_asc", 0, body["count"])
    assert log.space.name == body["space"]
    assert log.product_ids == result_ids(body) == [catalog_shop["TEE-100"].pk]
    # The front end's session is stored as an opaque key, never as sent.
    assert log.session == session_key("visit-7f3a@shop")
    assert "visit" not in log.session
    assert not SearchLog.objects.filter(session__contains="shop").exists()


def test_a_second_api_page_logs_its_positions_after_the_first(client, catalog_shop):
    first = client.get(reverse("api-search"), {"q": "striped", "limit": 2}).json()
    second = client.get(reverse("api-search"), {"q": "striped", "limit": 2, "offset": 2}).json()
    log = SearchLog.objects.get(pk=second["search_id"])
    assert first["search_id"] != second["search_id"]
    assert log.offset == 2
    assert log.product_ids == result_ids(second)
    assert log.position_of(second["results"][0]["id"]) == 3
    assert SearchLog.objects.get(pk=first["search_id"]).session == ""  # none was sent


def test_photo_and_similar_searches_are_logged(client, catalog_shop):
    photo = client.post(reverse("api-search-image"), {"image": own_photo(4), "session": "abc"})
    body = photo.json()
    log = SearchLog.objects.get(pk=body["search_id"])
    assert (log.kind, log.channel, log.query, log.session) == (
        "photo",
        "api",
        "",
        session_key("abc"),
    )
    assert log.product_ids == result_ids(body)
    assert log.product_ids[0] == catalog_shop["SHO-300"].pk

    product = catalog_shop["DRS-201"]
    similar = client.get(reverse("api-product-similar", args=[product.pk]), {"limit": 3}).json()
    log = SearchLog.objects.get(pk=similar["search_id"])
    assert (log.kind, log.source_product_id, log.sort) == ("similar", product.pk, "")
    assert log.product_ids == result_ids(similar)
    assert len(log.product_ids) == 3


def test_only_the_first_search_log_top_products_are_kept(client, catalog_shop, settings):
    settings.SEARCH_LOG_TOP = 2
    body = client.get(reverse("api-search"), {"q": "striped", "limit": 5}).json()
    assert len(body["results"]) == 5
    assert SearchLog.objects.get(pk=body["search_id"]).product_ids == result_ids(body)[:2]


@pytest.mark.parametrize(
    ("session", "message"),
    [
        ("a b", "session: The session must be visible ASCII characters without spaces."),
        ("é", "session: The session must be visible ASCII characters without spaces."),
        ("x" * 129, "session: The session is too long: at most 128 characters."),
    ],
)
def test_a_bad_session_is_a_400(client, catalog_shop, session, message):
    response = client.get(reverse("api-search"), {"q": "dress", "session": session})
    assert response.status_code == 400
    assert response.json()["error"] == message
    assert not SearchLog.objects.exists()


def test_with_logging_off_searches_answer_a_null_search_id(client, catalog_shop, settings):
    settings.SEARCH_LOG_ENABLED = False
    body = client.get(reverse("api-search"), {"q": "dress"}).json()
    assert body["search_id"] is None
    assert body["results"]
    page = client.get(reverse("shop-search"), {"q": "dress"}).content.decode()
    assert "/click/" not in page
    assert 'href="/products/' in page
    assert not SearchLog.objects.exists()


def test_a_log_row_that_cannot_be_written_costs_no_result(client, catalog_shop):
    # A real failure of the INSERT (a trigger that refuses it, rolled back with the test).
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION test_refuse_log() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'log unavailable'; END $$"
        )
        cursor.execute(
            "CREATE TRIGGER refuse_log BEFORE INSERT ON search_searchlog "
            "FOR EACH ROW EXECUTE FUNCTION test_refuse_log()"
        )
    response = client.get(reverse("api-search"), {"q": "striped"})
    assert response.status_code == 200
    assert response.json()["search_id"] is None
    assert len(response.json()["results"]) == 6
    page = client.get(reverse("shop-search"), {"q": "striped"})
    assert page.status_code == 200
    assert page.content.decode().count('class="card"') == 6
    # The test's transaction is still usable: the failed write had its own savepoint.
    assert SearchLog.objects.count() == 0


def test_the_shop_page_logs_its_search_and_links_carry_the_search_id(catalog_shop):
    browser = Client()
    response = browser.get(reverse("shop-search"), {"q": "striped", "brand": "Acme"})
    cookie = response.cookies[django_settings.SEARCH_SESSION_COOKIE]
    assert cookie["samesite"] == "Lax"
    assert cookie["httponly"]
    assert len(cookie.value) >= 20
    page = response.content.decode()
    log = SearchLog.objects.get()
    assert (log.kind, log.channel, log.query, log.filters) == (
        "text",
        "page",
        "striped",
        {"brand": "Acme"},
    )
    assert log.session == session_key(cookie.value)
    links = re.findall(
        r'href="/click/([0-9a-f-]+)/(\d+)/" rel="nofollow" data-href="/products/(\d+)/" '
        r'data-product-id="(\d+)" data-position="(\d+)"',
        page,
    )
    assert [(sid, int(pid), int(position)) for sid, pid, _, _, position in links] == [
        (str(log.pk), product_id, position)
        for position, product_id in enumerate(log.product_ids, start=1)
    ]
    assert all(pid == direct == beacon for _, pid, direct, beacon, _ in links)
    assert f'data-events-url="{reverse("api-events")}" data-search-id="{log.pk}"' in page

    # The cookie is set once; later searches of this browser share its session.
    again = browser.get(reverse("shop-search"), {"q": "dress"})
    assert django_settings.SEARCH_SESSION_COOKIE not in again.cookies
    assert SearchLog.objects.filter(session=log.session).count() == 2


def test_the_shop_pages_related_products_and_photo_searches_are_logged_in_order(
    client, catalog_shop, settings
):
    settings.SEARCH_SIMILARITY_FLOOR = 0.99  # word matches only: the rest is related
    page = client.get(reverse("shop-search"), {"q": "boots"}).content.decode()
    log = SearchLog.objects.get()
    shown = [int(pid) for pid in re.findall(r'data-product-id="(\d+)"', page)]
    positions = [int(p) for p in re.findall(r'data-position="(\d+)"', page)]
    assert shown == log.product_ids
    assert shown[0] == catalog_shop["SHO-301"].pk  # the one match, then the related ones
    assert "Related products" in page
    assert positions == list(range(1, len(shown) + 1))

    results = client.post(reverse("shop-photo-search"), {"image": own_photo(4)})["Location"]
    client.get(results)
    photo = SearchLog.objects.get(kind="photo")
    assert (photo.channel, photo.query, photo.product_ids[0]) == (
        "page",
        "",
        catalog_shop["SHO-300"].pk,
    )


def test_the_product_pages_similar_products_are_a_logged_search(client, catalog_shop):
    product = catalog_shop["DRS-201"]
    page = client.get(reverse("product-detail", args=[product.pk])).content.decode()
    log = SearchLog.objects.get()
    assert (log.kind, log.channel, log.source_product_id) == ("similar", "page", product.pk)
    similar = page[page.index("Similar products") :]
    assert [int(pid) for pid in re.findall(r'data-product-id="(\d+)"', similar)] == (
        log.product_ids
    )
    assert f"/click/{log.pk}/" in similar


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_the_row_commits_alone_and_later_writes_stay_durable(
    make_product, default_space
):
    product = make_product(sku="AC-1", title="one")
    search_id = search_log_record(
        kind="text",
        channel="page",
        space=default_space,
        product_ids=[product.pk],
        result_count=1,
        query="One",
        filters={"brand": "Acme", "in_stock": True},
        session="s-1",
    )
    log = SearchLog.objects.get(pk=search_id)
    assert (log.query, log.filters, log.product_ids, log.session) == (
        "one",
        {"brand": "Acme", "in_stock": True},
        [product.pk],
        session_key("s-1"),
    )
    assert log.space == default_space
    with connection.cursor() as cursor:  # not waiting for the flush was that row's alone
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone() == ("on",)


# --- events --------------------------------------------------------------------------------


@pytest.fixture
def logged(make_product, default_space):
    """A logged search of the second page (positions 11-13) and a product it did not show."""
    shown = [make_product(sku=f"EV-{n}", title=f"product {n}") for n in range(3)]
    search_id = search_log_record(
        kind=SearchLog.Kind.TEXT,
        channel=SearchLog.Channel.API,
        space=default_space,
        query="red",
        product_ids=[p.pk for p in shown],
        result_count=13,
        offset=10,
        session="visit-of-the-searcher",
    )
    return search_id, shown, make_product(sku="EV-OTHER", title="not shown")


SEARCHER = "visit-of-the-searcher"


def post_event(client, session=SEARCHER, **body):
    """An event as the searcher's front end sends it: with the search's session."""
    body = {**body, "session": session} if session else body
    return client.post(reverse("api-events"), body, content_type="application/json")


def test_an_event_is_stored_once_201_then_200(client, logged, schema):  # noqa: F811
    search_id, shown, _ = logged
    event = {"search_id": str(search_id), "type": "click", "product_id": shown[1].pk}
    first = post_event(client, **event, position=12)
    again = post_event(client, **event)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["duplicate"] is False
    assert again.json()["duplicate"] is True
    assert first.json()["position"] == again.json()["position"] == 12
    for response in (first, again):
        jsonschema.validate(
            response.json(), response_schema(schema, "/api/events/", "post", response.status_code)
        )
    # Another type for the same product is another event; a form body works too (the shop
    # page's beacon, which carries the shop's session cookie instead of a `session`).
    client.cookies[django_settings.SEARCH_SESSION_COOKIE] = SEARCHER
    cart = client.post(
        reverse("api-events"),
        urlencode({**event, "type": "add_to_cart"}),
        content_type="application/x-www-form-urlencoded",
        headers={"Origin": "http://testserver"},  # the shop page's beacon
    )
    assert cart.status_code == 201
    stored = SearchEvent.objects.order_by("id").values_list("type", "product_id", "position")
    assert list(stored) == [("click", shown[1].pk, 12), ("add_to_cart", shown[1].pk, 12)]


def test_bad_events_are_refused_with_clear_messages(client, logged, schema):  # noqa: F811
    search_id, shown, other = logged
    good = {"search_id": str(search_id), "type": "click", "product_id": shown[0].pk}
    unknown = uuid.uuid4()
    cases = [
        ({**good, "search_id": str(unknown)}, f"search_id: Unknown search_id {unknown}"),
        ({**good, "search_id": "42"}, "search_id: Must be the search_id (a UUID) that a search"),
        ({**good, "product_id": other.pk}, f"product_id: Product {other.pk} was not among"),
        ({**good, "type": "like"}, "type: Unknown event type “like”: use one of click, add_to"),
        ({**good, "position": 3}, f"position: Product {shown[0].pk} was shown at position 11"),
        ({**good, "position": 0}, "position: Ensure this value is greater than or equal to 1."),
        ({"type": "click", "product_id": 1}, "search_id: Name the search: its search_id."),
    ]
    for body, message in cases:
        response = post_event(client, **body)
        assert response.status_code == 400, body
        assert response.json()["error"].startswith(message), response.json()
        jsonschema.validate(response.json(), response_schema(schema, "/api/events/", "post", 400))
    not_json = client.post(reverse("api-events"), "[1]", content_type="application/json")
    assert not_json.status_code == 400
    # Only the searcher's own evidence: another session (or none) is refused, and a cart or
    # purchase needs a click on that product in that search first.
    not_theirs = f"session: Search {search_id} was not made in this session"
    for session in ("visit-of-someone-else", ""):
        response = post_event(client, session=session, **good)
        assert response.status_code == 400
        assert response.json()["error"].startswith(not_theirs), response.json()
    for type in ("add_to_cart", "purchase"):
        response = post_event(client, **{**good, "type": type})
        assert response.status_code == 400
        assert response.json()["error"].startswith(
            f"type: Product {shown[0].pk} was not clicked in search {search_id}: a {type}"
        ), response.json()
        jsonschema.validate(response.json(), response_schema(schema, "/api/events/", "post", 400))
    assert not SearchEvent.objects.exists()
    assert post_event(client, **good).status_code == 201
    assert post_event(client, **{**good, "type": "purchase"}).status_code == 201


def test_an_event_for_a_product_deleted_since_the_search_is_refused(client, logged):
    search_id, shown, _ = logged
    gone = shown[2].pk
    shown[2].delete()
    response = post_event(client, search_id=str(search_id), type="click", product_id=gone)
    assert response.status_code == 400
    assert response.json()["error"] == f"product_id: Product {gone} no longer exists."


def test_events_are_throttled_per_address_at_their_own_rate(client, logged, settings):
    settings.API_EVENTS_ANON_RATE = "2/min"
    search_id, shown, _ = logged
    statuses = [
        post_event(client, search_id=str(search_id), type="click", product_id=p.pk).status_code
        for p in shown
    ]
    assert statuses == [201, 201, 429]
    assert "throttled" in post_event(client, search_id=str(search_id)).json()["error"]


def test_a_signed_in_shopper_needs_no_csrf_token(logged, django_user_model):
    search_id, shown, _ = logged
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(django_user_model.objects.create_user("shopper", password="x"))
    response = post_event(browser, search_id=str(search_id), type="click", product_id=shown[0].pk)
    assert response.status_code == 201


@pytest.mark.django_db(transaction=True)
def test_the_same_event_posted_concurrently_is_stored_once(logged):
    search_id, shown, _ = logged
    senders = 8
    start = threading.Barrier(senders)
    statuses: list[int] = []

    def send():
        try:
            start.wait()
            response = post_event(
                Client(), search_id=str(search_id), type="click", product_id=shown[0].pk
            )
            statuses.append(response.status_code)
        finally:
            connection.close()  # each thread had its own connection

    threads = [threading.Thread(target=send) for _ in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200] * (senders - 1) + [201]
    assert SearchEvent.objects.filter(search_id=search_id).count() == 1


def test_event_posts_from_another_sites_page_are_refused(client, logged, schema):  # noqa: F811
    search_id, shown, _ = logged
    event = {"search_id": str(search_id), "type": "click", "product_id": shown[0].pk}
    form = urlencode(event)
    form_type = "application/x-www-form-urlencoded"
    refused = [
        # An HTML form or a beacon on another site: the browser names that site.
        (form, form_type, {"Origin": "https://evil.example"}, "not from https://evil.example"),
        (form, "multipart/form-data; boundary=x", {"Origin": "null"}, "not from null"),
        (json.dumps(event), "application/json", {"Sec-Fetch-Site": "cross-site"}, "Cross-origin"),
        # A form without any Origin: only a page could want to send one.
        (form, form_type, {}, "A form body without this site's Origin is refused"),
    ]
    for body, content_type, headers, message in refused:
        response = client.post(
            reverse("api-events"), body, content_type=content_type, headers=headers
        )
        assert response.status_code == 403, (headers, response.content)
        assert message in response.json()["error"], response.json()
        jsonschema.validate(response.json(), response_schema(schema, "/api/events/", "post", 403))
    assert not SearchEvent.objects.exists()
    # This site's own page (its beacon, a form, with the shop's cookie), and a script posting
    # JSON: recorded.
    client.cookies[django_settings.SEARCH_SESSION_COOKIE] = SEARCHER
    own_page = {"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"}
    response = client.post(reverse("api-events"), form, content_type=form_type, headers=own_page)
    assert response.status_code == 201, response.content
    assert post_event(client, **{**event, "type": "purchase"}).status_code == 201
    assert SearchEvent.objects.count() == 2


# --- the shop page's links without JavaScript ----------------------------------------------

# A link followed on a page of this site, as the browser says.
FROM_OWN_PAGE = {"Sec-Fetch-Site": "same-origin"}


def test_the_no_javascript_link_records_the_click_then_shows_the_product(client, logged):
    search_id, shown, other = logged
    url = reverse("shop-click", args=[search_id, shown[2].pk])
    client.cookies[django_settings.SEARCH_SESSION_COOKIE] = SEARCHER
    response = client.get(url, headers=FROM_OWN_PAGE)
    assert response.status_code == 302
    assert response["Location"] == reverse("product-detail", args=[shown[2].pk])
    assert "no-cache" in response["Cache-Control"]
    event = SearchEvent.objects.get()
    assert (event.type, event.product_id, event.position) == ("click", shown[2].pk, 13)
    # The beacon of the same click, and the link again: still one click.
    beacon = post_event(client, search_id=str(search_id), type="click", product_id=shown[2].pk)
    assert beacon.status_code == 200
    assert client.get(url, headers=FROM_OWN_PAGE).status_code == 302
    assert SearchEvent.objects.count() == 1


def test_the_link_records_a_click_only_in_the_searchs_own_session(logged):
    search_id, shown, _ = logged  # searched in the session "visit-of-the-searcher"
    url = reverse("shop-click", args=[search_id, shown[0].pk])

    def recorded(headers=None, session=None) -> bool:
        browser = Client()
        if session is not None:
            browser.cookies[django_settings.SEARCH_SESSION_COOKIE] = session
        response = browser.get(url, headers=headers)
        # Recorded or not, the shopper gets the product.
        assert response["Location"] == reverse("product-detail", args=[shown[0].pk])
        return SearchEvent.objects.filter(search_id=search_id).delete()[0] > 0

    cross_site = {"Sec-Fetch-Site": "cross-site", "Referer": "https://evil.example/"}
    # Another site's <img> or link, a bookmark, another shopper's session: nothing recorded.
    assert not recorded()
    assert not recorded(cross_site)
    assert not recorded({"Referer": "https://evil.example/?q=red"})
    assert not recorded({"Sec-Fetch-Site": "none"})
    assert not recorded({"Sec-Fetch-Site": "same-site"}, session="")
    assert not recorded(session="visit-of-someone-else")
    # Nor a page of this site without the search's session (another visitor's tab).
    assert not recorded({"Sec-Fetch-Site": "same-origin"})
    assert not recorded({"Referer": "http://testserver/?q=red"}, session="visit-of-someone-else")
    # The session the search was made in, whichever page the link was on.
    assert recorded({"Sec-Fetch-Site": "same-origin"}, session=SEARCHER)
    assert recorded(cross_site, session=SEARCHER)
    assert recorded(session=SEARCHER)


def test_the_no_javascript_link_only_ever_leads_to_its_product(client, logged):
    search_id, shown, other = logged
    # Not in that search, or an expired search: no event, the shopper still gets the product.
    for sid, product in ((search_id, other), (uuid.uuid4(), shown[0])):
        response = client.get(
            reverse("shop-click", args=[sid, product.pk]) + "?next=https://evil.example/",
            headers=FROM_OWN_PAGE,
        )
        assert response["Location"] == reverse("product-detail", args=[product.pk])
    assert not SearchEvent.objects.exists()
    assert client.get(reverse("shop-click", args=[search_id, 999999])).status_code == 404
    assert client.post(reverse("shop-click", args=[search_id, shown[0].pk])).status_code == 405


def test_over_the_event_rate_the_link_still_leads_to_the_product_unrecorded(
    client, logged, settings
):
    settings.API_EVENTS_ANON_RATE = "1/min"
    search_id, shown, _ = logged
    client.cookies[django_settings.SEARCH_SESSION_COOKIE] = SEARCHER
    for product in shown[:2]:
        response = client.get(
            reverse("shop-click", args=[search_id, product.pk]), headers=FROM_OWN_PAGE
        )
        assert response["Location"] == reverse("product-detail", args=[product.pk])
    assert list(SearchEvent.objects.values_list("product_id", flat=True)) == [shown[0].pk]


# --- retention -----------------------------------------------------------------------------


def test_retention_deletes_only_searches_older_than_search_log_days(logged, settings):
    search_id, shown, _ = logged
    settings.SEARCH_LOG_DAYS = 90
    now = timezone.now()
    recent = SearchLog.objects.get(pk=search_id)
    old_ids = []
    for days in (91, 120, 400, 95, 365):
        old_id = search_log_record(
            kind="text", channel="api", space=None, product_ids=[shown[0].pk], result_count=1
        )
        SearchLog.objects.filter(pk=old_id).update(created=now - timedelta(days=days))
        SearchEvent.objects.create(search_id=old_id, type="click", product=shown[0], position=1)
        old_ids.append(old_id)
    edge = search_log_record(kind="text", channel="api", space=None, product_ids=[], result_count=0)
    SearchLog.objects.filter(pk=edge).update(created=now - timedelta(days=89, hours=23))
    SearchEvent.objects.create(search_id=search_id, type="click", product=shown[0], position=11)

    assert search_log_prune(batch_size=2) == 5  # three batches: 2, 2, 1
    assert set(SearchLog.objects.values_list("pk", flat=True)) == {recent.pk, edge}
    assert list(SearchEvent.objects.values_list("search_id", flat=True)) == [search_id]
    assert search_log_prune() == 0


def test_beat_runs_the_retention_task_daily_on_the_default_queue(logged, settings):
    search_id, _, _ = logged
    entry = next(
        e for e in settings.CELERY_BEAT_SCHEDULE.values() if e["task"] == search_log_prune_task.name
    )
    assert entry["task"] in app.tasks  # a name beat can send, of a task workers know
    assert entry["schedule"].hour == {4}
    assert settings.CELERY_TASK_ROUTES[search_log_prune_task.name] == {"queue": "default"}
    SearchLog.objects.filter(pk=search_id).update(created=timezone.now() - timedelta(days=100))
    assert search_log_prune_task.delay().get() == 1
    assert not SearchLog.objects.exists()
