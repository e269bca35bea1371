"""The shop in a real browser: headless Chromium (Debian's) driven by playwright-core.

`bin/test` installs both (`apt-get install chromium`, `npm ci` here); the test runs the
scenario in tools/browser/shop.mjs against a live server with a small catalog and checks its report.
"""

import pytest

from tests.browser.scripts import browser_report
from tests.builders import COLOURS, jpeg_bytes


@pytest.fixture
def shop_server(settings, live_server, transactional_db, catalog_shop):
    # Only word matches in text search: the tiny random model's image-only hits are noise.
    settings.SEARCH_SIMILARITY_FLOOR = 0.99
    settings.ROOT_URLCONF = "tests.browser.urls"
    return live_server.url


def test_a_shopper_searches_filters_searches_by_photo_and_picks_suggestions(shop_server, tmp_path):
    photo = tmp_path / "boots.jpg"
    photo.write_bytes(jpeg_bytes(COLOURS[4], seed=4))  # the black shoes' own photo
    report = browser_report("shop.mjs", shop_server, str(photo))
    assert "error" not in report, report["error"]

    query = report["query"]
    assert query["summary"] == "2 products for “striped”"
    assert sorted(r["sku"] for r in query["results"]) == ["DRS-200", "TEE-100"]
    assert all(r["imageLoaded"] for r in query["results"])
    assert "category:clothing:(2)" in query["facets"]
    assert "brand:Acme:(2)" in query["facets"]

    assert report["category"]["summary"] == "1 product for “striped”"
    assert [r["title"] for r in report["category"]["results"]] == ["Red striped T-Shirt"]
    assert [r["sku"] for r in report["inStock"]["results"]] == ["TEE-100"]  # the dress is not

    photo_results = report["photo"]["results"]
    assert report["photo"]["summary"] == "6 products look like your photo"
    assert photo_results[0]["sku"] == "SHO-300"
    assert photo_results[0]["imageLoaded"]
    assert report["product"]["title"] == "Black leather shoes"
    assert len(report["product"]["similar"]) == 5
    assert "SHO-300" not in report["product"]["similar"]

    suggest = report["suggest"]
    assert suggest["expanded"] == "true"
    assert suggest["options"][:2] == ["Red striped T-Shirt", "Red striped summer dress"]
    assert suggest["selected"] == "Red striped summer dress"  # two arrows down
    assert suggest["activeIsSelected"]
    assert suggest["box"] == "Red striped summer dress"
    assert suggest["summary"] == "1 product for “Red striped summer dress”"
    assert [r["sku"] for r in suggest["results"]] == ["DRS-200"]
    assert suggest["afterEscape"] == {"expanded": "false", "hidden": True, "box": "blu"}

    typo = report["typo"]
    assert typo["corrected"] == (
        "Showing results for striped shirt. Search instead for stripped shirt"
    )
    assert [r["sku"] for r in typo["results"]] == ["TEE-100"]
    # As typed, "stripped" is a word no product has: left out, the shirts match.
    assert typo["original"] == "2 products for “stripped shirt”"

    phone = report["phone"]
    assert not phone["overflows"]
    assert phone["cards"] == 2
    assert phone["filtersVisible"]
    assert phone["searchBoxWidth"] > 150
