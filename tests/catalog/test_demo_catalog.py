"""Tests for the synthetic demo catalog (no database, no Django needed)."""

import io
import itertools
import json
import re
from collections import Counter
from decimal import Decimal

import numpy as np
import pytest
from PIL import Image

from catalog.demo_catalog import (
    CATEGORIES,
    COLOURS,
    MATERIALS,
    PATTERNS,
    DemoProduct,
    demo_product,
    demo_products,
    render_product_image,
    render_product_image_and_mask,
)

BLOCK = len(COLOURS) * len(CATEGORIES)  # one of every (colour, category)
PALETTE = np.array([c.rgb for c in COLOURS.values()], dtype=float)
COLOUR_NAMES = list(COLOURS)
CATEGORY_BY_PATH = {c.path: c for c in CATEGORIES.values()}


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG"
    return image.convert("RGB")


def at_64(product: DemoProduct, image_index: int = 0, seed: int = 0):
    """The photo as the tiny CLIP model sees it (64x64) plus the product-colour mask.

    The mask comes from rendering with the same arguments; only pixels
    fully inside it are used, so edges and JPEG ringing do not count.
    """
    image = decode(render_product_image(product, image_index, seed))
    _, mask = render_product_image_and_mask(product, image_index, seed, 256)
    pixels = np.asarray(image.resize((64, 64), Image.BILINEAR), dtype=float)
    inside = np.asarray(mask.resize((64, 64), Image.BILINEAR)) >= 250
    return pixels, inside


@pytest.fixture(scope="module")
def sample() -> list[DemoProduct]:
    return list(demo_products(2 * BLOCK))


def test_module_data_is_complete():
    assert len(CATEGORIES) >= 12
    assert len(COLOURS) == 12
    assert set(PATTERNS) == {"plain", "striped", "dotted", "checked"}
    for cat in CATEGORIES.values():
        assert cat.name
        assert cat.zh
        assert len(cat.path) >= 2
        assert len(cat.path_zh) == len(cat.path)
        assert set(cat.materials) <= set(MATERIALS)
        assert 0 < cat.price_range[0] < cat.price_range[1]
    for colour in COLOURS.values():
        assert colour.zh.endswith("色")
    # Well separated colours: nearest pair at least ~70 apart in RGB.
    gaps = [np.linalg.norm(a - b) for a, b in itertools.combinations(PALETTE, 2)]
    assert min(gaps) > 70


def test_same_seed_gives_identical_products_and_image_bytes():
    for index in (0, 1, 191, 5000):
        a, b = demo_product(index, seed=3), demo_product(index, seed=3)
        assert a == b
        for image_index in range(a.image_count):
            assert render_product_image(a, image_index, seed=3) == render_product_image(
                b, image_index, seed=3
            )
    assert list(demo_products(20, seed=3)) == [demo_product(i, seed=3) for i in range(20)]


def test_different_seed_gives_different_catalog_and_images():
    a, b = list(demo_products(50, seed=0)), list(demo_products(50, seed=1))
    assert [p.sku for p in a] == [p.sku for p in b]  # SKUs are stable...
    assert sum(x.title != y.title for x, y in zip(a, b, strict=True)) > 40  # ...contents not
    product = demo_product(7, seed=0)
    assert render_product_image(product, 0, seed=0) != render_product_image(product, 0, seed=1)


def test_demo_products_is_lazy_and_supports_start():
    products = demo_products(10**12)  # would never fit in memory if it were a list
    assert iter(products) is products
    first = list(itertools.islice(products, 3))
    assert [p.sku for p in first] == ["DEMO-000000", "DEMO-000001", "DEMO-000002"]
    assert list(demo_products(2, start=123)) == [demo_product(123), demo_product(124)]
    assert demo_product(123).index == 123
    with pytest.raises(ValueError, match="index must be >= 0"):
        demo_product(-1)


def test_product_fields_are_sensible(sample):
    for product in sample:
        assert re.fullmatch(r"DEMO-\d{6}", product.sku)
        cat = CATEGORY_BY_PATH[product.category]
        assert product.category_zh == cat.zh
        assert product.material in cat.materials
        assert isinstance(product.price, Decimal)
        assert product.price.as_tuple().exponent == -2
        assert cat.price_range[0] * 0.8 <= product.price <= cat.price_range[1] * 2
        assert product.currency == "USD"
        assert 1 <= product.image_count <= 3
        assert product.brand in product.description
        attrs = json.loads(json.dumps(product.attributes))
        assert attrs["category"] == cat.key
        assert (attrs["colour"], attrs["pattern"], attrs["material"]) == (
            product.colour,
            product.pattern,
            product.material,
        )
    in_stock = sum(p.in_stock for p in sample) / len(sample)
    assert 0.8 < in_stock < 0.97
    assert Counter(p.image_count for p in sample).keys() == {1, 2, 3}


def test_titles_name_colour_pattern_and_category_in_both_languages(sample):
    for product in sample:
        colour, pattern = COLOURS[product.colour], PATTERNS[product.pattern]
        cat, material = CATEGORY_BY_PATH[product.category], MATERIALS[product.material]
        for text in (product.title, product.description):
            words = text.rstrip(".").replace(",", "").split()
            assert colour.name in words
            assert pattern.name in words
            assert cat.name in text
        assert product.title.endswith(cat.name)
        assert material.name in product.title  # "leather shoes" names it via the category
        assert product.title_zh.startswith(colour.zh + pattern.zh)
        assert product.title_zh.endswith(cat.zh)
        if material.name not in cat.name:
            assert material.zh in product.title_zh
    assert demo_product(0).title == demo_product(0).title.lower()


def test_coverage_is_exact_and_balanced():
    first_block = [demo_product(i, seed=9) for i in range(4 * BLOCK)]
    pairs = Counter((p.colour, p.attributes["category"]) for p in first_block[:BLOCK])
    assert len(pairs) == BLOCK  # every (colour, category) exactly once per block
    triples = {(p.colour, p.attributes["category"], p.pattern) for p in first_block}
    assert len(triples) == 4 * BLOCK  # ...and every triple once per 4 blocks
    for start in (0, 5, 100):  # any 12 neighbours have 12 different colours
        assert len({p.colour for p in first_block[start : start + 12]}) == 12
    assert {p.pattern for p in first_block[:40]} == set(PATTERNS)
    # The default demo size: each combination 10 or 11 times, materials all used.
    counts = Counter((p.colour, p.attributes["category"]) for p in demo_products(2000))
    assert len(counts) == BLOCK
    assert set(counts.values()) <= {10, 11}


def test_images_decode_as_jpeg_of_requested_size():
    product = demo_product(42)
    assert decode(render_product_image(product, 0)).size == (256, 256)
    assert decode(render_product_image(product, 0, size=128)).size == (128, 128)


def test_photos_of_one_product_differ_slightly():
    product = next(p for p in demo_products(50) if p.image_count == 3)
    photos = [np.asarray(decode(render_product_image(product, i)), dtype=float) for i in range(3)]
    for a, b in itertools.combinations(photos, 2):
        assert np.abs(a - b).mean() > 2  # pose/backdrop differ...
    colours = [p[inside].mean(0) for p, inside in (at_64(product, i) for i in range(3))]
    assert max(np.linalg.norm(c - colours[0]) for c in colours) < 40  # ...same product


def test_named_colour_is_what_you_see_at_64px(sample):
    for product in sample[:BLOCK]:
        pixels, inside = at_64(product, image_index=1)
        assert 0.05 < inside.mean() < 0.75  # the product is a good part of the frame
        named = COLOUR_NAMES.index(product.colour)
        if product.pattern == "plain":
            mean = pixels[inside].mean(0)
            assert np.linalg.norm(PALETTE - mean, axis=1).argmin() == named, product.title
        # Classify each product pixel to the nearest palette colour: the named colour
        # wins; for gingham its half-tone bands may outnumber it but it stays top 2.
        nearest = np.linalg.norm(pixels[inside][:, None] - PALETTE[None], axis=2).argmin(1)
        ranking = [c for c, _ in Counter(nearest.tolist()).most_common()]
        assert named in ranking[: 2 if product.pattern == "checked" else 1], product.title


def test_patterns_are_visible_at_64px(sample):
    spread = {name: [] for name in PATTERNS}
    for product in sample[:BLOCK]:
        pixels, inside = at_64(product)
        spread[product.pattern].append(pixels[inside].mean(1).std())  # luminance spread
    assert max(spread["plain"]) < 8
    for name in ("striped", "dotted", "checked"):
        assert min(spread[name]) > 15, name


def test_categories_are_recognisable_from_small_greyscale_images(sample):
    """A nearest-centroid classifier on 16x16 greyscale photos beats chance by far."""

    def features(product):
        image = decode(render_product_image(product, 0)).convert("L")
        x = np.asarray(image.resize((16, 16), Image.BILINEAR), dtype=float).ravel()
        return (x - x.mean()) / (x.std() + 1e-6)

    x = np.array([features(p) for p in sample])
    y = np.array([p.attributes["category"] for p in sample])
    train = np.arange(len(sample)) < BLOCK
    keys = sorted(CATEGORIES)
    centroids = np.array([x[train & (y == k)].mean(0) for k in keys])
    distances = ((x[~train][:, None] - centroids[None]) ** 2).sum(2)
    accuracy = (np.array(keys)[distances.argmin(1)] == y[~train]).mean()
    assert accuracy > 0.6  # chance is 1/16
