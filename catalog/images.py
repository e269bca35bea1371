"""Decoding product photos: checked, bounded, to RGB. Django-free (the encoder uses it too)."""

from __future__ import annotations

import io
from typing import IO

from PIL import Image

# Refuse to decode images beyond this many pixels (decompression bombs).
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000


class ImageDecodeError(ValueError):
    """An upload or stored file that is not a usable image; the message says why."""


def decode_image(
    source: bytes | IO[bytes],
    *,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    draft_size: int | None = None,
) -> Image.Image:
    """Open, check and fully decode an image to RGB, or raise ImageDecodeError saying why.

    The pixel limit is checked from the header, before any pixel is decoded. With
    `draft_size`, JPEGs are decoded at a reduced scale close to the model's input size,
    which is several times faster for camera-sized photos.
    """
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        image = Image.open(stream)
    except Image.UnidentifiedImageError as exc:
        raise ImageDecodeError("file is not a recognised image (JPEG, PNG, WebP, GIF...)") from exc
    except Image.DecompressionBombError as exc:
        # Pillow's own guard fires at open() for images over twice its limit.
        raise ImageDecodeError(f"image is over the limit of {max_pixels:,} pixels: {exc}") from exc
    except OSError as exc:
        raise ImageDecodeError(f"cannot read image: {exc}") from exc
    width, height = image.size
    if width * height > max_pixels:
        raise ImageDecodeError(
            f"image is {width}x{height} pixels, over the limit of {max_pixels:,} pixels"
        )
    if width == 0 or height == 0:
        raise ImageDecodeError("image has no pixels")
    if draft_size and image.format == "JPEG":
        image.draft("RGB", (draft_size, draft_size))
    try:
        image.load()
        return image.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageDecodeError(f"image data is corrupt or truncated: {exc}") from exc
