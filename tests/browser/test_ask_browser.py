"""The product page's ask box in a real browser (tools/browser/ask.mjs): under the photo, a
question in English and one in Chinese, each answered on the page with its confidence."""

import pytest

from catalog.models import Product
from catalog.services import demo_catalog_load
from embeddings.zero_shot import zero_shot_cache_clear
from tests.browser.scripts import browser_report


@pytest.fixture
def ask_server(settings, live_server, transactional_db):
    settings.ROOT_URLCONF = "tests.browser.urls"
    zero_shot_cache_clear()
    demo_catalog_load(count=24, seed=0)  # committed: embedded as it would be in the shop
    yield live_server.url
    zero_shot_cache_clear()


def test_a_shopper_asks_about_a_product_photo(ask_server):
    product = Product.objects.filter(images__isnull=False).order_by("pk").first()
    report = browser_report("ask.mjs", ask_server, str(product.pk))
    assert "error" not in report, report["error"]
    assert report["violations"] == []
    assert report["underThePhoto"]
    english, chinese = report["en"], report["zh"]
    assert english["question"] == "What colour is this?"
    assert english["visible"]
    assert english["answer"].startswith("The colour is ")
    assert english["lang"] == "en"
    assert chinese["answer"].startswith(("是的", "不是"))
    assert chinese["lang"] == "zh"
    for answer in (english, chinese):
        assert 0.0 <= float(answer["confidence"].strip("()")) <= 1.0
