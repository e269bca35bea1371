"""The embed pipeline: the same vectors as decoding and encoding one image after another,
one encoding per distinct photo, a corrupt photo failing alone, int8 close to fp32."""

import numpy as np
import pytest
import torch

from catalog.images import ImageDecodeError, decode_image
from embeddings.encoder import ClipEncoder, ModelSpec, cpu_bf16_supported
from embeddings.models import ImageEmbedding
from embeddings.pipeline import ImageSource, image_sources_encode
from embeddings.spaces import space_encoder
from embeddings.vectors import image_embeddings_compute
from tests.builders import COLOURS, corrupt_jpeg_bytes, jpeg_bytes


def photos(count, size=160):
    # Larger than shop-tiny's 64 px input, so JPEG draft mode takes part as it does live.
    return [
        jpeg_bytes(COLOURS[i % 8], size=size, stripes=COLOURS[i // 8], seed=i) for i in range(count)
    ]


def simple_path(encoder, data, batch_size):
    """What the worker did before the pipeline: decode each photo, then encode in batches."""
    return encoder.encode_images([encoder.decode_image(d) for d in data], batch_size=batch_size)


def count_encoded(encoder):
    """The number of images the real model's image tower receives (a forward hook)."""
    seen = []
    handle = encoder.model.visual.register_forward_hook(
        lambda m, args, out: seen.append(len(args[0]))
    )
    return seen, handle


def stored_vectors(space, images):
    rows = dict(
        ImageEmbedding.objects.filter(space=space, image__in=images).values_list(
            "image_id", "vector"
        )
    )
    return np.array([rows[image.pk] for image in images], dtype=np.float32)


@pytest.mark.parametrize("threads", [0, 3])
def test_pipeline_vectors_equal_the_simple_paths(threads):
    encoder = ClipEncoder(ModelSpec("shop-tiny"), device="cpu")
    data = photos(11)
    sources = [ImageSource(key=i, read=lambda d=d: d) for i, d in enumerate(data)]

    batches = list(image_sources_encode(encoder, sources, batch_size=4, threads=threads))

    assert [batch.encoded for batch in batches] == [4, 4, 3]
    assert [key for batch in batches for key in batch.keys] == list(range(11))
    vectors = np.concatenate([batch.vectors for batch in batches])
    # Bit for bit: the uint8 batch is scaled and normalised by preprocess's own operations.
    assert np.array_equal(vectors, simple_path(encoder, data, batch_size=4))


@pytest.mark.django_db
def test_the_worker_stores_the_simple_paths_vectors(make_product, default_space, settings):
    settings.EMBED_BATCH_SIZE = 3
    data = photos(7)
    products = [make_product(images=[d]) for d in data]
    images = [p.images.get() for p in products]

    report = image_embeddings_compute(space=default_space, image_ids=[i.pk for i in images])

    assert (report.embedded, report.failed) == (7, {})
    expected = simple_path(space_encoder(default_space), data, batch_size=3)
    np.testing.assert_allclose(stored_vectors(default_space, images), expected, atol=2e-3)


@pytest.mark.django_db
def test_duplicate_photos_share_one_encoding(make_product, default_space, settings):
    settings.EMBED_BATCH_SIZE = 2
    same = jpeg_bytes((20, 20, 220), size=160, seed=7)
    other = jpeg_bytes((240, 220, 30), size=160, stripes=(20, 20, 20), seed=8)
    products = [make_product(images=[same]) for _ in range(4)] + [make_product(images=[other])]
    images = [p.images.get() for p in products]
    assert len({image.sha256 for image in images}) == 2
    encoder = space_encoder(default_space)
    seen, handle = count_encoded(encoder)
    try:
        report = image_embeddings_compute(space=default_space, image_ids=[i.pk for i in images])
    finally:
        handle.remove()

    assert seen == [2]  # one encoding per distinct photo, in one batch of two
    assert (report.embedded, report.failed) == (5, {})
    vectors = stored_vectors(default_space, images)
    expected = encoder.encode_images([encoder.decode_image(same)])[0]
    for vector in vectors[:4]:
        np.testing.assert_allclose(vector, expected, atol=2e-3)
    # The other photo has its own vector.
    own = encoder.encode_images([encoder.decode_image(other)])[0]
    np.testing.assert_allclose(vectors[4], own, atol=2e-3)


def test_an_unreadable_copy_fails_alone_and_the_next_copy_is_read():
    encoder = ClipEncoder(ModelSpec("shop-tiny"), device="cpu")
    same = jpeg_bytes(size=160, seed=9)

    def gone():
        raise ImageDecodeError("image file is missing from storage: a.jpg")

    sources = [ImageSource(key="a", read=gone, content_sha256="s1")]
    sources += [ImageSource(key=k, read=lambda: same, content_sha256="s1") for k in "bc"]
    sources.append(ImageSource(key="d", read=corrupt_jpeg_bytes, content_sha256="s2"))
    sources.append(ImageSource(key="e", read=corrupt_jpeg_bytes, content_sha256="s2"))

    (batch,) = image_sources_encode(encoder, sources, threads=2)

    assert batch.encoded == 1
    assert batch.keys == ["b", "c"]
    alone = simple_path(encoder, [same], batch_size=1)
    assert np.array_equal(batch.vectors, np.concatenate([alone, alone]))
    assert batch.failed["a"] == "image file is missing from storage: a.jpg"
    # Bad content fails every copy that holds it, decoded once.
    assert list(batch.failed) == ["a", "d", "e"]
    assert "corrupt or truncated" in batch.failed["e"]


@pytest.mark.django_db
def test_a_corrupt_photo_in_a_batch_fails_alone(make_product, default_space, settings):
    settings.EMBED_BATCH_SIZE = 8
    good = photos(2)
    products = [make_product(images=[good[0]]), make_product(images=[corrupt_jpeg_bytes()])]
    products.append(make_product(images=[good[1]]))
    images = [p.images.get() for p in products]

    report = image_embeddings_compute(space=default_space, image_ids=[i.pk for i in images])

    assert report.embedded == 2
    assert list(report.failed) == [images[1].pk]
    assert "corrupt or truncated" in report.failed[images[1].pk]
    rows = {row.image_id: row for row in ImageEmbedding.objects.filter(space=default_space)}
    assert rows[images[1].pk].vector is None
    assert rows[images[1].pk].error == report.failed[images[1].pk]
    assert [rows[images[i].pk].error for i in (0, 2)] == ["", ""]
    expected = simple_path(space_encoder(default_space), good, batch_size=8)
    np.testing.assert_allclose(
        stored_vectors(default_space, [images[0], images[2]]), expected, atol=2e-3
    )


def test_int8_vectors_agree_with_fp32():
    # shop-micro has a ViT image tower, whose MLP layers int8 quantizes (shop-tiny's is a
    # ResNet: its images would not change at all).
    spec = ModelSpec("shop-micro")
    fp32 = ClipEncoder(spec, device="cpu")
    int8 = ClipEncoder(spec, device="cpu", cpu_precision="int8")
    assert int8.precision == "int8"
    quantized = torch.ao.nn.quantized.dynamic.Linear
    # Both MLP layers of both blocks of both towers.
    assert sum(isinstance(m, quantized) for m in int8.model.modules()) == 8
    sources = [ImageSource(key=i, read=lambda d=d: d) for i, d in enumerate(photos(12, size=96))]

    def vectors(encoder):
        batches = image_sources_encode(encoder, sources, threads=2)
        return np.concatenate([batch.vectors for batch in batches])

    reference, approximate = vectors(fp32), vectors(int8)
    assert not np.array_equal(reference, approximate)
    assert (reference * approximate).sum(axis=1).min() > 0.99
    texts = ["red cotton t-shirt", "蓝色亚麻连衣裙"]
    assert (fp32.encode_texts(texts) * int8.encode_texts(texts)).sum(axis=1).min() > 0.99


def test_bf16_agrees_with_fp32_where_the_cpu_has_it():
    spec = ModelSpec("shop-micro")
    bf16 = ClipEncoder(spec, device="cpu", cpu_precision="bf16")
    if not cpu_bf16_supported():
        assert bf16.precision == "fp32"  # emulated bf16 would be slower: it falls back
        return
    assert bf16.precision == "bf16"
    assert bf16.dtype == torch.bfloat16
    images = [decode_image(d, draft_size=32) for d in photos(6, size=96)]
    reference = ClipEncoder(spec, device="cpu").encode_images(images)
    approximate = bf16.encode_images(images)
    assert not np.array_equal(reference, approximate)
    assert (reference * approximate).sum(axis=1).min() > 0.99
    np.testing.assert_allclose(np.linalg.norm(approximate, axis=1), 1.0, atol=1e-5)


@pytest.mark.django_db
def test_the_cpu_precision_setting_reaches_the_spaces_encoder(default_space, settings):
    settings.CLIP_CPU_PRECISION = "int8"
    assert space_encoder(default_space).precision == "int8"
    settings.CLIP_CPU_PRECISION = "fp32"
    assert space_encoder(default_space).precision == "fp32"


def test_an_unknown_cpu_precision_is_refused():
    with pytest.raises(ValueError, match="fp32, bf16, int8"):
        ClipEncoder(ModelSpec("shop-micro"), device="cpu", cpu_precision="fp8")


def test_nothing_to_encode_and_a_bad_batch_size():
    encoder = ClipEncoder(ModelSpec("shop-tiny"), device="cpu")
    assert list(image_sources_encode(encoder, [], threads=2)) == []
    with pytest.raises(ValueError, match="batch_size"):
        list(image_sources_encode(encoder, [], batch_size=0))
