"""Fanned-out fills on a real Celery app with the in-memory broker: chunks written once,
resumed from the database, queued without waiting, shared by a space's activation.

tests/ops/test_fanout.py does the same with worker processes on a real Redis.
"""

from datetime import timedelta

import pytest
from celery.contrib.testing.worker import start_worker
from django.core.management import CommandError, call_command
from django.utils import timezone

from catalog.models import ProductImage
from embeddings.encoder import CheckpointError, ModelSpec
from embeddings.models import CaptionEmbedding, EmbeddingSpace, ImageEmbedding, ReindexChunk
from embeddings.reindex import (
    REINDEX_CHUNK_MAX_ERRORS,
    reindex_chunk_run,
    reindex_chunks_requeue,
    reindex_plan,
    space_activate_fanout,
)
from embeddings.spaces import space_active, space_create
from embeddings.tasks import reindex_chunk
from embeddings.vectors import image_embeddings_compute
from shop_search.celery import app, queued_messages
from tests.builders import corrupt_jpeg_bytes, jpeg_bytes

Status = ReindexChunk.Status


@pytest.fixture
def broker(settings):
    """A configured broker (Celery's in-memory transport): fills fan out instead of running
    in process. Nothing consumes the queue unless a test starts a worker."""
    settings.REINDEX_POLL_SECONDS = 0.05
    app.conf.task_always_eager = False
    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge("embed")
    try:
        yield
    finally:
        app.conf.task_always_eager = True
        with app.connection_for_write() as conn:
            conn.default_channel.queue_purge("embed")


@pytest.fixture
def catalog(make_product):
    """Five products, six images (one corrupt), created without running the embed tasks."""
    made = [make_product(title=f"Item {i}", images=[jpeg_bytes(seed=i)]) for i in range(4)]
    made.append(make_product(title="Broken", images=[corrupt_jpeg_bytes(), jpeg_bytes(seed=9)]))
    return made


@pytest.fixture
def new_space(db):
    return space_create(name="tiny-seed3", spec=ModelSpec("shop-tiny", seed=3))


def image_rows(space) -> dict[int, tuple]:
    return {
        row.image_id: (row.vector is not None, row.error, row.updated)
        for row in ImageEmbedding.objects.filter(space=space)
    }


def chunks_of(space, kind=None):
    chunks = ReindexChunk.objects.filter(space=space).order_by("pk")
    return chunks.filter(kind=kind) if kind else chunks


@pytest.mark.django_db
def test_a_chunk_that_runs_twice_writes_each_vector_once(catalog, new_space):
    plan = reindex_plan(space=new_space, missing_only=False, chunk_size=4)
    assert (plan.chunks, plan.resumed) == (4, False)  # images 4 + 2, captions 4 + 1
    for chunk in chunks_of(new_space):
        reindex_chunk.apply(args=[chunk.pk]).get()
    first = image_rows(new_space)
    assert len(first) == 6
    assert sorted(has_vector for has_vector, _, _ in first.values()) == [False] + [True] * 5
    assert CaptionEmbedding.objects.filter(space=new_space).count() == 5

    # The same message again (a duplicate, a redelivery): the chunk is done, nothing runs.
    chunk = chunks_of(new_space, "images").first()
    assert reindex_chunk.apply(args=[chunk.pk]).get()["skipped"] == "done"
    # Its worker died after writing and before saying so: a stale claim, taken over.
    ReindexChunk.objects.filter(pk=chunk.pk).update(
        status=Status.RUNNING, claimed_at=timezone.now() - timedelta(hours=1)
    )
    report = reindex_chunk.apply(args=[chunk.pk]).get()
    assert (report["embedded"], report["skipped"]) == (0, 4)
    assert image_rows(new_space) == first  # not one vector written again
    chunk.refresh_from_db()
    assert (chunk.status, chunk.attempts) == (Status.DONE, 2)

    # While a live worker holds a chunk, a second message for it leaves it to that worker.
    ReindexChunk.objects.filter(pk=chunk.pk).update(
        status=Status.RUNNING, claimed_at=timezone.now(), claim_token="the-other-task"
    )
    assert reindex_chunk_run(chunk_id=chunk.pk, token="this-task")["skipped"] == (
        "claimed by another worker"
    )
    assert reindex_chunk_run(chunk_id=10**9, token="this-task")["skipped"] == "gone"


@pytest.mark.django_db
def test_missing_only_plans_the_ids_without_vectors(catalog, new_space):
    first = catalog[0].images.get()
    image_embeddings_compute(space=new_space, image_ids=[first.pk])
    reindex_plan(space=new_space, missing_only=True, chunk_size=100)
    images, captions = chunks_of(new_space, "images").get(), chunks_of(new_space, "captions").get()
    all_images = sorted(ProductImage.objects.values_list("pk", flat=True))
    assert images.ids == [pk for pk in all_images if pk != first.pk]
    assert captions.ids == [product.pk for product in catalog]
    # Without a broker there are no workers to leave the work to.
    with pytest.raises(CommandError, match="needs a broker"):
        call_command("reindex_embeddings", space="tiny-seed3", no_wait=True)


@pytest.mark.django_db
def test_no_wait_returns_with_the_chunks_queued(catalog, new_space, broker, capsys):
    call_command("reindex_embeddings", space="tiny-seed3", chunk_size=2, no_wait=True)
    out = capsys.readouterr().out
    assert "6 chunks of up to 2 ids queued on the embed queue" in out  # 3 image + 3 caption
    assert queued_messages("embed") == 6
    chunks = chunks_of(new_space)
    assert [c.status for c in chunks] == [Status.PENDING] * 6
    assert all(c.queued_at is not None for c in chunks)
    assert not ImageEmbedding.objects.filter(space=new_space).exists()

    # A worker took one and died: once its claim is stale, it is queued again.
    dead = chunks.first()
    ReindexChunk.objects.filter(pk=dead.pk).update(
        status=Status.RUNNING, claimed_at=timezone.now() - timedelta(hours=1)
    )
    assert reindex_chunks_requeue(space=new_space, queue_empty=False) == [dead.pk]
    dead.refresh_from_db()
    assert dead.status == Status.PENDING
    assert queued_messages("embed") == 7


@pytest.mark.django_db(transaction=True)
def test_an_interrupted_reindex_resumes_from_the_database(broker, capsys, make_product):
    for i in range(4):
        make_product(title=f"Item {i}", images=[jpeg_bytes(seed=i), jpeg_bytes(seed=20 + i)])
    space = space_create(name="tiny-seed3", spec=ModelSpec("shop-tiny", seed=3))
    # A reindex whose messages were lost (Redis flushed, the command interrupted) after
    # workers had done two of its chunks.
    reindex_plan(space=space, missing_only=False, chunk_size=3)
    done = list(chunks_of(space, "images")[:2])
    for chunk in done:
        reindex_chunk_run(chunk_id=chunk.pk, token=f"earlier-{chunk.pk}")
    before = image_rows(space)
    assert len(before) == 6

    with start_worker(
        app, pool="solo", queues=["embed"], perform_ping_check=False, shutdown_timeout=30
    ):
        call_command("reindex_embeddings", space="tiny-seed3", chunk_size=3)
    out = capsys.readouterr().out
    assert "Resuming the unfinished reindex of tiny-seed3 (every vector): 2 of 5 chunks" in out
    assert "3 chunks of up to 3 ids queued" in out  # the pending ones, not the done ones
    # The report covers the whole reindex: 8 images and 4 products' captions.
    assert "tiny-seed3: 12 vectors computed, 0 up to date, 0 images failed" in out
    after = image_rows(space)
    assert len(after) == 8
    assert all(has_vector for has_vector, _, _ in after.values())
    assert {image: after[image] for image in before} == before  # done chunks were not redone
    assert CaptionEmbedding.objects.filter(space=space).count() == 4
    assert [c.attempts for c in chunks_of(space)] == [1] * 5
    assert {c.status for c in chunks_of(space)} == {Status.DONE}


@pytest.mark.django_db
def test_a_chunk_that_keeps_failing_stops_the_command_with_its_error(catalog, broker, capsys):
    broken = EmbeddingSpace.objects.create(
        name="broken",
        architecture="shop-tiny",
        source=EmbeddingSpace.Source.CHECKPOINT,
        checkpoint="/nonexistent/model.safetensors",
        checkpoint_sha256="0" * 64,
        embed_dim=128,
    )
    reindex_plan(space=broken, missing_only=False, chunk_size=100)
    chunk = chunks_of(broken, "images").get()
    for _ in range(REINDEX_CHUNK_MAX_ERRORS):
        with pytest.raises(CheckpointError):
            reindex_chunk.apply(args=[chunk.pk]).get()
    chunk.refresh_from_db()
    assert (chunk.status, chunk.attempts) == (Status.PENDING, REINDEX_CHUNK_MAX_ERRORS)
    assert "CheckpointError" in chunk.report["error"]
    with pytest.raises(CommandError, match="keep failing"):
        call_command("reindex_embeddings", space="broken")
    out = capsys.readouterr().out
    assert f"chunk {chunk.pk} failed (it is tried again): CheckpointError" in out
    assert not ImageEmbedding.objects.filter(space=broken).exists()


@pytest.mark.django_db
def test_activation_fills_in_chunks_then_switches(catalog, new_space, broker):
    previous = space_active()
    seen = []

    def during_fill(kind, count):
        seen.append((kind, count, space_active().name))

    space_activate_fanout(space=new_space, progress=during_fill)
    new_space.refresh_from_db()
    assert new_space.status == EmbeddingSpace.Status.ACTIVE
    previous.refresh_from_db()
    assert previous.status == EmbeddingSpace.Status.RETIRED
    # Every chunk was done before the switch: search answered from the old space meanwhile.
    assert {name for _, _, name in seen} == {previous.name}
    assert sum(count for kind, count, _ in seen if kind == "images") == 6
    chunks = list(chunks_of(new_space))
    assert len(chunks) == 2  # images, captions
    assert {c.status for c in chunks} == {Status.DONE}
    assert all(c.missing_only and "filling tiny-seed3" in c.claimed_by for c in chunks)
    # The chunks went to the embed queue too; with no worker, this process did them all.
    assert queued_messages("embed") == len(chunks)
    assert len(image_rows(new_space)) == 6


@pytest.mark.django_db(transaction=True)
def test_a_worker_and_the_activation_share_the_fill(broker, settings, make_product):
    settings.REINDEX_CHUNK_SIZE = 2
    app.conf.task_always_eager = True  # the uploads are embedded here, not by the worker
    for i in range(5):
        make_product(title=f"Item {i}", images=[jpeg_bytes(seed=i), jpeg_bytes(seed=30 + i)])
    app.conf.task_always_eager = False
    previous = space_active()
    candidate = space_create(name="candidate", spec=ModelSpec("shop-tiny", seed=5))
    with start_worker(
        app, pool="solo", queues=["embed"], perform_ping_check=False, shutdown_timeout=30
    ):
        space_activate_fanout(space=candidate)
    assert space_active() == candidate
    previous.refresh_from_db()
    assert previous.status == EmbeddingSpace.Status.RETIRED
    chunks = list(chunks_of(candidate))
    assert len(chunks) == 5 + 3  # 10 images and 5 products, two a chunk
    assert {c.status for c in chunks} == {Status.DONE}
    # Whoever took a chunk, each was done once and each vector written once.
    assert [c.attempts for c in chunks] == [1] * 8
    rows = image_rows(candidate)
    assert len(rows) == 10
    assert all(has_vector for has_vector, _, _ in rows.values())
    assert CaptionEmbedding.objects.filter(space=candidate).count() == 5
