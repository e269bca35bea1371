"""A click on the shop page, in a real browser: one click event, sent as a beacon; and
without JavaScript, through the /click/ redirect. tools/browser/events.mjs drives headless
Chromium (bin/test installs it) and reports."""

from django.conf import settings as django_settings

from search.models import SearchEvent, SearchLog
from tests.browser.scripts import browser_report


def test_a_click_on_a_result_stores_one_click_event_by_beacon(
    live_server, transactional_db, catalog_shop, settings
):
    settings.SEARCH_SIMILARITY_FLOOR = 0.99  # word matches only: the tiny model's are noise
    settings.ROOT_URLCONF = "tests.browser.urls"  # with the product photos
    report = browser_report("events.mjs", live_server.url, "striped")
    assert "error" not in report, report["error"]
    assert report["violations"] == []

    scripted = report["withScript"]
    card = scripted["card"]
    search = SearchLog.objects.get(pk=card["searchId"])
    assert search.channel == "page"
    assert card["href"] == f"/click/{search.pk}/{card['productId']}/"
    # One request: the beacon, a form body, answered 201; the link went straight to the product.
    assert [(r["path"], r["method"]) for r in scripted["requests"]] == [("/api/events/", "POST")]
    # The browser may not report the beacon's answer before the page is gone: the stored
    # event below is what counts.
    assert all(r.get("status", 201) == 201 for r in scripted["requests"])
    assert f"search_id={search.pk}" in scripted["requests"][0]["body"]
    assert scripted["landedOn"] == f"/products/{card['productId']}/"
    assert scripted["title"] == catalog_shop[card["sku"]].title
    cookie = next(
        c for c in scripted["cookies"] if c["name"] == django_settings.SEARCH_SESSION_COOKIE
    )
    assert (cookie["sameSite"], cookie["httpOnly"]) == ("Lax", True)
    event = SearchEvent.objects.get(search=search)
    assert (event.type, event.product_id, event.position) == (
        "click",
        int(card["productId"]),
        int(card["position"]),
    )

    plain = report["withoutScript"]
    other = SearchLog.objects.get(pk=plain["card"]["searchId"])
    assert other.pk != search.pk
    assert [(r["path"], r["status"]) for r in plain["requests"]] == [
        (f"/click/{other.pk}/{plain['card']['productId']}/", 302)
    ]
    assert plain["landedOn"] == f"/products/{plain['card']['productId']}/"
    assert SearchEvent.objects.filter(search=other, type="click").count() == 1
    assert SearchEvent.objects.count() == 2
