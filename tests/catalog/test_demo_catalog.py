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
        assert product.colours[0] == product.colour
        colour = product.colour if len(product.colours) == 1 else list(product.colours)
        assert (attrs["colour"], attrs["pattern"], attrs["material"]) == (
            colour,
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
        several = len(product.colours) > 1
        for text in (product.title, product.description):
            words = text.replace(".", "").replace(",", "").split()
            assert pattern.name in words
            assert cat.name in text
            if not several:
                assert colour.name in words
        if several:  # the title names none of its colours, the description all of them
            assert not set(COLOURS) & set(product.title.split())
            assert not any(c.zh in product.title_zh for c in COLOURS.values())
            assert product.description.endswith(
                f" In {', '.join(product.colours[:-1])} or {product.colours[-1]}."
            )
        assert product.title.endswith(cat.name)
        assert material.name in product.title  # "leather shoes" names it via the category
        assert product.title_zh.startswith(pattern.zh if several else colour.zh + pattern.zh)
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


# --- variants -------------------------------------------------------------------------------

CLOTHES = {"tshirt", "dress", "trousers", "skirt", "coat"}
SHOES = {"shoes", "sneakers", "boots"}


def test_clothes_and_shoes_come_in_sizes_and_some_clothes_in_colours():
    products = list(demo_products(2000))
    sizes = Counter()
    for product in products:
        key = product.attributes["category"]
        if key not in CLOTHES | SHOES:
            assert (product.variants, product.colours) == ((), (product.colour,))
            continue
        names = ["Colour", "Size"] if len(product.colours) > 1 else ["Size"]
        assert all(list(v.options) == names for v in product.variants)
        product_sizes = list(dict.fromkeys(v.options["Size"] for v in product.variants))
        assert len(product.variants) == len(product.colours) * len(product_sizes)
        if key in CLOTHES:
            assert product_sizes in (["XS", "S", "M", "L", "XL"], ["S", "M", "L"])
        else:
            assert len(product.colours) == 1
            system = {s.split()[0] for s in product_sizes}
            assert system in ({"EU"}, {"US"})
            assert [int(s.split()[1]) for s in product_sizes] == sorted(
                int(s.split()[1]) for s in product_sizes
            )
        sizes.update(product_sizes)
        for variant in product.variants:
            code = variant.options["Size"].replace(" ", "")
            assert variant.sku.startswith(product.sku + "-")
            assert variant.sku.endswith(code)
    assert {"XS", "XL", "EU 40", "US 9"} <= set(sizes)
    clothes = [p for p in products if p.attributes["category"] in CLOTHES]
    several = Counter(len(p.colours) for p in clothes)
    assert set(several) == {1, 2, 3}
    assert 0.25 < (several[2] + several[3]) / len(clothes) < 0.42  # about a third
    skus = [v.sku for p in products for v in p.variants]
    assert len(skus) == len(set(skus))


def test_variants_prices_and_stock_summarise_to_the_product():
    products = [p for p in demo_products(2000) if p.variants]
    upcharged = sold_out_sizes = 0
    for product in products:
        prices = {v.price for v in product.variants}
        assert min(prices) == product.price  # mostly equal; larger sizes may cost more
        assert max(prices) - product.price < product.price * Decimal("0.1") + 2
        upcharged += len(prices) > 1
        sellable = [v for v in product.variants if v.stock > 0]
        assert bool(sellable) == product.in_stock
        if product.in_stock:
            assert min(v.price for v in sellable) == product.price
            sold_out_sizes += len(sellable) < len(product.variants)
    assert 0.15 < upcharged / len(products) < 0.35
    assert sold_out_sizes / sum(p.in_stock for p in products) > 0.5


def test_each_colour_has_its_own_photo_in_that_colour():
    product = next(p for p in demo_products(500) if len(p.colours) == 3 and p.pattern == "plain")
    assert len(product.photos) == product.image_count + 2
    assert product.photos[product.image_count :] == tuple((0, c) for c in product.colours[1:])
    for variant in product.variants:
        colour = variant.options["Colour"].lower()
        image_index, photo_colour = product.photos[variant.photo]
        assert photo_colour == colour
        image = decode(render_product_image(product, image_index, colour=colour))
        _, mask = render_product_image_and_mask(product, image_index, 0, 256, colour)
        pixels = np.asarray(image.resize((64, 64), Image.BILINEAR), dtype=float)
        inside = np.asarray(mask.resize((64, 64), Image.BILINEAR)) >= 250
        mean = pixels[inside].mean(0)
        assert COLOUR_NAMES[np.linalg.norm(PALETTE - mean, axis=1).argmin()] == colour
    # The first colour's photo is the product's own first photo.
    assert render_product_image(product, 0, colour=product.colour) == render_product_image(
        product, 0
    )
