"""embed_images through a real Celery worker (in-process thread, in-memory broker)."""

import time

import pytest
from celery.contrib.testing.worker import start_worker

from embeddings.models import CaptionEmbedding, ImageEmbedding
from shop_search.celery import app
from tests.builders import corrupt_jpeg_bytes, jpeg_bytes


@pytest.fixture
def celery_worker():
    app.conf.task_always_eager = False
    try:
        with start_worker(
            app,
            pool="solo",
            queues=["embed", "default"],
            perform_ping_check=False,
            shutdown_timeout=30,
        ):
            yield
    finally:
        app.conf.task_always_eager = True


def wait_for(condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.django_db(transaction=True)
def test_upload_is_embedded_by_a_real_worker(make_product, celery_worker):
    product = make_product(
        title="Green wool scarf", images=[jpeg_bytes((20, 160, 20), seed=1), corrupt_jpeg_bytes()]
    )
    # The commit queued the tasks on the broker; the worker thread picks them up.
    rows = ImageEmbedding.objects.filter(image__product=product)
    assert wait_for(
        lambda: rows.count() == 2 and CaptionEmbedding.objects.filter(product=product).exists()
    )
    assert sorted((row.vector is None, bool(row.error)) for row in rows) == [
        (False, False),
        (True, True),
    ]
