"""Vectors partitioned by space: a space's rows and index live in its own tables, filling
a new space never touches the live one's, and deleting a space drops its partitions."""

import pytest
from django.core.management import call_command
from django.db import connection

from catalog.models import Product
from catalog.services import category_get_or_create_path
from embeddings.encoder import ModelSpec
from embeddings.models import CaptionEmbedding, EmbeddingSpace, ImageEmbedding
from embeddings.spaces import (
    SpaceInUse,
    space_active,
    space_build_indexes,
    space_create,
    space_delete,
    space_partition,
)
from embeddings.vectors import space_fill
from search.pipeline import product_search_by_text
from tests.builders import jpeg_bytes


def partitions(space_id: int) -> set[str]:
    """The tables attached as partitions for the space, and any left detached."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname FROM pg_class WHERE relname = ANY(%s)",
            [[f"embeddings_{kind}embedding_s{space_id}" for kind in ("image", "caption")]],
        )
        return {row[0] for row in cursor.fetchall()}


def table_rows(table: str) -> list[tuple]:
    """Every row's place and writing transaction: unchanged means never written."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id, ctid::text, xmin::text FROM {table} ORDER BY id")
        return cursor.fetchall()


def table_indexes(table: str) -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename = %s", [table])
        return {row[0] for row in cursor.fetchall()}


@pytest.fixture
def shop(make_product, embed_on_commit):
    with embed_on_commit():
        for i in range(4):
            make_product(title=f"Striped scarf {i}", images=[jpeg_bytes(seed=i)])
    return space_active()


@pytest.mark.django_db
def test_a_space_writes_and_indexes_only_its_own_partitions(shop):
    live_images = space_partition(ImageEmbedding, shop)
    assert partitions(shop.pk) == {live_images, space_partition(CaptionEmbedding, shop)}
    before, live_indexes = table_rows(live_images), table_indexes(live_images)
    assert len(before) == 4
    assert f"emb_image_hnsw_s{shop.pk}" in live_indexes

    candidate = space_create(name="candidate", spec=ModelSpec("shop-micro", seed=3))
    space_fill(space=candidate, batch_size=2)
    space_build_indexes(candidate)

    # The candidate's vectors and index are in its own tables...
    new_images = space_partition(ImageEmbedding, candidate)
    assert len(table_rows(new_images)) == 4
    assert f"emb_image_hnsw_s{candidate.pk}" in table_indexes(new_images)
    assert ImageEmbedding.objects.filter(space=candidate).count() == 4
    # ...and not one row or index of the live space's changed.
    assert table_rows(live_images) == before
    assert table_indexes(live_images) == live_indexes
    # Searches still read the live space, through its own partition's index.
    assert product_search_by_text(query="scarf", limit=10).count == 4


@pytest.mark.django_db(transaction=True)
def test_deleting_a_space_drops_its_partitions_and_keeps_the_live_one(shop):
    candidate = space_create(name="candidate", spec=ModelSpec("shop-micro", seed=3))
    space_fill(space=candidate, batch_size=2)
    assert ImageEmbedding.objects.filter(space=candidate).count() == 4

    with pytest.raises(SpaceInUse, match="active"):
        space_delete(space=shop)
    candidate_id = candidate.pk
    assert len(partitions(candidate_id)) == 2
    space_delete(space=candidate)  # outside a transaction: detached concurrently, dropped

    assert not EmbeddingSpace.objects.filter(pk=candidate_id).exists()
    assert partitions(candidate_id) == set()
    assert ImageEmbedding.objects.filter(space=shop).count() == 4
    assert product_search_by_text(query="scarf", limit=10).count == 4


@pytest.mark.django_db
def test_the_admin_deletes_a_retired_space_but_not_the_live_one(shop, admin_client):
    retired = space_create(name="old", spec=ModelSpec("shop-micro", seed=3))
    space_fill(space=retired, batch_size=2)
    EmbeddingSpace.objects.filter(pk=retired.pk).update(status=EmbeddingSpace.Status.RETIRED)

    url = f"/admin/embeddings/embeddingspace/{shop.pk}/delete/"
    assert admin_client.get(url).status_code == 403
    retired_id = retired.pk
    url = f"/admin/embeddings/embeddingspace/{retired_id}/delete/"
    page = admin_client.get(url)
    assert "4 image vectors" in page.content.decode()  # counted, not listed one by one
    assert admin_client.post(url, {"post": "yes"}).status_code == 302
    assert not EmbeddingSpace.objects.filter(pk=retired_id).exists()
    assert partitions(retired_id) == set()
    assert ImageEmbedding.objects.filter(space=shop).count() == 4


@pytest.mark.django_db(transaction=True)
def test_the_migration_moves_existing_vectors_into_partitions_and_back(shop):
    """Unapplied and applied again with vectors in place: every row and id kept, the space's
    HNSW index rebuilt where it was, new rows numbered after the old ones."""
    ids = sorted(ImageEmbedding.objects.values_list("id", flat=True))
    captions = CaptionEmbedding.objects.count()
    scarves = category_get_or_create_path(["Accessories", "Scarves"])
    Product.objects.update(category=scarves)
    try:
        call_command("migrate", "embeddings", "0005", verbosity=0)
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT relkind FROM pg_class WHERE relname = 'embeddings_imageembedding'"
            )
            assert cursor.fetchone() == ("r",)  # a plain table again
            cursor.execute("SELECT id FROM embeddings_imageembedding ORDER BY id")
            assert [row[0] for row in cursor.fetchall()] == ids
            cursor.execute(
                "SELECT indexdef FROM pg_indexes WHERE indexname = %s",
                [f"emb_image_hnsw_s{shop.pk}"],
            )
            assert f"WHERE (space_id = {shop.pk})" in cursor.fetchone()[0]
    finally:
        call_command("migrate", "embeddings", verbosity=0)
    assert sorted(ImageEmbedding.objects.values_list("id", flat=True)) == ids
    assert CaptionEmbedding.objects.count() == captions
    assert f"emb_image_hnsw_s{shop.pk}" in table_indexes(space_partition(ImageEmbedding, shop))
    with connection.cursor() as cursor:  # each vector row carries its product's category
        cursor.execute("SELECT DISTINCT category_id FROM embeddings_imageembedding")
        assert cursor.fetchall() == [(scarves.pk,)]
    fresh = ImageEmbedding.objects.create(
        image_id=ImageEmbedding.objects.first().image_id,
        space=space_create(name="after", spec=ModelSpec("shop-micro", seed=4)),
        source_sha256="x",
    )
    assert fresh.id > max(ids)
    assert product_search_by_text(query="scarf", limit=10).count == 4
