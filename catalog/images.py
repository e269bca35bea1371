"""Decoding product photos: checked, bounded, to RGB. Django-free (the encoder uses it too).

Every path that reads a photo (the upload APIs, the shop's photo search, the embed worker,
fine-tuning, the importer) goes through `decode_image`, so all of them refuse the same
files and see the same pixels.
"""

from __future__ import annotations

import contextlib
import io
from typing import IO

from PIL import Image, ImageOps

# Refuse to decode images beyond this many pixels (decompression bombs).
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000
# Refuse images whose long side is more than this many times the short side: CLIP's
# preprocessing scales the short side up to the model's size with no cap on the long one,
# so a 143-byte 100000x1 PNG would become a 224x22,400,000 tensor (gigabytes).
DEFAULT_MAX_IMAGE_ASPECT_RATIO = 20.0
# Formats a shop photo comes in; anything else (TIFF, PSD, EPS, which would run
# Ghostscript...) is refused unopened, so no other Pillow decoder ever sees an upload.
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF")
_SIXTEEN_BIT_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N"}


class ImageDecodeError(ValueError):
    """An upload or stored file that is not a usable image; the message says why."""


def decode_image(
    source: bytes | IO[bytes],
    *,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    max_aspect_ratio: float = DEFAULT_MAX_IMAGE_ASPECT_RATIO,
    draft_size: int | None = None,
) -> Image.Image:
    """Open, check and fully decode an image to RGB, or raise ImageDecodeError saying why.

    Only JPEG, PNG, WebP and GIF are opened. The pixel count and the aspect ratio are
    checked from the header, before any pixel is decoded. With `draft_size`, JPEGs are
    decoded at a reduced scale close to the model's input size, which is several times
    faster for camera-sized photos. The result is upright (EXIF orientation applied),
    8 bits per channel, and transparent parts are white, as a shop shows them.
    """
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        image = Image.open(stream, formats=IMAGE_FORMATS)
    except Image.UnidentifiedImageError as exc:
        raise ImageDecodeError(
            "file is not a recognised image (JPEG, PNG, WebP or GIF only)"
        ) from exc
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
    if max(width, height) > max_aspect_ratio * min(width, height):
        raise ImageDecodeError(
            f"image is {width}x{height} pixels: its aspect ratio is over the limit of "
            f"{max_aspect_ratio:g}:1"
        )
    if draft_size and image.format == "JPEG":
        image.draft("RGB", (draft_size, draft_size))
    try:
        image.load()
        _upright(image)
        image = _eight_bit(image)
        if image.has_transparency_data:
            image = _on_white(image)
        return image.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageDecodeError(f"image data is corrupt or truncated: {exc}") from exc


def _upright(image: Image.Image) -> None:
    # Phones store photos sideways with an EXIF orientation tag that viewers apply. A
    # damaged EXIF block must not refuse an otherwise good photo.
    with contextlib.suppress(Exception):
        ImageOps.exif_transpose(image, in_place=True)


def _eight_bit(image: Image.Image) -> Image.Image:
    # 16-bit greyscale PNGs decode to 0..65535; convert("RGB") would clip them all to white.
    if image.mode not in _SIXTEEN_BIT_MODES:
        return image
    return image.convert("I").point(lambda value: value * (1 / 256)).convert("L")


def _on_white(image: Image.Image) -> Image.Image:
    # Dropping alpha leaves whatever colour the transparent pixels hold (usually black).
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    white.alpha_composite(rgba)
    return white
