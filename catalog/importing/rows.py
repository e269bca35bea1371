"""Validation of one record into a product row: every field checked, every problem named."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from catalog.importing.readers import (
    JsonTooDeepError,
    Record,
    RowError,
    base64_image,
    json_value,
)
from catalog.models import Category, Product

# The columns (JSON keys) that are Product fields; any other one becomes an attribute.
KNOWN_FIELDS = {
    "sku",
    "title",
    "description",
    "brand",
    "category",
    "price",
    "currency",
    "in_stock",
    "image",
    "attributes",
}
MAX_IMAGES_PER_ROW = 20
MAX_PRICE = Decimal("9999999999.99")  # Product.price: 12 digits, 2 of them decimals
TRUE_WORDS = {"1", "true", "yes", "y", "t", "in stock"}
FALSE_WORDS = {"0", "false", "no", "n", "f", "out of stock"}
_CURRENCY = re.compile(r"[A-Z]{3}")
_DECIMAL_COMMA = re.compile(r"\d+,\d{1,2}")


def _max_length(name: str) -> int:
    return Product._meta.get_field(name).max_length


@dataclass
class ImageRef:
    """An image a row names: an entry of the ZIP, an http(s) URL, or bytes (TSV)."""

    kind: str  # "zip" | "url" | "inline"
    value: str | bytes

    @property
    def label(self) -> str:
        return "the base64 image" if self.kind == "inline" else repr(self.value)


@dataclass
class VariantRow:
    """One variant of a product row (a shop platform's export): upserted by its SKU."""

    line: int
    sku: str
    options: dict[str, str]  # {"Size": "M"}, in the product's order of options
    price: Decimal
    compare_at_price: Decimal | None = None
    stock: int | None = None  # None: not tracked
    in_stock: bool = True  # sellable
    barcode: str = ""
    image: str | None = None  # the value of one of the product row's image refs
    sku_column: str = "SKU"  # the file's name for it, in errors


@dataclass
class ProductRow:
    """A valid row. Fields it does not give are left as they are on an existing product.

    A shop platform's product spans several lines of its file; its row lists its variants.
    """

    line: int
    sku: str
    title: str
    values: dict[str, Any] = field(default_factory=dict)  # description, brand, price...
    category: tuple[str, ...] | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    titles: dict[str, str] = field(default_factory=dict)  # translated titles by language
    images: list[ImageRef] | None = None  # None: the row says nothing about images
    checked: list = field(default_factory=list)  # CheckedImage, or a Future of one
    image_shas: dict[str, str] = field(default_factory=dict)  # ref value -> sha256, once checked
    variants: list[VariantRow] | None = None  # None: says nothing about variants; []: has none
    option_names: list[str] = field(default_factory=list)  # in the shop's order
    # The product's variants not listed are made inactive, except those in `variants_kept`
    # (listed further on in the file); off when a variant line failed: it is not gone.
    variants_complete: bool = True
    variants_kept: set[str] = field(default_factory=set)
    # Only variants (and their photos) for a product imported before: a WooCommerce
    # variation that is not next to its parent. The product's own fields are left alone.
    attach: bool = False
    line_errors: list[RowError] = field(default_factory=list)  # its lines not imported


class _Errors(list):
    def add(self, line: int, name: str, message: str, sku: str = "") -> None:
        self.append(RowError(line, name, message, sku))


def _blank(value: Any) -> bool:
    # An empty cell (or JSON null, "" or []) leaves the field as it is.
    return value is None or value == [] or (isinstance(value, str) and not value.strip())


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool | dict | list):
        raise ValueError("must be text")
    return str(value).strip()


def _price(value: Any) -> Decimal:
    if isinstance(value, bool):
        raise ValueError("must be a number")
    text = str(value).strip()
    if _DECIMAL_COMMA.fullmatch(text):  # "8,50" from a spreadsheet; "1,250" stays ambiguous
        text = text.replace(",", ".")
    try:
        price = Decimal(text)
    except InvalidOperation:
        raise ValueError(
            f"{str(value)[:40]!r} is not a number (write 12.50, without a currency sign)"
        ) from None
    if not price.is_finite():
        raise ValueError("must be a finite number")
    if price < 0:
        raise ValueError("cannot be negative")
    if price > MAX_PRICE:
        raise ValueError(f"is over the maximum of {MAX_PRICE:,}")
    if price != price.quantize(Decimal("0.01")):
        raise ValueError(f"{price} has more than 2 decimal places")
    return price.quantize(Decimal("0.01"))


def _in_stock(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    word = _text(value).lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"{word[:40]!r} is not yes/no (use true, false, yes, no, 1 or 0)")


def _category(value: Any) -> tuple[str, ...]:
    names = value if isinstance(value, list) else _text(value).split(">")
    path = tuple(_text(name) for name in names if _text(name))
    limit = Category._meta.get_field("name").max_length
    if any(len(name) > limit for name in path):
        raise ValueError(f"a category name is over {limit} characters")
    return path


def _image_refs(value: Any, *, has_archive: bool) -> list[ImageRef]:
    names = value if isinstance(value, list) else _text(value).split("|")
    refs = []
    for name in names:
        name = _text(name)
        if not name:
            continue
        if name.lower().startswith(("http://", "https://")):
            refs.append(ImageRef("url", name))
        elif "://" in name:
            raise ValueError(f"{name[:80]!r}: only http(s) URLs are downloaded")
        elif not has_archive:
            raise ValueError(f"{name[:80]!r} names a file of the images ZIP, but none was given")
        else:
            refs.append(ImageRef("zip", name))
    if len(refs) > MAX_IMAGES_PER_ROW:
        raise ValueError(f"{len(refs)} images, over the limit of {MAX_IMAGES_PER_ROW} a product")
    return refs


def product_row_parse(record: Record, *, has_archive: bool) -> ProductRow | list[RowError]:
    """A CSV or JSON Lines record as a product row, or every error it has."""
    fields = {name.lower(): value for name, value in record.fields.items()}
    errors = _Errors()
    line = record.line

    def text(name: str, required: bool = False) -> str:
        try:
            value = _text(fields.get(name))
        except ValueError as exc:
            errors.add(line, name, str(exc))
            return ""
        limit = _max_length(name)
        if required and not value:
            errors.add(line, name, "is required")
        elif limit and len(value) > limit:
            errors.add(line, name, f"is {len(value)} characters, over the limit of {limit}")
        return value

    sku, title = text("sku", required=True), text("title", required=True)
    row = ProductRow(line=line, sku=sku, title=title)
    given = {name for name, value in fields.items() if not _blank(value)}
    for name in ("description", "brand"):
        if name in given:
            row.values[name] = text(name)
    parsers = {"price": _price, "in_stock": _in_stock, "category": _category, "currency": _currency}
    for name, parse in parsers.items():
        if name in given:
            try:
                parsed = parse(fields[name])
            except ValueError as exc:
                errors.add(line, name, str(exc))
                continue
            if name == "category":
                row.category = parsed
            else:
                row.values[name] = parsed
    if "image" in given:
        try:
            row.images = _image_refs(fields["image"], has_archive=has_archive)
        except ValueError as exc:
            errors.add(line, "image", str(exc))
    _attributes_parse(fields.get("attributes"), row, errors)
    _extra_columns_parse(record, row, errors)
    for error in errors:
        error.sku = sku
    return errors or row


def _currency(value) -> str:
    currency = str(value).strip().upper()
    if not _CURRENCY.fullmatch(currency):
        raise ValueError(f"{currency[:20]!r} is not a 3-letter code like USD")
    return currency


def _attributes_parse(extra, row: ProductRow, errors: _Errors) -> None:
    """The `attributes` field (a JSON object, or a CSV column of JSON) into the row."""
    if isinstance(extra, str) and extra.strip():  # a CSV column of JSON
        try:
            with contextlib.suppress(json.JSONDecodeError):  # reported below as not an object
                extra = json_value(extra)
        except JsonTooDeepError as exc:
            errors.add(row.line, "attributes", str(exc))
            return
    if _blank(extra):
        return
    titles = extra.pop("titles", None) if isinstance(extra, dict) else None
    if not isinstance(extra, dict):
        errors.add(row.line, "attributes", "must be a JSON object")
    elif titles is not None and not (
        isinstance(titles, dict) and all(isinstance(t, str) for t in titles.values())
    ):
        errors.add(row.line, "attributes", "titles must map languages to texts")
    else:
        row.titles.update({lang: t.strip() for lang, t in (titles or {}).items() if t.strip()})
        row.attributes.update(extra)


def _extra_columns_parse(record: Record, row: ProductRow, errors: _Errors) -> None:
    """Columns the importer does not know: `title_<lang>` titles, else attributes."""
    for name, value in record.fields.items():
        key = name.strip()
        if key.lower() in KNOWN_FIELDS or _blank(value) or not key:
            continue
        if key.lower().startswith("title_") and len(key) > len("title_"):
            try:  # title_zh -> attributes["titles"]["zh"], which the captions embed
                row.titles[key[len("title_") :].lower()] = _text(value)
            except ValueError as exc:
                errors.add(row.line, key, str(exc))
        else:
            row.attributes[key] = value


def tsv_row_parse(record: Record) -> ProductRow | list[RowError]:
    """A `text<TAB>base64 image` line as a product whose SKU hashes its text and image.

    The same pair always gets the same SKU (so a re-import changes nothing, whatever the
    file's encoding), and each pair is its own product even when images repeat.
    """
    title = record.fields["title"].strip()
    errors = _Errors()
    limit = _max_length("title")
    if not title:
        errors.add(record.line, "title", "is required")
    elif len(title) > limit:
        errors.add(record.line, "title", f"is {len(title)} characters, over the limit of {limit}")
    try:
        image = base64_image(record.fields["image"])
    except ValueError as exc:
        errors.add(record.line, "image", str(exc))
    if errors:
        return errors
    digest = hashlib.sha256(f"{title}\t{hashlib.sha256(image).hexdigest()}".encode())
    return ProductRow(
        line=record.line,
        sku=f"TSV-{digest.hexdigest()[:24]}",
        title=title,
        images=[ImageRef("inline", image)],
    )
