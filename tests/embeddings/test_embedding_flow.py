"""Uploads get vectors after commit; tasks are idempotent; a corrupt image fails alone."""

import numpy as np
import pytest
from django.core.files.base import ContentFile

from catalog.images import decode_image
from catalog.services import product_image_create, product_image_fill_metadata
from embeddings.models import CaptionEmbedding, ImageEmbedding
from embeddings.spaces import space_active, space_encoder
from embeddings.tasks import embed_captions, embed_images
from tests.builders import corrupt_jpeg_bytes, jpeg_bytes

pytestmark = pytest.mark.django_db


def test_new_product_gets_image_and_caption_vectors_after_commit(make_product, embed_on_commit):
    photos = [jpeg_bytes((200, 20, 20), seed=1), jpeg_bytes((20, 20, 200), seed=2)]
    with embed_on_commit():
        product = make_product(
            title="Red striped t-shirt",
            description="Soft cotton tee.",
            images=photos,
            attributes={"titles": {"zh": "红色条纹T恤"}},
        )
    space = space_active()
    rows = ImageEmbedding.objects.filter(space=space, image__product=product).order_by("image_id")
    assert [row.error for row in rows] == ["", ""]
    encoder = space_encoder(space)
    expected = encoder.encode_images([decode_image(p) for p in photos])
    stored = np.array([row.vector for row in rows], dtype=np.float32)
    np.testing.assert_allclose(stored, expected, atol=2e-3)  # halfvec keeps ~3 digits

    captions = {c.field: c for c in CaptionEmbedding.objects.filter(space=space, product=product)}
    assert {f: (c.lang, c.text) for f, c in captions.items()} == {
        "title": ("en", "Red striped t-shirt"),
        "title_zh": ("zh", "红色条纹T恤"),
        "description": ("en", "Soft cotton tee."),
    }
    np.testing.assert_allclose(
        np.array(captions["title_zh"].vector), encoder.encode_texts(["红色条纹T恤"])[0], atol=2e-3
    )


def test_rerunning_the_tasks_changes_nothing(make_product, embed_on_commit):
    with embed_on_commit():
        product = make_product(images=[jpeg_bytes(seed=3), jpeg_bytes(seed=4)])
    image_ids = list(product.images.values_list("pk", flat=True))
    before = list(ImageEmbedding.objects.order_by("pk").values_list("pk", "updated", "vector"))
    captions_before = list(CaptionEmbedding.objects.order_by("pk").values_list("pk", "updated"))

    result = embed_images.delay(image_ids).get()
    assert result == {"embedded": 0, "skipped": 2, "failed": {}}
    assert embed_captions.delay([product.pk]).get()["embedded"] == 0
    after = list(ImageEmbedding.objects.order_by("pk").values_list("pk", "updated", "vector"))
    assert [(pk, updated) for pk, updated, _ in after] == [(pk, up) for pk, up, _ in before]
    assert list(CaptionEmbedding.objects.order_by("pk").values_list("pk", "updated")) == (
        captions_before
    )


def test_corrupt_image_is_marked_failed_and_the_rest_of_the_batch_is_embedded(
    make_product, embed_on_commit
):
    with embed_on_commit():
        product = make_product(
            images=[jpeg_bytes(seed=5), corrupt_jpeg_bytes(), jpeg_bytes(seed=6)]
        )
    rows = list(ImageEmbedding.objects.filter(image__product=product).order_by("image_id"))
    assert [row.vector is not None for row in rows] == [True, False, True]
    assert "corrupt or truncated" in rows[1].error
    # Recorded, not retried in a loop: running the task again skips it.
    assert embed_images.delay([rows[1].image_id]).get()["skipped"] == 1


def test_not_an_image_is_stored_and_reported(make_product, embed_on_commit):
    with embed_on_commit():
        product = make_product()
        image = product_image_create(
            product=product, file=b"GIF89a? no, a text file", name="notes.jpg"
        )
    row = ImageEmbedding.objects.get(image=image)
    assert row.vector is None
    assert "not a recognised image" in row.error
    assert image.file.read() == b"GIF89a? no, a text file"  # nothing lost


def test_replaced_image_content_gets_a_new_vector(make_product, embed_on_commit):
    with embed_on_commit():
        product = make_product(images=[jpeg_bytes((250, 0, 0), seed=7)])
    image = product.images.get()
    old_sha = image.sha256
    replacement = jpeg_bytes((0, 0, 250), stripes=(250, 250, 0), seed=8)
    image.file.save("new.jpg", ContentFile(replacement), save=False)
    product_image_fill_metadata(image)
    image.save()
    assert embed_images.delay([image.pk]).get()["embedded"] == 1
    row = ImageEmbedding.objects.get(image=image)
    assert row.source_sha256 == image.sha256 != old_sha
    expected = space_encoder(row.space).encode_images([decode_image(replacement)])[0]
    np.testing.assert_allclose(np.array(row.vector), expected, atol=2e-3)


def test_changed_title_replaces_its_caption_vector_and_drops_removed_ones(
    make_product, embed_on_commit
):
    with embed_on_commit():
        product = make_product(title="Blue mug", description="Stoneware.")
    product.title, product.description = "Navy mug", ""
    product.save()
    assert embed_captions.delay([product.pk]).get()["embedded"] == 1
    assert list(CaptionEmbedding.objects.filter(product=product).values_list("field", "text")) == [
        ("title", "Navy mug")
    ]
