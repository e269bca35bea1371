"""The Django-free encoder, with the real tiny open_clip model."""

import io
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from catalog.images import ImageDecodeError, decode_image
from embeddings.encoder import (
    CheckpointError,
    ClipEncoder,
    ModelSpec,
    file_sha256,
    get_encoder,
)
from embeddings.training import save_checkpoint
from tests.builders import corrupt_jpeg_bytes, jpeg_bytes, png_bomb

TINY = ModelSpec("shop-tiny", seed=0)


@pytest.fixture(scope="module")
def encoder():
    return get_encoder(TINY, device="cpu")


def test_shop_tiny_is_a_small_open_clip_model(encoder):
    params = sum(p.numel() for p in encoder.model.parameters())
    assert 10e6 < params < 16e6
    assert encoder.embed_dim == 128
    assert encoder.image_size == 64


def test_random_init_is_identical_in_every_process(encoder):
    fresh = ClipEncoder(TINY, device="cpu")
    texts = ["red striped t-shirt", "黑色皮鞋"]
    np.testing.assert_allclose(fresh.encode_texts(texts), encoder.encode_texts(texts), atol=1e-6)
    other_seed = ClipEncoder(ModelSpec("shop-tiny", seed=1), device="cpu")
    assert not np.allclose(other_seed.encode_texts(texts), encoder.encode_texts(texts), atol=1e-3)


def test_encoder_is_loaded_once_per_process(encoder):
    assert get_encoder(TINY, device="cpu") is encoder


def test_vectors_are_normalised_float32_and_batching_does_not_change_them(encoder):
    images = [decode_image(jpeg_bytes((i * 40, 90, 200 - i * 30), seed=i)) for i in range(5)]
    batched = encoder.encode_images(images, batch_size=2)
    single = np.stack([encoder.encode_images([im])[0] for im in images])
    assert batched.dtype == np.float32
    assert batched.shape == (5, 128)
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(batched, single, atol=1e-5)
    texts = encoder.encode_texts(["a", "b", "c"], batch_size=2)
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)
    assert encoder.encode_texts([]).shape == (0, 128)


def test_checkpoint_round_trip_and_checksum(encoder, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in encoder.model.state_dict().items()}, str(path))
    spec = ModelSpec(
        "shop-tiny", checkpoint=str(path), checkpoint_sha256=file_sha256(path), seed=123
    )  # the seed must not matter once weights are loaded
    loaded = ClipEncoder(spec, device="cpu")
    np.testing.assert_allclose(
        loaded.encode_texts(["mug"]), encoder.encode_texts(["mug"]), atol=1e-6
    )
    with pytest.raises(CheckpointError, match="sha256"):
        ClipEncoder(ModelSpec("shop-tiny", checkpoint=str(path), checkpoint_sha256="0" * 64))


class _RunsCode:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_torch_checkpoint_with_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        torch.save({"weights": _RunsCode()}, f)
    with pytest.raises(CheckpointError, match="weights only"):
        ClipEncoder(ModelSpec("shop-tiny", checkpoint=str(path)), device="cpu")


def test_torch_checkpoint_saved_by_ddp_training_loads(encoder, tmp_path):
    # open_clip_train saves {"epoch", "state_dict"} with DDP's "module." on every key.
    state = encoder.model.state_dict()
    path = tmp_path / "epoch_1.pt"
    torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    loaded = ClipEncoder(ModelSpec("shop-tiny", checkpoint=str(path), seed=123), device="cpu")
    np.testing.assert_allclose(
        loaded.encode_texts(["mug"]), encoder.encode_texts(["mug"]), atol=1e-6
    )


def test_checkpoint_errors_say_why(encoder, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        ClipEncoder(ModelSpec("shop-tiny", checkpoint=str(tmp_path / "no.pt")), device="cpu")
    partial = tmp_path / "partial.pt"
    torch.save(dict(list(encoder.model.state_dict().items())[1:]), partial)
    with pytest.raises(CheckpointError, match="cannot load .* into CLIP"):
        ClipEncoder(ModelSpec("shop-tiny", checkpoint=str(partial)), device="cpu")


def test_decode_image_says_why_it_refuses():
    with pytest.raises(ImageDecodeError, match="not a recognised image"):
        decode_image(b"%PDF-1.4 definitely not a picture")
    with pytest.raises(ImageDecodeError, match="corrupt or truncated"):
        decode_image(corrupt_jpeg_bytes())
    with pytest.raises(ImageDecodeError, match="over the limit"):
        decode_image(jpeg_bytes(size=64), max_pixels=32 * 32)
    # A 50,000 x 50,000 PNG (a few KB on disk): refused from its header, never decoded.
    with pytest.raises(ImageDecodeError, match="over the limit"):
        decode_image(png_bomb(50_000, 50_000))
    image = decode_image(io.BytesIO(jpeg_bytes(size=96)))
    assert image.mode == "RGB"
    assert image.size == (96, 96)


def test_jpeg_draft_mode_decodes_near_model_size():
    buffer = io.BytesIO()
    Image.new("RGB", (1024, 768), (10, 200, 10)).save(buffer, "JPEG")
    image = decode_image(buffer.getvalue(), draft_size=64)
    assert image.size[0] < 1024
    assert min(image.size) >= 64


def test_a_model_built_from_its_config_logs_no_warning(tmp_path, caplog):
    """A fixed-seed init and the frame a checkpoint loads into are what was asked for: no
    "No pretrained weights loaded ... initialized randomly"; other warnings still show."""
    path = tmp_path / "tiny.safetensors"
    digest = save_checkpoint(ClipEncoder(TINY, device="cpu").model, path)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        ClipEncoder(ModelSpec("shop-tiny", seed=3), device="cpu")
        ClipEncoder(
            ModelSpec("shop-tiny", checkpoint=str(path), checkpoint_sha256=digest), device="cpu"
        )
        logging.warning("No pretrained weights loaded for model 'other'. Model initialized")
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == ["No pretrained weights loaded for model 'other'. Model initialized"]
