"""Fine-tuning on the catalog: really learns, promotes only past the margin, fails clearly."""

import re
from datetime import timedelta

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from catalog.services import demo_catalog_load
from embeddings.admin import training_report
from embeddings.catalog_pairs import catalog_kind_examples, catalog_pairs
from embeddings.encoder import file_sha256
from embeddings.finetuning import FinetuneError, FinetuneOptions, finetune_run_execute
from embeddings.models import EmbeddingSpace, FinetuneRun, ImageEmbedding
from embeddings.services import (
    FINETUNE_RUN_STALE_AFTER,
    FinetuneRunInProgress,
    finetune_run_create,
)
from embeddings.spaces import space_active, space_encoder
from embeddings.training import gibberish_queries, shopper_queries
from embeddings.training.captions import KIND_CAPTION_WEIGHT
from search.pipeline import product_search_by_text
from search.query import query_analyse
from tests.builders import demo_shop_pinned

pytestmark = pytest.mark.django_db


@pytest.fixture
def demo_shop(settings):
    # A quarter for validation, so a small shop still gives a meaningful recall.
    settings.FINETUNE_VAL_FRACTION = 0.25
    demo_shop_pinned(64, ids_after=1_000_000)
    return space_active()


def test_training_products_also_learn_their_category_names(demo_shop):
    """Kind captions: each training product's photos with its category's names, English
    and Chinese, weighted like a title; none for validation products."""
    from catalog.models import Product
    from embeddings.extensions import catalog_images_by_product

    pairs = catalog_pairs(image_size=64)
    images = catalog_images_by_product(pairs.train)
    examples = catalog_kind_examples(images)
    by_product: dict = {}
    for example in examples:
        by_product.setdefault(example.product_key, set()).add(example.text)
        assert example.weight == KIND_CAPTION_WEIGHT
        assert any(example.image is image for image in images[example.product_key])
    assert set(by_product) == set(images)
    for product in Product.objects.filter(pk__in=by_product).select_related("category"):
        assert by_product[product.pk] == {product.category.name, product.category.names["zh"]}
    dress = Product.objects.filter(pk__in=by_product, category__name="Dresses").first()
    assert by_product[dress.pk] == {"Dresses", "连衣裙"}


def run_finetune(**options) -> FinetuneRun:
    run = FinetuneRun.objects.create(options={"batch_size": 32, "seed": 0, **options})
    return finetune_run_execute(run=run)


def test_training_learns_and_a_winner_is_promoted(demo_shop, capsys):
    # shop-micro (a 3.5M-parameter config, mostly its token table) trains in seconds; the
    # switch from a 128-d to a 32-d space is part of what is tested.
    call_command(
        "finetune_clip",
        scratch=True,
        architecture="shop-micro",
        epochs=30,
        batch_size=16,
        lr=3e-3,
        margin=0.0,
        name="trained",
    )
    out = capsys.readouterr().out
    assert "mean_recall" in out
    assert "promoted" in out

    space = EmbeddingSpace.objects.get(name="trained")
    metrics = space.metrics
    losses = [epoch["train_loss"] for epoch in metrics["epochs"]]
    assert losses[-1] < losses[0] * 0.9
    assert metrics["after"]["mean_recall"] > metrics["active_before"]["mean_recall"]
    assert metrics["training"]["val_products"] > 5
    assert metrics["training"]["train_pairs"] > 100
    # Saved as safetensors with its checksum; promoted, filled and searchable.
    assert space.checkpoint.endswith(".safetensors")
    assert file_sha256(space.checkpoint) == space.checkpoint_sha256
    assert space_active() == space
    assert space.parent == demo_shop
    assert ImageEmbedding.objects.filter(space=space, vector__isnull=False).exists()
    assert product_search_by_text(query="red t-shirt", limit=5).space == space
    demo_shop.refresh_from_db()
    assert demo_shop.status == EmbeddingSpace.Status.RETIRED

    # The similarity floor is calibrated on this model: 98% of short validation queries
    # ("red t-shirt") are at least that similar to their own product's photos.
    encoder = space_encoder(space)
    val = catalog_pairs(image_size=encoder.image_size).val
    short = shopper_queries(val)
    assert "red t-shirt" in short or any(len(q.split()) == 2 for q in short)
    similarity = (encoder.encode_images([e.image for e in val]) * encoder.encode_texts(short)).sum(
        axis=1
    )
    assert space.similarity_floor == metrics["similarity_floor"]
    assert np.mean(similarity >= space.similarity_floor - 1e-3) >= 0.97

    # Nonsense stays empty: queries with no catalog word get a floor calibrated on random
    # letter strings, which strings never seen in calibration rarely reach.
    calibration = metrics["calibration"]
    assert space.unknown_words_floor == calibration["unknown_words_floor"]
    assert space.unknown_words_floor >= space.similarity_floor
    assert calibration["gibberish_photos_per_query_at_unknown_words_floor"] <= 0.25
    assert calibration["gibberish_photos_per_query_at_floor"] > 50  # the old floor let them in
    fresh = gibberish_queries(40, seed=123)  # strings the calibration never saw
    assert not any(query_analyse(query=q).in_vocabulary for q in fresh)
    found = [product_search_by_text(query=q, limit=50).count for q in fresh]
    # Estimated on 37 validation photos of a 64-product shop: most find nothing, none many.
    assert np.mean([n == 0 for n in found]) >= 0.7
    assert max(found) <= 10  # 2 before the demo had variants (70 pairs), 9 with them (74)
    report = training_report(metrics)
    assert "Similarity floors" in report
    assert f"{space.unknown_words_floor:.3f}" in report


def test_a_model_below_the_margin_stays_a_candidate(demo_shop):
    run = run_finetune(epochs=1, margin=1.0)
    assert run.status == FinetuneRun.Status.SUCCEEDED
    assert not run.result["promoted"]
    assert "below the margin of 1.000" in run.result["decision"]
    assert run.space.status == EmbeddingSpace.Status.CANDIDATE
    assert space_active() == demo_shop
    assert not ImageEmbedding.objects.filter(space=run.space).exists()


def test_too_few_pairs_is_a_clear_error_and_changes_nothing(db):
    demo_catalog_load(count=3, seed=0, embed=False)
    active = space_active()
    run = FinetuneRun.objects.create(options={"epochs": 1})
    with pytest.raises(FinetuneError, match="too few pairs to train on"):
        finetune_run_execute(run=run)
    run.refresh_from_db()
    assert run.status == FinetuneRun.Status.FAILED
    assert "too few pairs" in run.error
    assert list(EmbeddingSpace.objects.all()) == [active]
    assert space_active() == active


def test_finetune_command_refuses_bad_options(db):
    with pytest.raises(CommandError, match="no embedding space named 'ghost'"):
        call_command("finetune_clip", source="ghost")
    with pytest.raises(CommandError, match="--epochs must be at least 1"):
        call_command("finetune_clip", epochs=0)
    with pytest.raises(CommandError, match="--lr must be positive"):
        call_command("finetune_clip", lr=-1.0)
    with pytest.raises(CommandError, match="no embedding space named 'ghost'"):
        call_command("activate_space", "ghost")


def brute_force_recall(image_vecs, image_owner, text_vecs, text_owner, k):
    """Recall@K by plain loops: a query hits when any item of its product is in its top K."""

    def recall(queries, query_owner, items, item_owner):
        hits = []
        for vector, owner in zip(queries, query_owner, strict=True):
            scores = items @ vector
            top = sorted(range(len(items)), key=lambda i: -scores[i])[:k]
            hits.append(any(item_owner[i] == owner for i in top))
        return sum(hits) / len(hits)

    return (
        recall(text_vecs, text_owner, image_vecs, image_owner),
        recall(image_vecs, image_owner, text_vecs, text_owner),
    )


def test_evaluation_matches_brute_force_recall(demo_shop, capsys):
    call_command("evaluate_clip")
    assert "mean_recall" in capsys.readouterr().out
    stored = EmbeddingSpace.objects.get(pk=demo_shop.pk).metrics["evaluation"]

    encoder = space_encoder(demo_shop)
    val = catalog_pairs(image_size=encoder.image_size).val
    texts = sorted({(e.product_key, e.text) for e in val})
    images, image_owner, seen = [], [], set()
    for example in val:
        if id(example.image) not in seen:
            seen.add(id(example.image))
            images.append(example.image)
            image_owner.append(example.product_key)
    image_vecs = encoder.encode_images(images)
    text_vecs = encoder.encode_texts([text for _, text in texts])
    text_owner = [owner for owner, _ in texts]
    for k in (1, 5, 10):
        t2i, i2t = brute_force_recall(image_vecs, image_owner, text_vecs, text_owner, k)
        assert stored[f"t2i_r{k}"] == pytest.approx(t2i, abs=1e-9)
        assert stored[f"i2t_r{k}"] == pytest.approx(i2t, abs=1e-9)
    assert stored["mean_recall"] == pytest.approx(
        np.mean([stored[f"{d}_r{k}"] for d in ("t2i", "i2t") for k in (1, 5, 10)])
    )


def test_admin_button_runs_a_finetune_and_shows_the_report(
    demo_shop, admin_client, settings, django_capture_on_commit_callbacks
):
    settings.FINETUNE_ADMIN_OPTIONS = {"epochs": 1, "batch_size": 32, "no_promote": True}
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(reverse("admin:embeddings_embeddingspace_finetune"))
    run = FinetuneRun.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:embeddings_finetunerun_change", args=[run.pk])
    assert run.status == FinetuneRun.Status.SUCCEEDED
    page = admin_client.get(response["Location"]).content.decode()
    assert "text→image R@1" in page
    assert "<svg" in page
    assert "promotion was not asked for" in page
    # A finished run is a record: shown read-only, and each chart once.
    assert 'name="_save"' not in page
    assert page.count("validation mean recall by epoch") == 1
    assert admin_client.post(response["Location"], {}).status_code == 403
    listing = admin_client.get(reverse("admin:embeddings_embeddingspace_changelist")).content
    assert b"Fine-tune on catalog" in listing


def test_only_staff_can_start_a_finetune(client, db):
    response = client.post(reverse("admin:embeddings_embeddingspace_finetune"))
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
    assert not FinetuneRun.objects.exists()


# --- one run at a time ---------------------------------------------------------------------


def test_a_run_cannot_start_while_another_is_queued_or_running(db):
    first = finetune_run_create(options=FinetuneOptions(epochs=1))
    for status in (FinetuneRun.Status.QUEUED, FinetuneRun.Status.RUNNING):
        FinetuneRun.objects.filter(pk=first.pk).update(status=status)
        with pytest.raises(FinetuneRunInProgress, match=rf"Fine-tune #{first.pk} is {status} "):
            finetune_run_create(options=FinetuneOptions(epochs=1))
    assert FinetuneRun.objects.count() == 1
    FinetuneRun.objects.filter(pk=first.pk).update(status=FinetuneRun.Status.FAILED)
    second = finetune_run_create(options=FinetuneOptions(epochs=1))
    assert second.status == FinetuneRun.Status.QUEUED


def test_a_run_whose_worker_died_long_ago_no_longer_blocks(db):
    dead = finetune_run_create(options=FinetuneOptions(epochs=1))
    FinetuneRun.objects.filter(pk=dead.pk).update(
        status=FinetuneRun.Status.RUNNING,
        created=timezone.now() - FINETUNE_RUN_STALE_AFTER - timedelta(minutes=1),
    )
    assert finetune_run_create(options=FinetuneOptions(epochs=1)).pk != dead.pk


def test_admin_button_says_a_run_is_already_going(admin_client):
    running = finetune_run_create(options=FinetuneOptions(epochs=1))
    response = admin_client.post(reverse("admin:embeddings_embeddingspace_finetune"), follow=True)
    assert response.redirect_chain[0][0] == reverse("admin:embeddings_finetunerun_changelist")
    messages = [str(m) for m in response.context["messages"]]
    assert messages == [
        f"Fine-tune #{running.pk} is queued (started {running.created:%Y-%m-%d %H:%M} UTC): "
        "one run at a time, so start another when it has finished."
    ]
    assert FinetuneRun.objects.count() == 1


def test_finetune_command_refuses_while_a_run_is_queued(db):
    queued = finetune_run_create(options=FinetuneOptions(epochs=1))
    with pytest.raises(CommandError, match=rf"Fine-tune #{queued.pk} is queued"):
        call_command("finetune_clip", epochs=1, verbosity=0)
    assert FinetuneRun.objects.count() == 1


def test_finetune_command_shows_one_bar_with_a_fixed_total_and_counts_epochs_once(
    demo_shop, capsys
):
    call_command(
        "finetune_clip",
        scratch=True,
        architecture="shop-micro",
        epochs=3,
        batch_size=16,
        no_promote=True,
        name="counted",
    )
    captured = capsys.readouterr()
    # tqdm redraws the one bar in place ("\r"): every drawing has the same total, 100 %.
    totals = set(re.findall(r"\| *\d+/(\d+) \[", captured.err))
    assert totals == {"100"}, captured.err
    assert "100/100" in captured.err
    # The last epoch line and the summary name the same number of epochs.
    assert re.findall(r"epoch (\d+)", captured.out)[-1] == "3"
    assert "3 epochs," in captured.out
