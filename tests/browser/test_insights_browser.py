"""The Search insights page in a real browser (tools/browser/insights.mjs): reached from the
admin's index, filtered by date, with both charts drawn, the tables, the themes of the
zero-result queries and a CSV export; a 500-character query wraps instead of widening it."""

import csv
import datetime as dt
import io

import pytest
from django.contrib.auth import get_user_model

from tests.browser.scripts import browser_report
from tests.builders import search_logged

FIRST = dt.date(2026, 3, 1)


@pytest.fixture
def logged_shop(settings, live_server, transactional_db, make_product, default_space):
    """A week of searches: CTR climbing day by day, "red dress" clicked higher and higher,
    and zero-result queries about gifts and kitchens (plus one day outside the range)."""
    settings.ROOT_URLCONF = "tests.browser.urls"
    get_user_model().objects.create_superuser("admin", "admin@example.com", "admin-pass")
    shown = [make_product(sku=f"BRW-{n}", title=f"product {n}") for n in range(4)]
    for n in range(7):
        day = FIRST + dt.timedelta(days=n)
        for k in range(4):  # n // 2 of the 4 searches clicked, the first at position 4 - k
            clicks = [4 - k] if k < n // 2 + 1 else []
            search_logged(
                day=day,
                query="red dress",
                shown=shown,
                clicks=clicks,
                hour=8 + k,
                space=default_space,
            )
        search_logged(day=day, query="blue shirt", shown=shown[:2], space=default_space)
        search_logged(
            day=day, query=["gift for mum", "gifts for mum"][n % 2], shown=[], space=default_space
        )
        search_logged(
            day=day,
            query=["kitchen knife", "kitchen knives"][n % 2],
            shown=[],
            space=default_space,
            hour=13,
        )
    search_logged(day=FIRST + dt.timedelta(days=9), query="outside", shown=[], space=default_space)
    return live_server.url


def test_the_merchandiser_sees_charts_tables_themes_and_exports_csv(logged_shop):
    report = browser_report("insights.mjs", logged_shop, "2026-03-01", "2026-03-07")
    assert "error" not in report, report["error"]
    assert report["violations"] == []

    assert "start=2026-03-01" in report["url"]
    # 7 days × 7 searches; red dress clicked on 1, 1, 2, 2, 3, 3, 4 of its 4 searches a day.
    assert report["summary"].startswith(
        "2026-03-01 – 2026-03-07: 49 text searches, 16 with a click"
    )
    assert [(c["label"], c["points"], c["visible"]) for c in report["charts"]] == [
        ("click-through rate by day", 7, True),
        ("MRR of the first click by day", 7, True),
    ]
    assert report["top"][:2] == ["red dress", "blue shirt"]
    assert "outside" not in report["top"] + report["zero"]
    assert report["noClicks"] == ["blue shirt"]
    themes = {theme["name"]: theme["queries"] for theme in report["themes"]}
    assert themes == {
        "gift for mum": "gift for mum (4), gifts for mum (3)",
        "kitchen knife": "kitchen knife (4), kitchen knives (3)",
    }
    assert report["width"] <= report["viewportWidth"]
    assert report["csv"]["status"] == 200
    assert report["csv"]["type"].startswith("text/csv")
    assert report["csv"]["body"].startswith("\ufeff")  # the BOM, for Excel
    rows = list(csv.reader(io.StringIO(report["csv"]["body"].removeprefix("\ufeff"))))
    assert rows[0] == ["query", "searches", "clicked_searches", "clicks", "ctr"]
    assert rows[1] == ["red dress", "28", "16", "16", "0.5714"]


@pytest.fixture
def long_queries(settings, live_server, transactional_db, make_product, default_space):
    """Unbroken 500-character queries, one that found nothing and one not clicked, and one
    with a right-to-left override."""
    settings.ROOT_URLCONF = "tests.browser.urls"
    get_user_model().objects.create_superuser("admin", "admin@example.com", "admin-pass")
    shown = [make_product(sku="BRW-1", title="product 1")]
    for query, found in (("x" * 500, []), ("y" * 500, shown), ("\u202eevil dress", shown)):
        search_logged(day=FIRST, query=query, shown=found, space=default_space)
    return live_server.url


def test_a_500_character_query_does_not_widen_the_page(long_queries):
    report = browser_report("insights.mjs", long_queries, "2026-03-01", "2026-03-01")
    assert "error" not in report, report["error"]
    assert "x" * 500 in report["zero"]
    assert report["width"] <= report["viewportWidth"]
    assert {"y" * 500, "evil dress"} <= set(report["top"])  # the override dropped
