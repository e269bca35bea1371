"""Draft and archived products keep no vectors: the embed tasks skip them and delete what
they had, a status change drops the vectors in its own transaction (or brings them back
after the embed task), and fills, the sweep and fine-tuning leave them out."""

import pytest

from catalog.models import Product
from catalog.services import product_save
from embeddings.catalog_pairs import catalog_pairs
from embeddings.encoder import ModelSpec
from embeddings.models import CaptionEmbedding, ImageEmbedding, ReindexChunk
from embeddings.reindex import reindex_plan
from embeddings.spaces import space_active, space_create, space_encoder
from embeddings.tasks import embed_captions, embed_images, sweep_missing_embeddings
from embeddings.vectors import MissingVectors, embeddings_missing, space_fill
from tests.builders import jpeg_bytes

pytestmark = pytest.mark.django_db

DRAFT, ARCHIVED, ACTIVE = Product.Status.DRAFT, Product.Status.ARCHIVED, Product.Status.ACTIVE


def vectors(product, space=None) -> tuple[int, int]:
    """(image vectors, caption vectors) of the product, in `space` or in every space."""
    images = ImageEmbedding.objects.filter(image__product=product, vector__isnull=False)
    captions = CaptionEmbedding.objects.filter(product=product)
    if space is not None:
        images, captions = images.filter(space=space), captions.filter(space=space)
    return images.count(), captions.count()


@pytest.fixture
def shop(make_product, embed_on_commit):
    """An active product and a draft, each with two photos and a description."""
    with embed_on_commit():
        shown = make_product(
            title="Red wool scarf",
            description="Warm.",
            images=[jpeg_bytes(seed=1), jpeg_bytes(seed=2)],
        )
        draft = make_product(
            title="Green silk scarf",
            description="Light.",
            status=DRAFT,
            images=[jpeg_bytes((20, 180, 20), seed=3), jpeg_bytes(seed=4)],
        )
    return shown, draft


def test_a_draft_product_gets_no_vectors_and_is_not_missing_any(shop):
    shown, draft = shop
    assert vectors(shown) == (2, 2)  # title and description
    assert vectors(draft) == (0, 0)
    assert embeddings_missing(space=space_active(), limit=10) == MissingVectors([], [])


def test_archiving_drops_the_vectors_in_every_space_before_it_commits(
    shop, django_capture_on_commit_callbacks
):
    shown, _ = shop
    candidate = space_create(name="candidate", spec=ModelSpec("shop-tiny", seed=5))
    space_fill(space=candidate)
    assert vectors(shown, candidate) == vectors(shown, space_active()) == (2, 2)

    shown.status = ARCHIVED
    with django_capture_on_commit_callbacks(execute=False):
        product_save(product=shown, changed_fields=["status"])
        # In the same transaction, before any task ran: no search can find it in between.
        assert vectors(shown) == (0, 0)
    assert embed_images.delay(list(shown.images.values_list("pk", flat=True))).get() == {
        "embedded": 0,
        "skipped": 2,
        "failed": {},
    }
    assert vectors(shown) == (0, 0)


def test_making_a_draft_active_computes_its_vectors_once_the_change_commits(
    shop, embed_on_commit, django_capture_on_commit_callbacks
):
    _, draft = shop
    draft.status = ACTIVE
    with django_capture_on_commit_callbacks(execute=False) as queued:
        product_save(product=draft, changed_fields=["status", "title"])
    assert vectors(draft) == (0, 0)
    with embed_on_commit():
        for task in queued:
            task()
    assert vectors(draft) == (2, 2)


def test_edits_that_leave_the_status_alone_send_no_photos(shop, django_capture_on_commit_callbacks):
    shown, _ = shop
    shown.in_stock = False
    with django_capture_on_commit_callbacks(execute=False) as queued:
        product_save(product=shown, changed_fields=["in_stock"])
    assert queued == []


def test_tasks_delete_the_vectors_of_products_hidden_behind_the_signals_back(shop):
    shown, _ = shop
    Product.objects.filter(pk=shown.pk).update(status=DRAFT)  # no catalog_changed
    image_ids = list(shown.images.values_list("pk", flat=True))
    assert embed_images.delay(image_ids).get() == {"embedded": 0, "skipped": 2, "failed": {}}
    assert embed_captions.delay([shown.pk]).get()["embedded"] == 0
    assert vectors(shown) == (0, 0)


def test_the_sweep_deletes_what_a_bulk_update_left_and_heals_only_shown_products(
    shop, embed_on_commit
):
    shown, draft = shop
    Product.objects.filter(pk=shown.pk).update(status=ARCHIVED)
    Product.objects.filter(pk=draft.pk).update(status=ACTIVE)
    with embed_on_commit():
        result = sweep_missing_embeddings.delay().get()
    assert result == {"images": 2, "products": 1}
    assert vectors(shown) == (0, 0)
    assert vectors(draft) == (2, 2)


def test_fills_and_reindex_plans_cover_only_shown_products(shop):
    shown, draft = shop
    candidate = space_create(name="candidate", spec=ModelSpec("shop-tiny", seed=5))
    report = space_fill(space=candidate)
    assert report.embedded == 4  # two photos and two captions, all of the active product
    assert vectors(draft, candidate) == (0, 0)

    other = space_create(name="other", spec=ModelSpec("shop-tiny", seed=6))
    for missing_only in (True, False):
        reindex_plan(space=other, missing_only=missing_only, chunk_size=100, restart=True)
        planned = {
            kind: sum(
                ReindexChunk.objects.filter(space=other, kind=kind).values_list("size", flat=True)
            )
            for kind in ReindexChunk.Kind.values
        }
        assert planned == {"images": 2, "captions": 1}


def test_fine_tuning_learns_from_active_and_draft_products_not_archived(shop, make_product):
    shown, draft = shop
    archived = make_product(status=ARCHIVED, images=[jpeg_bytes(seed=9)])
    pairs = catalog_pairs(image_size=space_encoder(space_active()).image_size)
    keys = {example.product_key for example in pairs.train + pairs.val}
    assert keys == {shown.pk, draft.pk}
    assert archived.pk not in keys
