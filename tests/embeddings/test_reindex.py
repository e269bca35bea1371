"""manage.py reindex_embeddings fills a space in batches and resumes after an interruption."""

import pytest
from django.core.management import CommandError, call_command

from embeddings.encoder import ModelSpec
from embeddings.models import CaptionEmbedding, EmbeddingSpace, ImageEmbedding
from embeddings.spaces import space_create
from embeddings.vectors import space_fill
from tests.builders import corrupt_jpeg_bytes, jpeg_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture
def products(make_product):
    """Seven products (eight images, one corrupt) created without running the embed tasks."""
    made = [make_product(title=f"Item {i}", images=[jpeg_bytes(seed=i)]) for i in range(6)]
    made.append(make_product(title="Broken", images=[corrupt_jpeg_bytes(), jpeg_bytes(seed=9)]))
    return made


@pytest.fixture
def new_space(db):
    return space_create(name="tiny-seed3", spec=ModelSpec("shop-tiny", seed=3))


def test_reindex_fills_a_space_in_batches(products, new_space, capsys):
    call_command("reindex_embeddings", space="tiny-seed3", batch_size=3)
    assert ImageEmbedding.objects.filter(space=new_space, vector__isnull=False).count() == 7
    assert ImageEmbedding.objects.filter(space=new_space, vector__isnull=True).count() == 1
    assert CaptionEmbedding.objects.filter(space=new_space).count() == 7
    out = capsys.readouterr().out
    assert "14 vectors computed" in out
    assert "1 images failed" in out
    assert "corrupt" in out


def test_missing_only_computes_only_what_is_missing(products, new_space, capsys):
    first = products[0].images.get()
    call_command("reindex_embeddings", space="tiny-seed3", missing_only=True, batch_size=100)
    updated = ImageEmbedding.objects.get(space=new_space, image=first).updated
    ImageEmbedding.objects.filter(space=new_space, image=first).delete()
    call_command("reindex_embeddings", space="tiny-seed3", missing_only=True)
    assert "1 vectors computed" in capsys.readouterr().out.splitlines()[-1]
    assert ImageEmbedding.objects.get(space=new_space, image=first).updated > updated


def test_interrupted_full_reindex_continues_where_it_stopped(products, new_space):
    batches = []

    def stop_after_two_batches(kind, count):
        batches.append((kind, count))
        if len(batches) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        space_fill(space=new_space, batch_size=3, progress=stop_after_two_batches)
    new_space.refresh_from_db()
    done_image_ids = set(
        ImageEmbedding.objects.filter(space=new_space).values_list("image_id", flat=True)
    )
    assert len(done_image_ids) == 6
    assert new_space.reindex_cursor == {"images": max(done_image_ids)}

    report = space_fill(space=new_space, batch_size=3)
    # Only the two remaining images and the seven products' captions were computed.
    assert report.embedded == 1 + 7
    assert len(report.failed) == 1
    assert ImageEmbedding.objects.filter(space=new_space).count() == 8
    new_space.refresh_from_db()
    assert new_space.reindex_cursor == {}


def test_unknown_space_is_a_clear_error(db):
    with pytest.raises(CommandError, match="no embedding space named 'nope'"):
        call_command("reindex_embeddings", space="nope")
    with pytest.raises(CommandError, match="at least 1"):
        call_command("reindex_embeddings", batch_size=0)
    assert not EmbeddingSpace.objects.filter(name="nope").exists()
