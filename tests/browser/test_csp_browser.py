"""The Content-Security-Policy in a real browser: the admin, the Swagger UI at /api/docs/
and the shop page keep working, and the browser reports no violation on any of them.

tools/browser/pages.mjs drives headless Chromium (bin/test installs it) and reports.
"""

from django.contrib.auth.models import User

from catalog.models import ImportJob
from tests.browser.scripts import browser_report


def test_admin_api_docs_and_shop_work_under_the_policy(
    live_server, transactional_db, catalog_shop, settings
):
    settings.SEARCH_SIMILARITY_FLOOR = 0.99  # word matches only: the tiny model's are noise
    admin = User.objects.create_superuser("boss", password="Boss-Password-2024")
    job = ImportJob.objects.create(
        format="csv", source_name="p.csv", status=ImportJob.Status.RUNNING, requested_by=admin
    )
    report = browser_report("pages.mjs", live_server.url, "boss", "Boss-Password-2024", str(job.pk))
    assert "error" not in report, report["error"]
    assert report["violations"] == []
    assert report["adminHome"] == "Django administration"
    assert report["productList"] == report["productAdd"] == report["importPage"] == 200
    assert report["imageForms"] == 2  # the admin's inline-formset script ran
    assert report["importPolled"]  # the nonce let the progress script run
    assert report["docs"] == 200
    assert report["operations"] >= 8  # Swagger UI rendered the schema's operations
    assert report["shop"] == 200
    assert report["headerBackground"] == "rgb(255, 255, 255)"  # the inline <style> applied
    assert report["cards"] == 2
