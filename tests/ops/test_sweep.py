"""The sweep: what has no current vector in the active space is queued again, nothing else."""

import pytest
from django.core.files.base import ContentFile

from catalog.models import ProductImage
from catalog.services import product_image_fill_metadata
from embeddings.models import CaptionEmbedding, ImageEmbedding
from embeddings.spaces import space_active
from embeddings.tasks import sweep_missing_embeddings
from tests.builders import corrupt_jpeg_bytes, jpeg_bytes

pytestmark = pytest.mark.django_db


def test_sweep_queues_missing_and_stale_vectors_but_not_failures(
    make_product, embed_on_commit, django_capture_on_commit_callbacks
):
    with embed_on_commit():
        done = make_product(images=[jpeg_bytes(seed=1)])
        failed = make_product(images=[corrupt_jpeg_bytes()])
        replaced = make_product(images=[jpeg_bytes(seed=2)])
    # Lost messages: these were committed, but their tasks never ran.
    with django_capture_on_commit_callbacks(execute=False):
        lost = make_product(images=[jpeg_bytes(seed=3), jpeg_bytes(seed=4)])
    # A replaced photo: its vector was computed from the old content.
    image = replaced.images.get()
    image.file.save("new.jpg", ContentFile(jpeg_bytes(seed=5)), save=False)
    product_image_fill_metadata(image)
    image.save()

    space = space_active()
    with embed_on_commit():
        report = sweep_missing_embeddings.delay().get()
    assert report == {"images": 3, "products": 1}  # lost x2 + replaced; lost's captions

    rows = {row.image_id: row for row in ImageEmbedding.objects.filter(space=space)}
    for img in ProductImage.objects.filter(product__in=[done, lost, replaced]):
        assert rows[img.pk].vector is not None
        assert rows[img.pk].source_sha256 == img.sha256
    assert CaptionEmbedding.objects.filter(space=space, product=lost).exists()
    failure = rows[failed.images.get().pk]
    assert failure.vector is None
    assert "truncated" in failure.error

    with embed_on_commit():
        assert sweep_missing_embeddings.delay().get() == {"images": 0, "products": 0}


def test_sweep_queues_at_most_its_limit(make_product, settings, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        for seed in range(3):
            make_product(images=[jpeg_bytes(seed=seed)])
    settings.EMBED_SWEEP_MAX_ITEMS = 2
    with django_capture_on_commit_callbacks(execute=False) as queued:
        assert sweep_missing_embeddings.delay().get() == {"images": 2, "products": 2}
    # One task per batch of images and of products, never one per row.
    assert sorted(callback.__qualname__ for callback in queued) == [
        "embeddings.tasks.embed_captions.delay",
        "embeddings.tasks.embed_images.delay",
    ]
