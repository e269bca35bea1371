"""Search insights: the figures of a small hand-made log, worked out by hand, on the page,
in its CSV exports, and zero-result queries grouped by meaning with the tiny model."""

import csv
import datetime as dt
import io

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from embeddings.models import EmbeddingSpace
from search.insights import (
    InsightsRange,
    InsightsRangeInvalid,
    insights_export_rows,
    insights_summary,
    insights_zero_result_clusters,
    insights_zero_result_queries,
)
from search.models import SearchLog
from search.selectors import text_vector, text_vectors
from tests.builders import search_logged as logged

DAY1 = dt.date(2026, 3, 2)
DAY2 = dt.date(2026, 3, 3)
DAY3 = dt.date(2026, 3, 4)  # a search of another space only


@pytest.fixture
def products(make_product):
    return [make_product(sku=f"INS-{n}", title=f"product {n}") for n in range(5)]


@pytest.fixture
def other_space(default_space):
    return EmbeddingSpace.objects.create(
        name="other@test",
        architecture=default_space.architecture,
        source=default_space.source,
        embed_dim=default_space.embed_dim,
        status=EmbeddingSpace.Status.CANDIDATE,
    )


@pytest.fixture
def hand_made_log(products, default_space, other_space):
    """Day 1: "red dress" clicked at 1; "red dress" clicked at 3 then 1 (first click: 3);
    "rucksack" found nothing twice; "blue shirt" shown, not clicked.
    Day 2: "red dress" not clicked; "blue shirt" not clicked; "gift for mum" found
    nothing; "shoes" clicked at 2; a photo search (not a text search: left out).
    Day 3: "rucksack" found nothing, answered by the other space."""
    a, b, c = products[:3]
    space = default_space
    logged(day=DAY1, query="Red  Dress", shown=[a, b, c], clicks=[1], space=space)
    logged(day=DAY1, query="red dress", shown=[a, b, c], clicks=[3, 1], space=space, hour=11)
    logged(day=DAY1, query="rucksack", shown=[], space=space)
    logged(day=DAY1, query="rucksack", shown=[], space=space, hour=12)
    logged(day=DAY1, query="blue shirt", shown=[b, c], space=space)
    logged(day=DAY2, query="red dress", shown=[a, b], space=space)
    logged(day=DAY2, query="blue shirt", shown=[c], space=space)
    logged(day=DAY2, query="gift for mum", shown=[], space=space)
    logged(day=DAY2, query="shoes", shown=[c, a], clicks=[2], space=space)
    logged(day=DAY2, query="", shown=[a], clicks=[1], space=space, kind="photo")
    logged(day=DAY3, query="rucksack", shown=[], space=other_space)
    return space, other_space


def test_top_queries_zero_results_and_no_clicks_equal_the_hand_count(hand_made_log):
    space, _ = hand_made_log
    window = InsightsRange(start=DAY1, end=DAY3)
    top = insights_summary(window=window, limit=10).top
    assert {q.query: (q.searches, q.clicked, q.clicks) for q in top} == {
        "red dress": (3, 2, 3),
        "rucksack": (3, 0, 0),
        "blue shirt": (2, 0, 0),
        "gift for mum": (1, 0, 0),
        "shoes": (1, 1, 1),
    }
    first = insights_summary(window=window, limit=2).top
    assert [q.query for q in first] == ["red dress", "rucksack"]  # ties: by query
    assert first[0].ctr == pytest.approx(2 / 3)

    zero = insights_zero_result_queries(window=window, limit=10)
    assert [(q.query, q.searches) for q in zero] == [("rucksack", 3), ("gift for mum", 1)]
    assert timezone.localtime(zero[0].last_searched).date() == DAY3
    no_clicks = insights_summary(window=window, limit=10).no_clicks
    assert [(q.query, q.searches) for q in no_clicks] == [("blue shirt", 2)]
    assert no_clicks[0].last_searched == dt.datetime(2026, 3, 3, 10, tzinfo=dt.UTC)


def test_ctr_and_mrr_of_the_first_click_by_day_equal_the_hand_count(
    hand_made_log, django_assert_num_queries
):
    window = InsightsRange(start=DAY1, end=DAY3)
    with django_assert_num_queries(1):  # totals, tables and days: one statement, summed in SQL
        summary = insights_summary(window=window, limit=10)
    days = {d.day: d for d in summary.days}
    assert sorted(days) == [DAY1, DAY2, DAY3]
    # Day 1: 5 searches, 2 clicked; first clicks at 1 and 3: MRR (1 + 1/3) / 2.
    assert (days[DAY1].searches, days[DAY1].clicked, days[DAY1].zero_results) == (5, 2, 2)
    assert days[DAY1].ctr == pytest.approx(2 / 5)
    assert days[DAY1].mrr == pytest.approx((1 + 1 / 3) / 2)
    # Day 2: 4 text searches (the photo search is left out), "shoes" clicked at 2.
    assert (days[DAY2].searches, days[DAY2].clicked) == (4, 1)
    assert days[DAY2].ctr == pytest.approx(1 / 4)
    assert days[DAY2].mrr == pytest.approx(1 / 2)
    assert days[DAY3].ctr == 0
    assert days[DAY3].mrr is None

    totals = summary.totals
    assert (totals.searches, totals.clicked, totals.zero_results) == (10, 3, 4)
    assert totals.mrr == pytest.approx((1 + 1 / 3 + 1 / 2) / 3)


def test_date_and_space_filters(hand_made_log):
    space, other = hand_made_log
    day2 = InsightsRange(start=DAY2, end=DAY2)
    assert [(q.query, q.searches) for q in insights_summary(window=day2, limit=10).top] == [
        ("blue shirt", 1),
        ("gift for mum", 1),
        ("red dress", 1),
        ("shoes", 1),
    ]
    assert [q.query for q in insights_summary(window=day2, limit=10).no_clicks] == [
        "blue shirt",
        "red dress",
    ]
    only_other = InsightsRange(start=DAY1, end=DAY3, space_id=other.pk)
    zero = insights_zero_result_queries(window=only_other, limit=10)
    assert [(q.query, q.searches) for q in zero] == [("rucksack", 1)]
    only_default = InsightsRange(start=DAY1, end=DAY3, space_id=space.pk)
    summary = insights_summary(window=only_default, limit=10)
    assert summary.totals.searches == 9
    assert [d.day for d in summary.days] == [DAY1, DAY2]
    nothing = InsightsRange(start=DAY3 + dt.timedelta(days=1), end=DAY3 + dt.timedelta(days=5))
    empty = insights_summary(window=nothing, limit=10)
    assert (empty.totals.searches, empty.totals.mrr, empty.top, empty.days) == (0, None, [], [])
    with pytest.raises(InsightsRangeInvalid, match="before the start"):
        InsightsRange(start=DAY2, end=DAY1)


def test_csv_exports_hold_each_table(hand_made_log):
    space, _ = hand_made_log
    window = InsightsRange(start=DAY1, end=DAY2)
    top = insights_export_rows(table="top", window=window, limit=100, space=space)
    assert top[0] == ["query", "searches", "clicked_searches", "clicks", "ctr"]
    assert top[1] == ["red dress", "3", "2", "3", "0.6667"]
    days = insights_export_rows(table="days", window=window, limit=100, space=space)
    assert days[1:] == [
        ["2026-03-02", "5", "2", "2", "0.4000", "0.6667"],
        ["2026-03-03", "4", "1", "1", "0.2500", "0.5000"],
    ]
    zero = insights_export_rows(table="zero", window=window, limit=100, space=space)
    assert [row[:2] for row in zero[1:]] == [["rucksack", "2"], ["gift for mum", "1"]]
    no_clicks = insights_export_rows(table="no_clicks", window=window, limit=100, space=space)
    assert [row[:2] for row in no_clicks[1:]] == [["blue shirt", "2"]]
    clusters = insights_export_rows(table="clusters", window=window, limit=100, space=space)
    assert clusters[0] == ["cluster", "cluster_searches", "query", "searches"]
    assert sorted(row[2] for row in clusters[1:]) == ["gift for mum", "rucksack"]


def test_a_query_that_looks_like_a_formula_is_exported_as_text(products, default_space):
    logged(day=DAY1, query='=HYPERLINK("http://x.example","win")', shown=[], space=default_space)
    rows = insights_export_rows(
        table="zero", window=InsightsRange(start=DAY1, end=DAY1), limit=10, space=default_space
    )
    assert rows[1][0].startswith("'=hyperlink(")


# What a shopper can type that reorders or colours what staff read: ESC's terminal colour,
# BEL, and U+202E (RIGHT-TO-LEFT OVERRIDE), which reverses the rest of its line.
HOSTILE_QUERY = "\x1b[31mred\x07 dress \u202eevil"
HOSTILE_SHOWN = "[31mred dress evil"


def test_csv_exports_strip_control_and_bidi_characters(products, default_space):
    logged(day=DAY1, query=HOSTILE_QUERY, shown=[], space=default_space)
    logged(day=DAY1, query="\x07=1+1", shown=[], space=default_space, hour=11)
    window = InsightsRange(start=DAY1, end=DAY1)
    for table in ("top", "zero", "clusters"):
        cells = [cell for row in insights_export_rows(
            table=table, window=window, limit=10, space=default_space
        ) for cell in row]  # fmt: skip
        assert HOSTILE_SHOWN in cells, table
        assert "'=1+1" in cells, table  # stripped first, so the formula is still escaped
        assert not any(ch in cell for cell in cells for ch in "\x1b\x07\u202e"), table


def test_the_csv_starts_with_a_bom_and_keeps_chinese(staff_client, products, default_space):
    logged(day=DAY1, query="红色条纹连衣裙", shown=[], space=default_space)
    logged(day=DAY1, query=HOSTILE_QUERY, shown=[], space=default_space, hour=11)
    export = staff_client.get(
        reverse("admin:search_searchlog_insights"),
        {"start": DAY1.isoformat(), "end": DAY1.isoformat(), "export": "zero"},
    )
    assert export["Content-Type"] == "text/csv; charset=utf-8"
    assert export.content.startswith("\ufeff".encode())  # Excel reads it as UTF-8
    rows = list(csv.reader(io.StringIO(export.content.decode("utf-8-sig"))))
    assert rows[0][0] == "query"
    assert sorted(row[0] for row in rows[1:]) == sorted([HOSTILE_SHOWN, "红色条纹连衣裙"])


def test_zero_result_queries_are_grouped_by_meaning(products, default_space):
    counts = {
        "gift for mum": 5,
        "gifts for mum": 2,
        "gift for mom": 1,
        "kitchen knife": 4,
        "kitchen knives": 3,
        "knife kitchen": 1,
        "wireless headphones": 2,
        "headphones wireless": 1,
    }
    for query, n in counts.items():
        for hour in range(n):
            logged(day=DAY1, query=query, shown=[], space=default_space, hour=hour)
    window = InsightsRange(start=DAY1, end=DAY1)
    clusters = insights_zero_result_clusters(window=window, space=default_space)
    grouped = {c.name: sorted(q.query for q in c.queries) for c in clusters}
    assert grouped == {
        "gift for mum": ["gift for mom", "gift for mum", "gifts for mum"],
        "kitchen knife": ["kitchen knife", "kitchen knives", "knife kitchen"],
        "wireless headphones": ["headphones wireless", "wireless headphones"],
    }
    assert [(c.name, c.searches) for c in clusters] == [
        ("gift for mum", 8),
        ("kitchen knife", 8),
        ("wireless headphones", 3),
    ]
    # Bounded: only the most searched zero-result queries are grouped, each in one cluster.
    few = insights_zero_result_clusters(window=window, space=default_space, limit=3)
    assert sorted(q.query for c in few for q in c.queries) == [
        "gift for mum",
        "kitchen knife",
        "kitchen knives",
    ]


def test_unrelated_zero_result_queries_are_not_lumped_into_one_theme(products, default_space):
    """Seven queries about different things, two of them the same thing: only those two
    share a theme, named by the one nearer the other (here, of two, the most searched)."""
    unrelated = ["coffee", "bicycle pump", "garden hose", "phone charger", "umbrella"]
    for query in [*unrelated, "coffee beans", "coffee beans"]:
        logged(day=DAY1, query=query, shown=[], space=default_space)
    window = InsightsRange(start=DAY1, end=DAY1)
    clusters = insights_zero_result_clusters(window=window, space=default_space)
    assert len(clusters) >= 5
    assert max(len(c.queries) for c in clusters) <= 2
    assert clusters[0].name == "coffee beans"  # 2 searches: the most searched theme first


# --- the admin page -----------------------------------------------------------------------


def test_the_date_fields_show_the_30_days_in_effect(staff_client, db):
    page = staff_client.get(reverse("admin:search_searchlog_insights"))
    window = InsightsRange.last_days(30)
    html = page.content.decode()
    assert f'name="start" value="{window.start.isoformat()}"' in html
    assert f'name="end" value="{window.end.isoformat()}"' in html


@pytest.fixture
def staff_client(client, db):
    user = get_user_model().objects.create_user("merch", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_searchlog"))
    client.force_login(user)
    return client


def test_the_page_shows_tables_charts_and_clusters_and_exports_csv(staff_client, hand_made_log):
    space, other = hand_made_log
    url = reverse("admin:search_searchlog_insights")
    index = staff_client.get(reverse("admin:index"))
    assert url in index.content.decode()

    page = staff_client.get(url, {"start": "2026-03-01", "end": "2026-03-04"})
    assert page.status_code == 200
    html = page.content.decode()
    assert 'name="start" value="2026-03-01"' in html
    assert "<strong>10</strong> text searches" in html
    charts = html.split('id="insights-charts"')[1].split("</div>")[0]
    assert charts.count("<svg") == 2
    assert 'aria-label="click-through rate by day"' in charts
    assert 'aria-label="MRR of the first click by day"' in charts
    assert "2026-03-02 – 2026-03-04" in charts  # the first and last day under the lines
    assert [c.name for c in page.context["clusters"]] == ["rucksack", "gift for mum"]
    assert [q.query for q in page.context["no_clicks"]] == ["blue shirt"]

    export = staff_client.get(
        url, {"start": "2026-03-01", "end": "2026-03-04", "space": other.pk, "export": "zero"}
    )
    assert export["Content-Type"].startswith("text/csv")
    assert "search-insights-zero-2026-03-01-2026-03-04.csv" in export["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(export.content.decode("utf-8-sig"))))
    assert [row[:2] for row in rows] == [["query", "searches"], ["rucksack", "1"]]

    log = staff_client.get(reverse("admin:search_searchlog_changelist"), {"q": "rucksack"})
    assert log.status_code == 200
    assert log.context["cl"].result_count == 3
    assert url in log.content.decode()  # its link to the insights


def test_staff_read_shoppers_queries_isolated_and_wrapped(staff_client, products, default_space):
    """A query's control and bidi characters are dropped and each query sits in its own
    <bdi> (isolated, wrapped anywhere by shopper-text.css): no query reorders its row, and
    a 500-character one cannot widen the page (tests/browser/test_insights_browser.py)."""
    long_query = "x" * 500
    logged(day=DAY1, query=HOSTILE_QUERY, shown=products[:1], space=default_space)
    logged(day=DAY1, query=long_query, shown=[], space=default_space, hour=11)
    page = staff_client.get(
        reverse("admin:search_searchlog_insights"),
        {"start": DAY1.isoformat(), "end": DAY1.isoformat()},
    ).content.decode()
    log_list = staff_client.get(reverse("admin:search_searchlog_changelist")).content.decode()
    log_id = SearchLog.objects.get(query=HOSTILE_QUERY).pk
    log_page = staff_client.get(
        reverse("admin:search_searchlog_change", args=[log_id])
    ).content.decode()
    for html in (page, log_list, log_page):
        assert "search/shopper-text.css" in html
        assert f'<bdi class="shopper-text">{HOSTILE_SHOWN}</bdi>' in html
        assert not any(ch in html for ch in "\x1b\x07\u202e")
    # top queries, no-click queries; zero-result queries, their theme and its query list
    assert page.count(f'<bdi class="shopper-text">{HOSTILE_SHOWN}</bdi>') == 2
    assert page.count(f'<bdi class="shopper-text">{long_query}</bdi>') == 4


def test_bad_filters_are_a_400_with_a_message(staff_client):
    url = reverse("admin:search_searchlog_insights")
    page = staff_client.get(url, {"start": "2026-03-05", "end": "2026-03-01"})
    assert page.status_code == 400
    assert "is before the start" in page.content.decode()
    page = staff_client.get(url, {"start": "yesterday"})
    assert page.status_code == 400
    assert "Enter a valid date" in page.content.decode()
    assert staff_client.get(url, {"export": "everything"}).status_code == 400


def test_only_staff_allowed_to_view_the_log_see_it(client, db):
    url = reverse("admin:search_searchlog_insights")
    assert client.get(url).status_code == 302  # to the login page
    user = get_user_model().objects.create_user("clerk", password="pw", is_staff=True)
    client.force_login(user)
    assert client.get(url).status_code == 403
    assert url not in client.get(reverse("admin:index")).content.decode()


def test_text_vectors_reuse_cached_query_vectors_and_keep_the_order(db, default_space):
    cached = text_vector(default_space, "Gift for  Mum")
    vectors = text_vectors(default_space, ["kitchen knife", "gift for mum", "kitchen knife"])
    assert vectors.shape == (3, default_space.embed_dim)
    np.testing.assert_array_equal(vectors[1], cached)
    np.testing.assert_array_equal(vectors[0], vectors[2])
    np.testing.assert_allclose(vectors[0], text_vector(default_space, "kitchen knife"), atol=1e-6)
    assert text_vectors(default_space, []).shape == (0, default_space.embed_dim)
