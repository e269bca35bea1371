"""decode_image: which files every photo path refuses, and the pixels it hands on."""

import io

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image

from catalog.images import ImageDecodeError, decode_image
from embeddings.models import ImageEmbedding
from tests.builders import jpeg_bytes, png_bomb

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def encoded(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


def upload(data: bytes, name="photo.png", content_type="image/png"):
    return SimpleUploadedFile(name, data, content_type=content_type)


def close_to(pixel, colour, tolerance=12) -> bool:
    return all(abs(int(a) - int(b)) <= tolerance for a, b in zip(pixel, colour, strict=True))


@pytest.mark.parametrize("size", [(20_000, 1), (1, 100_000), (2_100, 100)])
def test_extreme_aspect_ratios_are_refused_from_the_header(size):
    tiny = png_bomb(*size)
    assert len(tiny) < 1_000
    with pytest.raises(ImageDecodeError) as refused:
        decode_image(tiny)
    width, height = size
    assert str(refused.value) == (
        f"image is {width}x{height} pixels: its aspect ratio is over the limit of 20:1"
    )


def test_an_aspect_ratio_at_the_limit_is_decoded():
    assert decode_image(png_bomb(2_000, 100)).size == (2_000, 100)  # 20:1 exactly
    with pytest.raises(ImageDecodeError, match="over the limit of 10:1"):
        decode_image(png_bomb(2_000, 100), max_aspect_ratio=10)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("TIFF", encoded(Image.new("RGB", (32, 32), RED), "TIFF")),
        ("BMP", encoded(Image.new("RGB", (32, 32), RED), "BMP")),
        # EPS would be rendered by Ghostscript, were it installed: never opened at all.
        ("EPS", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 32 32\nshowpage\n%%EOF\n"),
    ],
)
def test_only_jpeg_png_webp_and_gif_are_decoded(name, data):
    with pytest.raises(ImageDecodeError, match=r"not a recognised image \(JPEG, PNG, WebP or GIF"):
        decode_image(data)


@pytest.mark.parametrize("format", ["JPEG", "PNG", "WEBP", "GIF"])
def test_the_shop_formats_are_decoded(format):
    image = decode_image(encoded(Image.new("RGB", (40, 30), BLUE), format))
    assert (image.mode, image.size) == ("RGB", (40, 30))
    assert close_to(image.getpixel((20, 15)), BLUE, tolerance=40)


def test_exif_orientation_is_applied():
    # Stored sideways, as phones do: left half red, right half blue, tagged "rotate 90° CW".
    sideways = Image.new("RGB", (80, 40), RED)
    sideways.paste(BLUE, (40, 0, 80, 40))
    exif = Image.Exif()
    exif[0x0112] = 6
    for draft_size in (None, 16):  # in draft mode too
        image = decode_image(encoded(sideways, "JPEG", exif=exif), draft_size=draft_size)
        width, height = image.size
        assert height == 2 * width  # upright: portrait
        assert close_to(image.getpixel((width // 2, height // 8)), RED, 40)  # left is now top
        assert close_to(image.getpixel((width // 2, height * 7 // 8)), BLUE, 40)


def test_sixteen_bit_greyscale_pngs_keep_their_tones():
    levels = np.array([[0, 0x4000, 0x8000, 0xFFFF]], dtype=np.uint16).repeat(8, axis=0)
    image = decode_image(encoded(Image.fromarray(levels), "PNG"))
    assert [image.getpixel((x, 4)) for x in range(4)] == [
        (0, 0, 0),
        (64, 64, 64),
        (128, 128, 128),
        (255, 255, 255),
    ]


@pytest.mark.parametrize("format", ["PNG", "WEBP", "GIF"])
def test_transparent_pixels_become_white(format):
    # Transparent pixels that hold black, as most exporters leave them; a red opaque middle.
    picture = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    picture.paste((*RED, 255), (10, 10, 30, 30))
    options = {"lossless": True} if format == "WEBP" else {}
    image = decode_image(encoded(picture, format, **options))
    assert image.getpixel((2, 2)) == WHITE
    assert close_to(image.getpixel((20, 20)), RED)


def test_half_transparent_pixels_are_blended_onto_white():
    picture = Image.new("LA", (8, 8), (0, 128))  # black at half opacity
    assert close_to(decode_image(encoded(picture, "PNG")).getpixel((4, 4)), (127, 127, 127), 2)


def test_jpeg_draft_mode_is_kept():
    photo = encoded(Image.new("RGB", (1024, 768), (10, 200, 10)), "JPEG")
    image = decode_image(photo, draft_size=64)
    assert min(image.size) >= 64
    assert image.size[0] < 1024


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url", ["api-search-image", "api-captions", "api-match", "shop-photo-search"]
)
def test_upload_endpoints_refuse_a_long_thin_png_with_a_400(client, url):
    data = {"image": upload(png_bomb(20_000, 1)), "text": "a red mug"}
    response = client.post(reverse(url), data)
    assert response.status_code == 400
    expected = "image is 20000x1 pixels: its aspect ratio is over the limit of 20:1"
    if url == "shop-photo-search":
        assert expected in response.content.decode()
    else:
        assert response.json()["error"] == f"image: {expected}"


@pytest.mark.django_db
def test_upload_endpoints_refuse_a_tiff(client):
    tiff = encoded(Image.new("RGB", (32, 32), RED), "TIFF")
    response = client.post(reverse("api-captions"), {"image": upload(tiff, "x.tif", "image/tiff")})
    assert response.status_code == 400
    assert "not a recognised image (JPEG, PNG, WebP or GIF only)" in response.json()["error"]


def test_the_aspect_ratio_limit_is_a_setting(client, settings, db):
    settings.MAX_IMAGE_ASPECT_RATIO = 2
    wide = encoded(Image.new("RGB", (90, 30), RED), "PNG")
    response = client.post(reverse("api-captions"), {"image": upload(wide)})
    assert response.status_code == 400
    assert "over the limit of 2:1" in response.json()["error"]


def test_the_embed_worker_records_a_long_thin_image_as_failed(make_product, embed_on_commit):
    with embed_on_commit():
        product = make_product(images=[png_bomb(100_000, 1), jpeg_bytes(seed=3)])
    rows = {
        row.image.position: row for row in ImageEmbedding.objects.filter(image__product=product)
    }
    assert rows[0].vector is None
    assert rows[0].error == "image is 100000x1 pixels: its aspect ratio is over the limit of 20:1"
    assert rows[1].vector is not None
    assert rows[1].error == ""
