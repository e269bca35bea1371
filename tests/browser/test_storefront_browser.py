"""The first ten minutes in a real browser (tools/browser/storefront.mjs): the home page, a
phone's results, a photo search, a product page and the admin's report pages, each saved as
a screenshot under the test's tmp dir and checked for what is on the screen."""

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from tests.browser.scripts import browser_report
from tests.builders import COLOURS, finetune_run_reported, jpeg_bytes, search_logged

ZERO_RESULT_QUERIES = ["coffee", "bicycle pump", "garden hose", "umbrella", "coffee beans"]


@pytest.fixture
def first_ten_minutes(settings, live_server, transactional_db, catalog_shop, default_space):
    """The small shop, a finished fine-tune run, and today's searches that found nothing."""
    settings.SEARCH_SIMILARITY_FLOOR = 0.99  # word matches only: the random model's are noise
    settings.ROOT_URLCONF = "tests.browser.urls"
    get_user_model().objects.create_superuser("admin", "admin@example.com", "admin-pass")
    run = finetune_run_reported(source=default_space)
    for query in ZERO_RESULT_QUERIES:
        search_logged(day=timezone.localdate(), query=query, shown=[], space=default_space)
    return live_server.url, run


def test_the_storefront_and_the_admin_pages_look_right(first_ten_minutes, tmp_path):
    base_url, run = first_ten_minutes
    photo = tmp_path / "shoes.jpg"
    photo.write_bytes(jpeg_bytes(COLOURS[4], seed=4))  # the black shoes' own photo
    shots = tmp_path / "screenshots"
    shots.mkdir()
    report = browser_report("storefront.mjs", base_url, str(photo), str(shots), str(run.pk))
    assert "error" not in report, report["error"]
    assert {p.name for p in shots.iterdir()} >= {
        f"{name}.png"
        for name in (
            "home",
            "phone-results",
            "photo-search",
            "product",
            "admin-spaces",
            "admin-finetune-run",
            "admin-insights",
        )
    }

    home = report["home"]
    assert home["categories"] == ["Clothing 4 products", "Shoes 2 products"]
    assert home["heading"] == "New in"
    assert home["cards"] == 6
    assert home["imagesLoaded"]
    assert home["firstCard"]["bottom"] <= home["viewport"]  # products on the first screen
    assert report["category"] == "4 products in Clothing"
    assert report["filtersOpenWide"]  # beside the results on a wide screen

    phone = report["phone"]
    assert not phone["filtersOpen"]
    assert phone["filtersOpenAfterTap"]
    assert phone["firstCard"]["top"] + phone["firstCard"]["height"] / 2 < phone["viewport"]
    assert not phone["overflows"]

    photo_search = report["photo"]
    assert photo_search["loaded"]
    assert photo_search["photo"]["bottom"] <= photo_search["firstCard"]["top"]  # above results
    assert report["product"]["photo"]["width"] >= 400

    assert report["spaces"]["width"] <= 1280
    assert not report["spaces"]["cut"]  # every column fits beside the filters
    assert not [h["text"] for h in report["spaces"]["headers"] if h["cut"]]

    finetune = report["run"]
    assert finetune["gates"][1][:2] == ["catalog recall", "passed"]
    assert all(cell for row in finetune["gates"] for cell in row)  # no empty cell
    assert "text→image R@1" in finetune["headers"]
    assert "98 photos" in finetune["text"]
    assert "98.44" not in finetune["text"]
    assert finetune["options"] == ["epochs: 4", "batch size: 32"]
    assert finetune["width"] <= 1280

    insights = report["insights"]
    today = timezone.localdate()
    assert insights["end"] == today.isoformat()
    assert insights["start"] == (today - timezone.timedelta(days=29)).isoformat()
    assert insights["summary"].startswith(f"{insights['start']} – {insights['end']}")
    assert len(insights["themes"]) >= 4  # unrelated queries are not one theme
