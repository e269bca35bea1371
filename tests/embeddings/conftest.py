"""Builders shared by the search tests."""

import pytest

from catalog.services import category_get_or_create_path
from tests.conftest import jpeg_bytes
from tests.embeddings.test_search import COLOURS


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
