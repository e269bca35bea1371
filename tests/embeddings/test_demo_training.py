"""The demo's first model trains in its own process while the shop serves, and goes live
through the zero-downtime switch without a restart of the web server (this test process)."""

import subprocess
import sys
import time

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.urls import reverse

from catalog.models import Product
from embeddings.finetuning import FinetuneOptions
from embeddings.models import EmbeddingSpace, FinetuneRun
from embeddings.selectors import model_warmup
from embeddings.services import finetune_run_create, finetune_runs_abandoned_fail
from embeddings.spaces import space_active
from tests.builders import ROOT, demo_shop_pinned, jpeg_bytes, manage_py_env


def shop_page(client) -> str:
    cache.clear()  # the banner's read is cached for seconds; the test does not wait them out
    response = client.get(reverse("shop-search"), {"q": "t-shirt"})
    assert response.status_code == 200
    return response.content.decode()


@pytest.mark.django_db(transaction=True)
def test_the_demo_model_trains_apart_and_goes_live_without_a_restart(client, settings, tmp_path):
    settings.PHOTO_FEATURES_NEED_TRAINED_MODEL = True
    demo_shop_pinned(40, ids_after=3_000_000)
    random_space = space_active()
    assert random_space.source == EmbeddingSpace.Source.RANDOM
    product = Product.objects.filter(images__isnull=False).first()

    # Before: words match; photo features say they wait instead of answering with noise.
    page = shop_page(client)
    assert "Photo search waits for the shop&#x27;s model" in page
    words = client.get(reverse("shop-search"), {"q": product.title})
    assert product.pk in [hit.product.pk for hit in words.context["matches"]]
    photo = client.post(reverse("shop-photo-search"), {"image": _upload()})
    assert photo.status_code == 503
    assert "wait for the shop&#x27;s model" in photo.content.decode()
    assert client.get(reverse("product-detail", args=[product.pk])).context["similar"] == []

    # The real worker path: `train_demo_model`, as bin/demo starts it, in a process of its own.
    env = manage_py_env(tmp_path)
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "train_demo_model", "--architecture", "shop-micro",
         "--epochs", "3", "--batch-size", "16", "--margin", "-1"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    seen = set()
    deadline = time.monotonic() + 300
    while worker.poll() is None and time.monotonic() < deadline:
        cache.clear()
        warmup = model_warmup()
        seen.add(warmup.state if warmup else "live")
        time.sleep(0.2)
    output = worker.communicate(timeout=30)[0]
    assert worker.returncode == 0, output
    assert seen & {"starting", "training", "finishing"}, seen

    # After: the same process (no restart) answers from the trained space.
    live = space_active()
    assert live.name == "shop-tiny-demo"
    assert live.source == EmbeddingSpace.Source.CHECKPOINT
    random_space.refresh_from_db()
    assert random_space.status == EmbeddingSpace.Status.RETIRED
    assert "Photo search" not in shop_page(client)
    assert client.get(reverse("product-detail", args=[product.pk])).context["similar"]
    photo = client.post(reverse("shop-photo-search"), {"image": _upload()})
    assert photo.status_code == 302
    run = FinetuneRun.objects.get()
    assert run.progress["fraction"] == 1.0
    # The output is the percent bar and the decision; no warning about random weights.
    assert "100/100" in output
    assert "promoted" in output
    assert "WARNING" not in output

    # A second start trains nothing.
    call_command("train_demo_model")
    assert FinetuneRun.objects.count() == 1


def test_a_demo_run_left_by_a_killed_worker_is_recorded_failed(db):
    run = finetune_run_create(options=FinetuneOptions(name="shop-tiny-demo"))
    other = FinetuneRun.objects.create(options={"name": "someone-else"})
    FinetuneRun.objects.filter(pk=other.pk).update(status=FinetuneRun.Status.RUNNING)
    assert finetune_runs_abandoned_fail(name="shop-tiny-demo") == 1
    run.refresh_from_db()
    other.refresh_from_db()
    assert run.status == FinetuneRun.Status.FAILED
    assert other.status == FinetuneRun.Status.RUNNING


def test_the_shop_page_shows_the_training_progress(client, settings, db):
    settings.PHOTO_FEATURES_NEED_TRAINED_MODEL = True
    run = finetune_run_create(options=FinetuneOptions(name="shop-tiny-demo"))
    FinetuneRun.objects.filter(pk=run.pk).update(
        status=FinetuneRun.Status.RUNNING, progress={"phase": "training", "fraction": 0.4}
    )
    page = shop_page(client)
    assert "the shop&#x27;s model is training (40%)" in page
    settings.PHOTO_FEATURES_NEED_TRAINED_MODEL = False
    assert "Photo search" not in shop_page(client)


def _upload():
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile("p.jpg", jpeg_bytes((200, 30, 30), seed=2), "image/jpeg")
