"""Shared builders: real images drawn with Pillow, products made through the services."""

import io
import itertools

import numpy as np
import pytest
from PIL import Image, ImageDraw

from catalog.services import product_create

_sku_numbers = itertools.count(1)


def jpeg_bytes(colour=(200, 30, 30), size=96, stripes=None, seed=0) -> bytes:
    """A small photo-like JPEG: a coloured square with optional stripes and a little noise."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (size, size), (235, 235, 235))
    draw = ImageDraw.Draw(image)
    draw.rectangle([size // 6, size // 6, size * 5 // 6, size * 5 // 6], fill=tuple(colour))
    if stripes:
        for y in range(size // 6, size * 5 // 6, 8):
            draw.rectangle([size // 6, y, size * 5 // 6, y + 3], fill=tuple(stripes))
    pixels = np.asarray(image, dtype=np.int16) + rng.integers(-8, 9, (size, size, 3))
    buffer = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def corrupt_jpeg_bytes() -> bytes:
    """A JPEG cut off in the middle of its pixel data: the header reads, decoding fails."""
    data = jpeg_bytes(size=128)
    return data[: len(data) // 3]


@pytest.fixture
def make_product(db):
    def make(title="Red cotton t-shirt", images=(), **fields):
        fields.setdefault("sku", f"SKU-{next(_sku_numbers):05d}")
        fields.setdefault("price", "19.90")
        return product_create(title=title, images=list(images), **fields)

    return make


@pytest.fixture
def embed_on_commit(django_capture_on_commit_callbacks):
    """Run the on-commit embedding tasks (eagerly), as they would run after a real commit."""
    return lambda: django_capture_on_commit_callbacks(execute=True)
