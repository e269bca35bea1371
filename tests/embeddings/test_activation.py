"""Switching the active space: filled first, index built, one atomic swap, rollback works."""

import pytest
from django.db import connection

from embeddings.encoder import CheckpointError, ModelSpec
from embeddings.models import EmbeddingSpace, ImageEmbedding
from embeddings.spaces import space_active, space_create
from embeddings.vectors import space_activate
from search.pipeline import product_search_by_text
from tests.builders import jpeg_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture
def shop(make_product, embed_on_commit):
    with embed_on_commit():
        for i in range(6):
            make_product(title=f"Item {i}", images=[jpeg_bytes(seed=i), jpeg_bytes(seed=10 + i)])
    return space_active()


def index_names() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname FROM pg_indexes WHERE indexname LIKE 'emb_%%_hnsw_s%%'")
        return {row[0] for row in cursor.fetchall()}


def test_search_answers_from_the_old_space_until_the_switch(shop):
    candidate = space_create(name="candidate", spec=ModelSpec("shop-tiny", seed=5))
    seen_during_fill = []

    def during_fill(kind, count):
        page = product_search_by_text(query="item", limit=12)
        seen_during_fill.append((page.space.name, page.count))

    space_activate(space=candidate, batch_size=4, progress=during_fill)
    # Every search during the fill came from the old, complete space.
    assert seen_during_fill
    assert set(seen_during_fill) == {(shop.name, 6)}
    page = product_search_by_text(query="item", limit=12)
    assert (page.space.name, page.count) == ("candidate", 6)
    assert ImageEmbedding.objects.filter(space=candidate, vector__isnull=False).count() == 12
    shop.refresh_from_db()
    assert shop.status == EmbeddingSpace.Status.RETIRED
    assert EmbeddingSpace.objects.filter(status=EmbeddingSpace.Status.ACTIVE).count() == 1
    assert f"emb_image_hnsw_s{candidate.pk}" in index_names()
    assert f"emb_image_hnsw_s{shop.pk}" not in index_names()


def test_rollback_reactivates_the_old_space_with_its_vectors(
    shop, make_product, embed_on_commit, settings
):
    settings.SEARCH_SIMILARITY_FLOOR = -1.0  # rank every embedded product, not only word hits
    candidate = space_create(name="candidate", spec=ModelSpec("shop-tiny", seed=5))
    space_activate(space=candidate)
    # An upload while the candidate is active is embedded there only...
    with embed_on_commit():
        late = make_product(title="Late arrival", images=[jpeg_bytes(seed=99)])
    assert not ImageEmbedding.objects.filter(space=shop, image__product=late).exists()
    space_activate(space=shop)
    # ...and is caught up when the old space comes back.
    assert space_active() == shop
    assert ImageEmbedding.objects.filter(space=shop, image__product=late).exists()
    assert f"emb_image_hnsw_s{shop.pk}" in index_names()
    page = product_search_by_text(query="late", limit=20)
    assert len(page.results) == 7  # every embedded product: matches, then related
    assert late in [hit.product for hit in page.results if not hit.related]


def test_bad_checkpoint_leaves_the_active_space_untouched(shop, tmp_path):
    from safetensors.torch import save_file

    from embeddings.spaces import space_encoder

    path = tmp_path / "model.safetensors"
    state = space_encoder(shop).model.state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    spec = ModelSpec("shop-tiny", checkpoint=str(path), checkpoint_sha256="0" * 64)
    broken = EmbeddingSpace.objects.create(
        name="broken",
        architecture="shop-tiny",
        source=EmbeddingSpace.Source.CHECKPOINT,
        checkpoint=spec.checkpoint,
        checkpoint_sha256=spec.checkpoint_sha256,
        embed_dim=128,
    )
    with pytest.raises(CheckpointError, match="sha256"):
        space_activate(space=broken)
    assert space_active() == shop
    broken.refresh_from_db()
    assert broken.status == EmbeddingSpace.Status.CANDIDATE
    assert not ImageEmbedding.objects.filter(space=broken).exists()
