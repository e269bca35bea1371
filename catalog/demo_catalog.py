"""Deterministic synthetic demo catalog: products plus rendered product photos.

Django-free on purpose: it feeds ``manage.py load_demo_catalog`` and also serves as
training data for a tiny CLIP model (64x64 input), so colour, pattern and category
must stay visually distinguishable at 64 px and titles must name them consistently.
Nothing is downloaded; images are drawn with PIL from simple silhouettes.

Clothes and shoes come in sizes (variants); a third of the clothes in 2-3 colours, with a
photo in each colour and titles that name none (the Colour option's values do).

Everything is a pure function of ``(seed, index)`` (and ``image_index`` for images):
no global random state, no ``hash()`` (salted per process), so the same inputs give
the same product and byte-identical JPEGs in every process.
"""

from __future__ import annotations

import hashlib
import io
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFilter

__all__ = [
    "CATEGORIES",
    "COLOURS",
    "MATERIALS",
    "PATTERNS",
    "Category",
    "Colour",
    "DEMO_FACETS",
    "DemoProduct",
    "DemoVariant",
    "Material",
    "Pattern",
    "demo_product",
    "demo_products",
    "render_product_image",
    "render_product_image_and_mask",
]

RGB = tuple[int, int, int]


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Colour:
    name: str
    zh: str
    rgb: RGB
    secondary: RGB  # contrasting colour for stripes/dots/checks


@dataclass(frozen=True)
class Pattern:
    name: str
    zh: str


@dataclass(frozen=True)
class Material:
    name: str
    zh: str
    phrase: str  # used in descriptions ("in soft cotton")
    price_factor: float


@dataclass(frozen=True)
class Category:
    key: str
    name: str  # English noun used in titles
    zh: str
    path: tuple[str, ...]
    path_zh: tuple[str, ...]
    materials: tuple[str, ...]
    price_range: tuple[int, int]  # USD
    brands: str  # key into _BRANDS
    features: tuple[str, ...]
    pair: bool = False  # "a pair of boots"


_LIGHT, _DARK = (246, 244, 238), (32, 34, 44)

# RGB values are spread out in RGB space (nearest pair ~75 apart) so that a colour
# stays identifiable after pattern mixing, lighting jitter and JPEG at 64x64.
# Light colours get a dark secondary, dark/saturated ones a light one.
COLOURS: dict[str, Colour] = {
    c.name: c
    for c in (
        Colour("red", "红色", (208, 28, 36), _LIGHT),
        Colour("black", "黑色", (24, 24, 26), _LIGHT),
        Colour("white", "白色", (250, 250, 248), (30, 44, 100)),
        Colour("navy", "藏青色", (24, 38, 96), _LIGHT),
        Colour("blue", "蓝色", (36, 112, 222), _LIGHT),
        Colour("green", "绿色", (30, 148, 62), _LIGHT),
        Colour("yellow", "黄色", (248, 208, 24), _DARK),
        Colour("pink", "粉色", (244, 132, 184), _DARK),
        Colour("grey", "灰色", (136, 136, 138), _LIGHT),
        Colour("brown", "棕色", (118, 68, 32), _LIGHT),
        Colour("purple", "紫色", (122, 48, 164), _LIGHT),
        Colour("orange", "橙色", (244, 122, 18), _DARK),
    )
}

PATTERNS: dict[str, Pattern] = {
    p.name: p
    for p in (
        Pattern("plain", "纯色"),
        Pattern("striped", "条纹"),
        Pattern("dotted", "波点"),
        Pattern("checked", "格子"),
    )
}

MATERIALS: dict[str, Material] = {
    m.name: m
    for m in (
        Material("cotton", "棉质", "soft cotton", 1.0),
        Material("linen", "亚麻", "breathable linen", 1.15),
        Material("wool", "羊毛", "warm wool", 1.3),
        Material("cashmere", "羊绒", "luxurious cashmere", 1.8),
        Material("silk", "真丝", "smooth silk", 1.6),
        Material("polyester", "涤纶", "easy-care polyester", 0.85),
        Material("denim", "牛仔", "sturdy denim", 1.1),
        Material("leather", "真皮", "genuine leather", 1.5),
        Material("suede", "麂皮", "soft suede", 1.4),
        Material("canvas", "帆布", "durable canvas", 0.9),
        Material("nylon", "尼龙", "lightweight nylon", 0.95),
        Material("mesh", "网面", "breathable mesh", 1.0),
        Material("velvet", "丝绒", "plush velvet", 1.25),
        Material("ceramic", "陶瓷", "glazed ceramic", 1.0),
        Material("porcelain", "骨瓷", "fine porcelain", 1.3),
        Material("glass", "玻璃", "hand-blown glass", 1.2),
    )
}


def _cat(key, name, zh, path, path_zh, materials, price, brands, features, pair=False):
    return Category(key, name, zh, path, path_zh, materials, price, brands, features, pair)


# Kept as a compact table: one category per three lines reads better than ruff's layout.
# fmt: off
CATEGORIES: dict[str, Category] = {
    c.key: c
    for c in (
        _cat("tshirt", "t-shirt", "T恤", ("Clothing", "T-Shirts"), ("服装", "T恤"),
             ("cotton", "linen", "polyester"), (12, 35), "apparel",
             ("with a classic crew neck", "with a relaxed everyday fit")),
        _cat("dress", "dress", "连衣裙", ("Women", "Dresses"), ("女装", "连衣裙"),
             ("cotton", "linen", "silk", "polyester"), (35, 120), "apparel",
             ("with a flattering A-line cut", "with a fitted waist")),
        _cat("trousers", "trousers", "长裤", ("Clothing", "Trousers"), ("服装", "长裤"),
             ("cotton", "denim", "linen", "wool"), (30, 95), "apparel",
             ("with a straight leg", "with a comfortable mid-rise waist"), pair=True),
        _cat("skirt", "skirt", "半身裙", ("Women", "Skirts"), ("女装", "半身裙"),
             ("cotton", "denim", "wool", "linen"), (25, 75), "apparel",
             ("with soft pleats", "that falls just above the knee")),
        _cat("coat", "coat", "大衣", ("Clothing", "Coats & Jackets"), ("服装", "外套"),
             ("wool", "cashmere", "cotton", "polyester"), (70, 260), "apparel",
             ("with notched lapels", "with a single-breasted front")),
        _cat("shoes", "leather shoes", "皮鞋", ("Shoes", "Leather Shoes"), ("鞋履", "皮鞋"),
             ("leather",), (55, 180), "footwear",
             ("with a classic lace-up front", "with a cushioned insole"), pair=True),
        _cat("sneakers", "sneakers", "运动鞋", ("Shoes", "Sneakers"), ("鞋履", "运动鞋"),
             ("canvas", "leather", "mesh"), (35, 130), "footwear",
             ("with a grippy rubber sole", "built for all-day comfort"), pair=True),
        _cat("boots", "boots", "靴子", ("Shoes", "Boots"), ("鞋履", "靴子"),
             ("leather", "suede"), (70, 230), "footwear",
             ("with a sturdy heel", "with a side zip"), pair=True),
        _cat("handbag", "handbag", "手提包", ("Bags", "Handbags"), ("箱包", "手提包"),
             ("leather", "canvas", "suede"), (45, 300), "bags",
             ("with a top handle", "with a secure clasp")),
        _cat("backpack", "backpack", "双肩包", ("Bags", "Backpacks"), ("箱包", "双肩包"),
             ("canvas", "nylon", "leather"), (30, 150), "bags",
             ("with a padded laptop sleeve", "with a zip front pocket")),
        _cat("cap", "cap", "棒球帽", ("Accessories", "Hats & Caps"), ("配饰", "帽子"),
             ("cotton", "wool", "canvas"), (14, 42), "bags",
             ("with an adjustable strap", "with a curved brim")),
        _cat("scarf", "scarf", "围巾", ("Accessories", "Scarves"), ("配饰", "围巾"),
             ("wool", "cashmere", "silk", "cotton"), (18, 95), "bags",
             ("with fringed ends", "that is soft against the skin")),
        _cat("mug", "mug", "马克杯", ("Home", "Mugs"), ("家居", "马克杯"),
             ("ceramic", "porcelain"), (9, 26), "home",
             ("that holds 350 ml", "that is dishwasher safe")),
        _cat("cushion", "cushion", "抱枕", ("Home", "Cushions"), ("家居", "抱枕"),
             ("cotton", "linen", "velvet"), (16, 55), "home",
             ("with a hidden zip", "with a plump feather filling")),
        _cat("vase", "vase", "花瓶", ("Home", "Vases"), ("家居", "花瓶"),
             ("ceramic", "glass", "porcelain"), (18, 85), "home",
             ("for fresh or dried flowers", "with a curved silhouette")),
        _cat("lamp", "table lamp", "台灯", ("Home", "Lighting"), ("家居", "灯具"),
             ("ceramic", "linen", "glass"), (28, 140), "home",
             ("with a fabric shade", "that gives a warm, soft light")),
    )
}

# fmt: on

# Invented brand names, grouped so that mugs are not sold by a sneaker brand.
_BRANDS: dict[str, tuple[str, ...]] = {
    "apparel": ("Northwind", "Atlas Thread", "Juniper Lane", "Maple & Moss", "Solstice"),
    "footwear": ("Stride & Co.", "Kestrel", "Copperfield", "Fenwick"),
    "bags": ("Blue Harbor", "Arcadia", "Willow & Finch", "Oakridge"),
    "home": ("Hearth & Home", "Lumen Co.", "Ember Ceramics", "Quiet Oak"),
}


# Which categories come in sizes: clothes by letter, shoes by number.
_SIZED = {
    "tshirt": "letters", "dress": "letters", "trousers": "letters", "skirt": "letters",
    "coat": "letters", "shoes": "numbers", "sneakers": "numbers", "boots": "numbers",
}  # fmt: skip
_LETTER_SIZES = (("XS", "S", "M", "L", "XL"), ("S", "M", "L"))
# Shoe sizes follow the brand: EU numbers for some, US numbers for others.
_SHOE_SYSTEM = {"Stride & Co.": "EU", "Kestrel": "EU", "Copperfield": "US", "Fenwick": "US"}
_SHOE_FIRST = {"EU": (36, 38, 39), "US": (5, 6, 7)}
MULTI_COLOUR_SHARE = 1 / 3  # of the clothes: sold in 2 or 3 colours, one photo each
OUT_OF_STOCK_SHARE = 0.2  # of the sizes of a product in stock

# The demo shop's facets (name, label, value aliases), set up when a shop has none: its
# options, then two attributes. Aliases are other names shoppers use for a value.
DEMO_FACETS: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("Colour", "Colour", {
        **{c.zh: c.name.capitalize() for c in COLOURS.values()},
        "gray": "Grey", "dark blue": "Navy", "navy blue": "Navy", "violet": "Purple",
    }),
    ("Size", "Size", {
        "extra small": "XS", "small": "S", "medium": "M", "large": "L", "extra large": "XL",
    }),
    ("pattern", "Pattern", {"stripes": "striped", "polka dot": "dotted", "gingham": "checked"}),
    ("material", "Material", {}),
)  # fmt: skip


# ------------------------------------------------------------------------ products


@dataclass(frozen=True)
class DemoVariant:
    sku: str
    options: dict  # {"Colour": "Red", "Size": "M"}, in the product's order of options
    price: Decimal
    stock: int  # 0: sold out
    photo: int  # position of the product's photo that shows it


@dataclass(frozen=True)
class DemoProduct:
    sku: str
    title: str  # English
    title_zh: str  # Chinese
    description: str
    brand: str
    category: tuple[str, ...]  # path, e.g. ("Women", "Dresses")
    category_zh: str  # Chinese leaf name, e.g. "连衣裙"
    colour: str
    pattern: str
    material: str
    price: Decimal
    currency: str
    in_stock: bool
    image_count: int  # 1..3 photos in its first colour
    attributes: dict  # JSON-serialisable: keys of category/colour/pattern/material, zh names...
    # Its colours, the first one `colour`; more than one: a Colour option, one photo each.
    colours: tuple[str, ...] = ()
    variants: tuple[DemoVariant, ...] = ()  # clothes and shoes: one per colour and size

    @property
    def index(self) -> int:
        return int(self.sku.rsplit("-", 1)[1])

    @property
    def options(self) -> list[dict]:
        """Its options as the catalog summarises them: [{"name": "Size", "values": [...]}]."""
        names = list(self.variants[0].options) if self.variants else []
        return [
            {"name": name, "values": list(dict.fromkeys(v.options[name] for v in self.variants))}
            for name in names
        ]

    @property
    def price_max(self) -> Decimal | None:
        return max((v.price for v in self.variants), default=None)

    @property
    def photos(self) -> tuple[tuple[int, str], ...]:
        """(image_index, colour) of each photo, by position: `image_count` photos in its
        first colour, then one of the first pose in each further colour."""
        first = tuple((i, self.colour) for i in range(self.image_count))
        return first + tuple((0, colour) for colour in self.colours[1:])


def _rng(*parts: object) -> random.Random:
    """A private RNG keyed by ``parts`` (ints/strs); stable across processes and runs."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))


@lru_cache(maxsize=64)
def _orders(seed: int) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """Seed-specific orderings of colours, categories and patterns."""
    rng = _rng("orders", seed)
    return tuple(
        tuple(rng.sample(list(keys), len(keys))) for keys in (COLOURS, CATEGORIES, PATTERNS)
    )


def _design(index: int, seed: int) -> tuple[str, str, str]:
    """(colour, category, pattern) keys for a product.

    A Latin-square walk rather than random draws, so coverage is exact instead of
    merely likely: any 12 consecutive products have 12 different colours, every
    12*K block (K categories, 192 products) holds each (colour, category) once, and
    every 4*12*K block each (colour, category, pattern) triple once. Neighbours
    differ in colour, category and pattern, so listing pages look varied.
    """
    colours, cats, patterns = _orders(seed)
    nc, nk, npat = len(colours), len(cats), len(patterns)
    c = index % nc
    j = index // nc % nk
    block = index // (nc * nk)
    return colours[c], cats[(j + c) % nk], patterns[(block + j + c) % npat]


def _price(category: Category, material: Material, rng: random.Random) -> Decimal:
    lo, hi = category.price_range
    # Skewed towards the cheap end, like real assortments; shop-like endings.
    value = (lo + (hi - lo) * rng.random() ** 1.6) * material.price_factor
    whole = max(int(value), 1)
    return Decimal(f"{whole}.{rng.choice(('99', '99', '95', '50', '00'))}")


def _titles(colour: Colour | None, pattern: Pattern, material: Material, cat: Category):
    """English and Chinese titles; `colour` None (sold in several) names none."""
    # "leather shoes" already names its material: don't say "leather leather shoes".
    show_material = material.name not in cat.name
    mat_en = f"{material.name} " if show_material else ""
    mat_zh = material.zh if show_material else ""
    colour_en, colour_zh = (f"{colour.name} ", colour.zh) if colour else ("", "")
    if pattern.name == "plain":
        title = f"plain {colour_en}{mat_en}{cat.name}"
    else:
        title = f"{colour_en}{pattern.name} {mat_en}{cat.name}"
    return title, f"{colour_zh}{pattern.zh}{mat_zh}{cat.zh}"


def _colours(cat: Category, colour: str, rng: random.Random) -> tuple[str, ...]:
    if _SIZED.get(cat.key) != "letters" or rng.random() >= MULTI_COLOUR_SHARE:
        return (colour,)
    others = [name for name in COLOURS if name != colour]
    return (colour, *rng.sample(others, rng.choice((1, 2))))


def _sizes(cat: Category, brand: str, rng: random.Random) -> tuple[str, ...]:
    kind = _SIZED.get(cat.key)
    if kind == "letters":
        return rng.choice(_LETTER_SIZES)
    if kind == "numbers":
        system = _SHOE_SYSTEM[brand]
        first = rng.choice(_SHOE_FIRST[system])
        return tuple(f"{system} {n}" for n in range(first, first + (7 if system == "EU" else 6)))
    return ()


def _variants(
    sku: str,
    colours: tuple[str, ...],
    sizes: tuple[str, ...],
    image_count: int,
    *,
    price: Decimal,
    in_stock: bool,
    rng: random.Random,
) -> tuple[DemoVariant, ...]:
    """One variant per colour and size. A quarter of the products charge a little more
    for the largest sizes; sold out products have no stock, the others lack some sizes
    but always keep one at the product's price, so its price stays the lowest sellable."""
    if not sizes:
        return ()
    larger = sizes[-1:] if sizes[0].isalpha() else sizes[-2:]  # XL; the two largest shoes
    upcharge = Decimal(max(2, int(price * Decimal("0.08")))) if rng.random() < 0.25 else 0
    grid = [(colour, size) for colour in colours for size in sizes]
    prices = [price + upcharge if size in larger else price for _, size in grid]
    stocks = [
        rng.randint(1, 40) if in_stock and rng.random() >= OUT_OF_STOCK_SHARE else 0 for _ in grid
    ]
    if in_stock and not any(s for s, p in zip(stocks, prices, strict=True) if p == price):
        stocks[len(sizes) // 2] = rng.randint(1, 10)  # a middle size of the first colour
    many = len(colours) > 1
    variants = []
    for (colour, size), variant_price, stock in zip(grid, prices, stocks, strict=True):
        code = size.replace(" ", "")
        variants.append(
            DemoVariant(
                sku=f"{sku}-{colour.upper()}-{code}" if many else f"{sku}-{code}",
                options={"Colour": colour.capitalize(), "Size": size} if many else {"Size": size},
                price=variant_price,
                stock=stock,
                photo=image_count + colours.index(colour) - 1 if colour != colours[0] else 0,
            )
        )
    return tuple(variants)


def demo_product(index: int, seed: int = 0) -> DemoProduct:
    """The demo product number ``index`` (0-based) of the catalog for ``seed``."""
    if index < 0:
        raise ValueError("index must be >= 0")
    colour_key, cat_key, pattern_key = _design(index, seed)
    colour, cat, pattern = COLOURS[colour_key], CATEGORIES[cat_key], PATTERNS[pattern_key]
    rng = _rng("product", seed, index)
    material = MATERIALS[rng.choice(cat.materials)]
    brand = rng.choice(_BRANDS[cat.brands])
    # Its own generator: the fields drawn before variants existed stay as they were.
    options_rng = _rng("variants", seed, index)
    colours = _colours(cat, colour_key, options_rng)
    one_colour = colour if len(colours) == 1 else None
    title, title_zh = _titles(one_colour, pattern, material, cat)
    lead = "A pair of" if cat.pair else "A"
    named = f"{one_colour.name} " if one_colour else ""
    look = f"plain {named}".strip() if pattern.name == "plain" else f"{named}{pattern.name}"
    description = (
        f"{lead} {look} {cat.name} in {material.phrase} from {brand}, {rng.choice(cat.features)}."
    )
    if not one_colour:
        description += f" In {', '.join(colours[:-1])} or {colours[-1]}."
    price, in_stock = _price(cat, material, rng), rng.random() < 0.9
    image_count = rng.choices((1, 2, 3), weights=(3, 5, 2))[0]
    zh_colours = [COLOURS[c].zh for c in colours]
    return DemoProduct(
        sku=f"DEMO-{index:06d}",
        title=title,
        title_zh=title_zh,
        description=description,
        brand=brand,
        category=cat.path,
        category_zh=cat.zh,
        colour=colour.name,
        pattern=pattern.name,
        material=material.name,
        price=price,
        currency="USD",
        in_stock=in_stock,
        image_count=image_count,
        attributes={
            "category": cat.key,
            "category_name": cat.name,
            "category_path_zh": list(cat.path_zh),
            # Sold in several colours: all of them (its title names none).
            "colour": colours[0] if one_colour else list(colours),
            "colour_zh": zh_colours[0] if one_colour else zh_colours,
            "pattern": pattern.name,
            "pattern_zh": pattern.zh,
            "material": material.name,
            "material_zh": material.zh,
            # Fixed per product so that all its photos show the same item.
            "style": round(rng.random(), 4),
        },
        colours=colours,
        variants=_variants(
            f"DEMO-{index:06d}",
            colours,
            _sizes(cat, brand, options_rng),
            image_count,
            price=price,
            in_stock=in_stock,
            rng=options_rng,
        ),
    )


def demo_products(count: int, seed: int = 0, start: int = 0) -> Iterator[DemoProduct]:
    """Lazily yield products ``start .. start+count-1`` (constant memory)."""
    for index in range(start, start + count):
        yield demo_product(index, seed)


# ---------------------------------------------------------------------- silhouettes
#
# Shapes live in a canonical box x, y in [-0.5, 0.5] (y down). A shape is a dict:
#   body:   polygons filled with the product colour + pattern
#   accent: (polygon, tone) drawn on top in a fixed tone (soles, rims, hardware)
#   lines:  (polyline, width, tone) details (seams, laces); widths in box units
# Tones: "shade"/"light" derive from the product colour, or a literal RGB.
# A shape may also be a list of such dicts, drawn back to front (pairs of shoes).
# Ellipses are polygons too, so one affine transform (pose) applies to everything.


# Coordinate lists read best as compact rows, so the formatter is off for shapes.
# fmt: off


def _ell(cx, cy, rx, ry, a0=0.0, a1=360.0, n=28):
    return [
        (cx + rx * math.cos(math.radians(a)), cy + ry * math.sin(math.radians(a)))
        for a in (a0 + (a1 - a0) * i / n for i in range(n + 1))
    ]


def _band(cx, cy, rx, ry, t, a0, a1):
    """A thick elliptical arc (handles, loops): outer arc plus reversed inner arc."""
    return _ell(cx, cy, rx, ry, a0, a1) + _ell(cx, cy, rx - t, ry - t, a0, a1)[::-1]


def _sym(half):
    """Mirror a left-half outline (top centre -> bottom centre) into a full polygon."""
    return half + [(-x, y) for x, y in reversed(half)]


def _rect(x0, y0, x1, y1):
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def _pair(shape):
    """Two copies, one behind the other, like a pair of shoes photographed together."""

    def moved(dx, dy):
        def f(points):
            return [(x * 0.9 + dx, y * 0.9 + dy) for x, y in points]

        return {"body": [f(p) for p in shape["body"]],
                "accent": [(f(p), tone) for p, tone in shape.get("accent", ())],
                "lines": [(f(p), w, tone) for p, w, tone in shape.get("lines", ())]}

    return [moved(-0.05, -0.07), moved(0.05, 0.15)]


def _tshirt(v):
    w = 0.27 + 0.04 * v  # body half-width
    body = _sym([(0, -0.35), (-0.07, -0.37), (-0.12, -0.44), (-0.30, -0.40),
                 (-0.50, -0.19), (-0.40, -0.06), (-w, -0.20), (-w, 0.46), (0, 0.46)])
    neck = [(-0.12, -0.44), (-0.07, -0.35), (0, -0.32), (0.07, -0.35), (0.12, -0.44)]
    return {"body": [body], "lines": [(neck, 0.025, "shade"),
                                      ([(-0.47, -0.15), (-0.39, -0.07)], 0.015, "shade"),
                                      ([(0.47, -0.15), (0.39, -0.07)], 0.015, "shade")]}


def _dress(v):
    hem = 0.38 + 0.08 * v
    body = _sym([(0, -0.36), (-0.07, -0.40), (-0.10, -0.49), (-0.15, -0.49), (-0.16, -0.38),
                 (-0.21, -0.28), (-0.15, -0.08), (-hem, 0.44), (-hem * 0.5, 0.48), (0, 0.49)])
    return {"body": [body], "accent": [(_rect(-0.155, -0.10, 0.155, -0.05), "shade")],
            "lines": [([(-0.10, -0.49), (-0.04, -0.37), (0, -0.35), (0.04, -0.37),
                        (0.10, -0.49)], 0.02, "shade")]}


def _trousers(v):
    leg = 0.05 + 0.04 * v
    body = [(-0.26, -0.48), (0.26, -0.48), (0.31, 0.48), (leg, 0.48), (0, -0.08),
            (-leg, 0.48), (-0.31, 0.48)]
    return {"body": [body], "accent": [(_rect(-0.26, -0.48, 0.26, -0.41), "shade")],
            "lines": [([(0, -0.41), (0, -0.16)], 0.015, "shade"),
                      ([(-0.24, -0.40), (-0.13, -0.30)], 0.015, "shade"),
                      ([(0.24, -0.40), (0.13, -0.30)], 0.015, "shade")]}


def _skirt(v):
    hem = 0.40 + 0.06 * v
    body = _sym([(0, -0.38), (-0.23, -0.38), (-hem, 0.40), (-hem * 0.5, 0.44), (0, 0.45)])
    pleats = [([(x * 0.5, -0.30), (x, 0.42)], 0.015, "shade") for x in (-0.27, -0.09, 0.09, 0.27)]
    return {"body": [body], "accent": [(_rect(-0.235, -0.40, 0.235, -0.30), "shade")],
            "lines": pleats}


def _coat(v):
    w = 0.28 + 0.03 * v
    body = _sym([(0, -0.20), (-0.10, -0.46), (-0.30, -0.41), (-0.47, 0.20), (-0.36, 0.23),
                 (-0.26, -0.12), (-w, 0.49), (0, 0.49)])
    lapel = [(-0.10, -0.46), (-0.16, -0.30), (-0.07, -0.27), (0, -0.20), (0.07, -0.27),
             (0.16, -0.30), (0.10, -0.46)]
    buttons = [(_ell(0.06, y, 0.025, 0.025, n=12), "shade") for y in (-0.10, 0.08, 0.26)]
    return {"body": [body], "accent": buttons,
            "lines": [(lapel, 0.02, "shade"), ([(0, -0.20), (0, 0.49)], 0.015, "shade"),
                      ([(-0.46, 0.15), (-0.36, 0.18)], 0.02, "shade"),
                      ([(0.46, 0.15), (0.36, 0.18)], 0.02, "shade")]}


def _shoes(v):
    toe = 0.50 + 0.03 * v
    upper = [(-0.47, 0.10), (-0.50, -0.04), (-0.48, -0.16), (-0.40, -0.21), (-0.30, -0.18),
             (-0.18, -0.12), (-0.04, -0.14), (0.10, -0.19), (0.22, -0.16), (0.34, -0.10),
             (toe - 0.07, -0.05), (toe - 0.01, 0.0), (toe, 0.05), (toe - 0.03, 0.10)]
    sole = [(-0.48, 0.09), (toe - 0.02, 0.09), (toe - 0.05, 0.15), (-0.30, 0.15),
            (-0.30, 0.22), (-0.47, 0.22)]
    laces = [([(-0.02 + 0.05 * i, -0.15 - 0.015 * i), (0.02 + 0.05 * i, -0.10)], 0.015, _LIGHT)
             for i in range(3)]
    return {"body": [upper], "accent": [(sole, (36, 30, 28))],
            "lines": [([(-0.40, -0.21), (-0.18, -0.12), (-0.04, -0.14)], 0.025, "shade"),
                      ([(toe - 0.2, 0.05), (toe - 0.06, -0.01)], 0.02, "light")] + laces}


def _sneakers(v):
    upper = [(-0.46, 0.04), (-0.49, -0.20), (-0.42, -0.34), (-0.30, -0.33), (-0.20, -0.22),
             (0.0, -0.27), (0.16, -0.24), (0.34, -0.12), (0.48, -0.04), (0.50, 0.04)]
    sole = [(-0.50, 0.02), (0.51, 0.02), (0.50, 0.08), (0.44, 0.16), (-0.46, 0.16),
            (-0.50, 0.10)]
    swoosh = [(-0.34, -0.04), (-0.10, -0.07), (0.18, -0.14)]
    laces = [([(-0.14 + 0.07 * i, -0.25 + 0.012 * i), (-0.09 + 0.07 * i, -0.16)], 0.02, _LIGHT)
             for i in range(4)]
    return {"body": [upper], "accent": [(sole, (238, 238, 232))],
            "lines": [([(-0.48, 0.09), (0.50, 0.09)], 0.015, (170, 170, 165)),
                      (swoosh, 0.03 + 0.015 * v, _LIGHT)] + laces}


def _boots(v):
    shaft = -0.48 + 0.12 * v
    body = [(-0.30, shaft), (0.02, shaft), (0.04, -0.04), (0.22, 0.06), (0.42, 0.12),
            (0.49, 0.22), (0.47, 0.31), (-0.30, 0.31), (-0.33, 0.10)]
    sole = [(-0.31, 0.30), (0.48, 0.30), (0.46, 0.37), (-0.12, 0.37), (-0.12, 0.46),
            (-0.31, 0.46)]
    return {"body": [body], "accent": [(sole, (36, 30, 28))],
            "lines": [([(-0.30, shaft + 0.03), (0.02, shaft + 0.03)], 0.03, "shade"),
                      ([(-0.02, shaft + 0.06), (-0.02, 0.0)], 0.015, "shade")]}


def _handbag(v):
    top = -0.10 + 0.04 * v
    body = [(-0.30, top), (0.30, top), (0.43, 0.38), (0.38, 0.44), (-0.38, 0.44),
            (-0.43, 0.38)]
    handle = _band(0, top + 0.02, 0.20, 0.32, 0.055, 180, 360)
    flap = [(-0.31, top), (-0.34, 0.08), (0, 0.17), (0.34, 0.08), (0.31, top)]
    return {"body": [body, handle], "accent": [(_rect(-0.04, 0.11, 0.04, 0.19), (212, 176, 80))],
            "lines": [(flap, 0.02, "shade")]}


def _backpack(v):
    w = 0.31 + 0.04 * v
    body = _ell(0, -0.18, w, 0.24, 180, 360) + [(w, 0.40), (w - 0.06, 0.47),
                                                 (-w + 0.06, 0.47), (-w, 0.40)]
    loop = _band(0, -0.40, 0.09, 0.08, 0.03, 180, 360)
    straps = [([(-w, -0.22), (-w - 0.08, 0.05), (-w - 0.06, 0.38), (-w, 0.40)], "shade"),
              ([(w, -0.22), (w + 0.08, 0.05), (w + 0.06, 0.38), (w, 0.40)], "shade")]
    pocket = _ell(0, 0.10, w - 0.08, 0.12, 180, 360) + [(w - 0.08, 0.38), (-w + 0.08, 0.38),
                                                         (-w + 0.08, 0.10)]
    zip_ = _ell(0, -0.18, w - 0.06, 0.19, 190, 350, n=16)
    return {"body": [body, loop], "accent": straps,
            "lines": [(pocket, 0.025, "shade"), (zip_, 0.02, "shade")]}


def _cap(v):
    dome = _ell(-0.08, 0.12, 0.36, 0.40 + 0.04 * v, 180, 360)
    brim = [(0.18, 0.02), (0.40, 0.07), (0.51, 0.14), (0.42, 0.19), (0.18, 0.16)]
    return {"body": [dome, brim], "accent": [(_ell(-0.08, -0.29 - 0.04 * v, 0.04, 0.025,
                                                   n=12), "shade")],
            "lines": [([(-0.08, -0.27), (-0.20, -0.05), (-0.22, 0.12)], 0.015, "shade"),
                      ([(-0.08, -0.27), (0.06, -0.05), (0.10, 0.12)], 0.015, "shade"),
                      ([(-0.44, 0.10), (0.28, 0.10)], 0.03, "shade")]}


def _scarf(v):
    loop = _band(0, -0.27, 0.24, 0.18, 0.11, 0, 360)
    left = [(-0.22, -0.20), (-0.04, -0.14), (-0.02, 0.36), (-0.22, 0.34)]
    right_end = 0.16 + 0.08 * v
    right = [(0.02, -0.14), (0.21, -0.20), (0.23, right_end), (0.05, right_end + 0.02)]
    fringe = [([(x, y0), (x, y0 + 0.08)], 0.02, "body")
              for xs, y0 in ((range(-21, -2, 4), 0.35), (range(6, 23, 4), right_end + 0.01))
              for x in (i / 100 for i in xs)]
    return {"body": [loop, left, right], "lines": fringe
            + [([(-0.22, -0.20), (0.0, -0.15), (0.21, -0.20)], 0.02, "shade")]}


def _mug(v):
    top = -0.34 + 0.06 * v
    body = [(-0.32, top), (0.20, top), (0.20, 0.36), (0.16, 0.42), (-0.28, 0.42),
            (-0.32, 0.36)]
    handle = _band(0.20, 0.02, 0.20, 0.21, 0.075, -90, 90)
    rim = _ell(-0.06, top, 0.26, 0.05)
    return {"body": [body, handle], "accent": [(rim, "shade")],
            "lines": [(rim, 0.015, "light")]}


def _cushion(v):
    r, pinch = 0.42, 0.04 + 0.03 * v
    corners = [(-r, -r), (r, -r), (r, r), (-r, r)]
    pts = []
    for (x0, y0), (x1, y1) in zip(corners, corners[1:] + corners[:1], strict=True):
        # Sides bow inwards, like a stuffed cushion with pointed corners.
        nx, ny = -(y1 - y0) / (2 * r), (x1 - x0) / (2 * r)
        for t in (i / 8 for i in range(8)):
            bow = pinch * 4 * t * (1 - t)
            pts.append((x0 + (x1 - x0) * t + nx * bow, y0 + (y1 - y0) * t + ny * bow))
    return {"body": [pts], "lines": [(pts + pts[:1], 0.025, "shade")]}


def _vase(v):
    belly = 0.28 + 0.06 * v
    body = _sym([(0, -0.48), (-0.11, -0.48), (-0.08, -0.42), (-0.08, -0.30), (-0.16, -0.18),
                 (-belly + 0.03, -0.04), (-belly, 0.10), (-belly + 0.04, 0.26), (-0.15, 0.42),
                 (-0.16, 0.48), (0, 0.48)])
    return {"body": [body], "accent": [(_ell(0, -0.475, 0.09, 0.02, n=16), "shade")]}


def _lamp(v):
    w = 0.32 + 0.05 * v
    shade_ = [(-0.17, -0.48), (0.17, -0.48), (w, -0.08), (-w, -0.08)]
    return {"body": [shade_, _ell(0, 0.30, 0.15, 0.11), _rect(-0.20, 0.38, 0.20, 0.46)],
            "accent": [(_rect(-0.025, -0.08, 0.025, 0.20), (176, 168, 150))],
            "lines": [([(-w, -0.08), (w, -0.08)], 0.02, "shade")]}


_SHAPES = {
    "tshirt": _tshirt, "dress": _dress, "trousers": _trousers, "skirt": _skirt,
    "coat": _coat, "shoes": lambda v: _pair(_shoes(v)),
    "sneakers": lambda v: _pair(_sneakers(v)), "boots": _boots,
    "handbag": _handbag, "backpack": _backpack, "cap": _cap, "scarf": _scarf,
    "mug": _mug, "cushion": _cushion, "vase": _vase, "lamp": _lamp,
}

# fmt: on

# ------------------------------------------------------------------------ rendering


def _scale_rgb(rgb, f):
    return tuple(max(0, min(255, round(c * f))) for c in rgb)


def _mix(a, b, t):
    return tuple(round(x + (y - x) * t) for x, y in zip(a, b, strict=True))


def _draw_pattern(draw, pattern, to_px, px_per_unit, secondary, phase):
    """Texture in box coordinates, so it follows the object's pose.

    Periods (~0.12 box units, ~5 px at 64x64) are chosen to survive downscaling.
    Secondary coverage stays well under half so the named colour dominates.
    """
    offsets = [i * 0.125 + phase for i in range(-6, 7)]  # covers the box, any pose
    if pattern == "striped":
        for y in offsets:
            draw.polygon([to_px(x, yy) for x, yy in _rect(-0.8, y, 0.8, y + 0.045)], fill=secondary)
    elif pattern == "dotted":
        r = 0.032 * px_per_unit
        for row, y in enumerate(offsets):
            for x in offsets:
                cx, cy = to_px(x + (0.0625 if row % 2 else 0.0), y)
                draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=secondary)
    elif pattern == "checked":
        # Gingham: translucent bands both ways; crossings come out stronger.
        fill = secondary + (120,)
        for t in offsets:
            draw.polygon([to_px(x, y) for x, y in _rect(-0.8, t, 0.8, t + 0.05)], fill=fill)
            draw.polygon([to_px(x, y) for x, y in _rect(t, -0.8, t + 0.05, 0.8)], fill=fill)


@lru_cache(maxsize=8)
def _gradient(size: int) -> Image.Image:
    return Image.linear_gradient("L").resize((size, size))


def render_product_image_and_mask(
    product: DemoProduct, image_index: int, seed: int, size: int, colour: str | None = None
):
    """Render one photo; returns (RGB image, L mask of the product-coloured pixels).

    `colour`: another of its colours (default its first): the same shot in that colour."""
    attrs = product.attributes
    colour, pattern, cat = COLOURS[colour or product.colour], attrs["pattern"], attrs["category"]
    shape = _SHAPES[cat](attrs["style"])
    layers = shape if isinstance(shape, list) else [shape]
    phase = _rng("item", seed, product.sku).random() * 0.125  # same on all its photos
    rng = _rng("image", seed, product.sku, image_index)  # differs per photo

    # Pose: small rotation, scale, offset and mirror, like different studio shots.
    ang = math.radians(rng.uniform(-10, 10))
    flip = rng.choice((-1, 1))
    scale = size * rng.uniform(0.66, 0.80)
    cx = size * (0.5 + rng.uniform(-0.05, 0.05))
    cy = size * (0.5 + rng.uniform(-0.05, 0.05))
    cos_a, sin_a = math.cos(ang) * scale, math.sin(ang) * scale

    def to_px(x, y):
        x *= flip
        return cx + x * cos_a - y * sin_a, cy + x * sin_a + y * cos_a

    def poly(points, k=1.0):
        return [(px * k, py * k) for px, py in (to_px(x, y) for x, y in points)]

    # Lighting jitter changes brightness a little; the hue stays the named one.
    light = rng.uniform(0.92, 1.06)
    base = _scale_rgb(colour.rgb, light)
    tones = {
        "body": base,
        "shade": _mix(base, (0, 0, 0), 0.35),
        "light": _mix(base, (255, 255, 255), 0.45),
    }

    # Backdrop and shadow are smooth, so they are made at quarter size and scaled
    # up: light warm/cool grey, darker towards the floor, soft drop shadow.
    small = max(size // 4, 8)
    grey, tint = rng.uniform(214, 238), rng.uniform(-5, 5)
    top = (round(grey + tint), round(grey + tint * 0.3), round(grey - tint))
    bottom = _scale_rgb(top, rng.uniform(0.90, 0.97))
    backdrop = Image.composite(
        Image.new("RGB", (small, small), bottom),
        Image.new("RGB", (small, small), top),
        _gradient(small),
    )
    shadow = Image.new("L", (small, small), 0)
    sdraw, k, off = ImageDraw.Draw(shadow), small / size, small * 0.02
    for layer in layers:
        for points in layer["body"]:
            sdraw.polygon([(x + off, y + 2 * off) for x, y in poly(points, k)], fill=80)
    shadow = shadow.filter(ImageFilter.GaussianBlur(small / 40))
    backdrop.paste((0, 0, 0), (0, 0), shadow)
    image = backdrop.resize((size, size), Image.BILINEAR)

    texture = None
    if pattern != "plain":
        texture = Image.new("RGB", (size, size), base)
        _draw_pattern(
            ImageDraw.Draw(texture, "RGBA"),
            pattern,
            to_px,
            scale,
            _scale_rgb(colour.secondary, light),
            phase,
        )
    mask = Image.new("L", (size, size), 0)  # also returned for tests
    mdraw, draw = ImageDraw.Draw(mask), ImageDraw.Draw(image)
    for layer in layers:  # back to front
        bodies = [poly(points) for points in layer["body"]]
        if texture is None:
            for points in bodies:
                draw.polygon(points, fill=base)
        else:  # the texture shows through this layer's silhouette only
            layer_mask = Image.new("L", (size, size), 0)
            for points in bodies:
                ImageDraw.Draw(layer_mask).polygon(points, fill=255)
            image.paste(texture, (0, 0), layer_mask)
        for points in bodies:
            mdraw.polygon(points, fill=255)
            # A thin darker edge keeps white products visible on a light backdrop
            # and separates the front shoe of a pair from the back one.
            draw.polygon(points, outline=tones["shade"])
        # Details are cut out of the mask: it marks the pixels that show the
        # product's own colour and pattern.
        for points, tone in layer.get("accent", ()):
            points = poly(points)
            draw.polygon(points, fill=tones.get(tone, tone))
            mdraw.polygon(points, fill=0)
        for points, width, tone in layer.get("lines", ()):
            points, width = poly(points), max(1, round(width * scale))
            draw.line(points, fill=tones.get(tone, tone), width=width, joint="curve")
            mdraw.line(points, fill=0, width=width)
    return image, mask


def render_product_image(
    product: DemoProduct,
    image_index: int,
    seed: int = 0,
    size: int = 256,
    colour: str | None = None,
) -> bytes:
    """JPEG bytes of photo ``image_index`` (0-based, normally < image_count) of ``product``,
    in ``colour`` (one of its ``colours``; default its first).

    Pass the seed the product was generated with. Deterministic: the same product,
    image_index, seed, size and colour give identical bytes (for a given Pillow/libjpeg).
    """
    image, _ = render_product_image_and_mask(product, image_index, seed, size, colour)
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=85)
    return buf.getvalue()
