"""Fixtures used by several test folders; plain builders live in tests/builders.py."""

import itertools
from pathlib import Path

import pytest
from django.core.cache import cache

from catalog.services import category_get_or_create_path, product_create
from embeddings.spaces import space_ensure_default
from tests.builders import COLOURS, jpeg_bytes

TESTS = Path(__file__).parent
# Slow tests that start real processes: `./bin/test -m "not ops and not browser"` skips them.
MARKERS_BY_FOLDER = {"ops": pytest.mark.ops, "browser": pytest.mark.browser}


def pytest_collection_modifyitems(items):
    """Mark by folder, so a new file under tests/ops or tests/browser cannot miss its marker."""
    for item in items:
        for folder, marker in MARKERS_BY_FOLDER.items():
            if item.path.is_relative_to(TESTS / folder):
                item.add_marker(marker)


_sku_numbers = itertools.count(1)


@pytest.fixture(autouse=True)
def empty_cache():
    """Each test starts with an empty cache: what one test cached (a count, a query's vector)
    must not answer for the next one's database."""
    cache.clear()


@pytest.fixture(autouse=True)
def default_space(request):
    """Every database test starts with the default active space, as `migrate` makes it.

    Created inside the test's own transaction (settings.test turns off the one `migrate`
    makes), so each test gets a fresh HNSW index that rolls back with it.
    """
    uses_db = request.node.get_closest_marker("django_db") or {"db", "transactional_db"} & set(
        request.fixturenames
    )
    if not uses_db:
        return None
    request.getfixturevalue("db")
    return space_ensure_default()


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


@pytest.fixture
def catalog_shop(make_product, embed_on_commit):
    """A small shop with a category tree, brands, prices, stock and Chinese titles."""
    tees = category_get_or_create_path(["Clothing", "T-Shirts"])
    dresses = category_get_or_create_path(["Clothing", "Dresses"])
    shoes = category_get_or_create_path(["Shoes"])
    rows = [
        ("TEE-100", "Red striped T-Shirt", tees, "Acme", "12.50", True, "红色条纹T恤"),
        ("TEE-101", "Plain white t-shirt", tees, "Basics", "9.90", True, "白色纯色T恤"),
        ("DRS-200", "Red striped summer dress", dresses, "Acme", "39.00", False, "红色条纹连衣裙"),
        ("DRS-201", "Blue linen dress", dresses, "Juniper", "59.00", True, "蓝色亚麻连衣裙"),
        ("SHO-300", "Black leather shoes", shoes, "Stepwell", "89.00", True, "黑色真皮皮鞋"),
        ("SHO-301", "Brown suede boots", shoes, "Stepwell", "120.00", True, "棕色麂皮靴子"),
    ]
    products = {}
    with embed_on_commit():
        for i, (sku, title, category, brand, price, in_stock, zh) in enumerate(rows):
            products[sku] = make_product(
                sku=sku,
                title=title,
                description=f"A {title.lower()} from {brand}, made to last.",
                category=category,
                brand=brand,
                price=price,
                in_stock=in_stock,
                attributes={"titles": {"zh": zh}},
                images=[jpeg_bytes(COLOURS[i % 8], seed=i)],
            )
    return products
