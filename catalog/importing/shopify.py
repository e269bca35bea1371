"""Shopify's product CSV export: the lines of one Handle are one product with its variants.

The first line of a Handle carries the product (Title, Body, Vendor...) and its first
variant; the lines after it carry more variants and/or more images, with Title empty.
https://help.shopify.com/en/manual/products/import-export/using-csv
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import IO

from catalog.importing.platforms import (
    PLATFORM_COLUMNS,
    Format,
    RecordGroup,
    fields_lowered,
    group_failed,
    html_text,
    list_split,
    max_length_error,
    price_parse,
    records_grouped,
    sku_fit,
    variant_sku_generated,
)
from catalog.importing.readers import Record, RowError, csv_records
from catalog.importing.rows import ImageRef, ProductRow, VariantRow, _category, _image_refs
from catalog.models import MAX_OPTIONS, Product, ProductVariant

# Shipping, tax, cost and per-market columns say nothing a shopper searches by.
IGNORED = {
    "variant grams", "variant weight unit", "variant requires shipping", "variant taxable",
    "variant tax code", "variant fulfillment service", "cost per item", "image alt text",
    "google shopping / custom product", "option1 linked to", "option2 linked to",
    "option3 linked to", "variant inventory tracker", "variant inventory qty",
    "variant inventory policy", "gift card", "seo title", "seo description", "published",
    "status", "tags", "type", "product category", "vendor", "body (html)", "title", "handle",
    "image src", "image position", "variant image", "variant sku", "variant price",
    "variant compare at price", "variant barcode",
}  # fmt: skip
_IGNORED_PREFIXES = (
    "included / ",
    "price / ",
    "compare at price / ",
    "google shopping / custom label",
)
_OPTION_COLUMN = re.compile(r"option(\d+) (name|value)")
_METAFIELD = re.compile(r"(?:(.+?)\s*\()?(product|variant)\.metafields\.[^)]+\)?")
_VARIANT_COLUMNS = (
    "variant sku",
    "variant price",
    "option1 value",
    "option2 value",
    "option3 value",
)
DEFAULT_TITLE = ("title", "default title")  # the one option of a product without options


class ShopifyFile:
    def __init__(self, stream: IO[bytes]):
        self.stream = stream

    def records(self, *, offset: int, line: int) -> Iterator[RecordGroup]:
        required = PLATFORM_COLUMNS[Format.SHOPIFY]
        records = csv_records(self.stream, offset=offset, line=line, required=required)
        return records_grouped(records, lambda fields: (_handle(fields), False))

    def parse(self, group: RecordGroup, *, has_archive: bool) -> ProductRow | list[RowError]:
        return _ProductParse(group, has_archive).row()


def _handle(fields: dict[str, str]) -> str:
    return next((v.strip() for k, v in fields.items() if k.strip().lower() == "handle"), "")


class _ProductParse:
    def __init__(self, group: RecordGroup, has_archive: bool):
        self.group, self.has_archive = group, has_archive
        self.errors: list[RowError] = []
        self.variant_failed = False

    def error(self, line: int, field: str, message: str) -> None:
        self.errors.append(RowError(line, field, message))

    def row(self) -> ProductRow | list[RowError]:
        records = self.group.records
        if records[0].error is not None:
            return group_failed(self.group, [records[0].error], "")
        first = fields_lowered(records[0])
        handle, line = first.get("handle", ""), records[0].line
        sku = sku_fit(handle)
        if not handle:
            self.error(line, "Handle", "is required")
        elif not first.get("title"):
            self.error(
                line,
                "Title",
                f"continues product {handle!r}, but no line before it starts that product "
                "(the line with its Title)",
            )
        row = ProductRow(line=line, sku=sku, title=first.get("title", ""))
        if not self.errors:
            self.product_fields(row, first)
            names = self.option_names(records[0], first)
        if self.errors:  # the product itself is wrong: none of its lines is imported
            return group_failed(self.group, self.errors, sku)
        if sku != handle:
            row.attributes["handle"] = handle
        lines = [(records[0], first)]
        for record in records[1:]:
            if record.error is not None:
                self.errors.append(record.error)
                self.variant_failed = True
            else:
                lines.append((record, fields_lowered(record)))
        variants = self.variants(row, names, lines)
        self.images(row, lines, variants)
        if not variants:  # every variant line failed: no price to give the product
            return group_failed(self.group, self.errors, sku)
        only = variants[0].options if len(variants) == 1 else {}
        if [(k.lower(), v.lower()) for k, v in only.items()] == [DEFAULT_TITLE]:
            self.default_title_variant(row, variants[0])
        else:
            row.variants, row.option_names = variants, names
        row.variants_complete = not self.variant_failed
        for error in self.errors:
            error.sku = error.sku or sku
        row.line_errors = self.errors
        return row

    def default_title_variant(self, row: ProductRow, variant: VariantRow) -> None:
        """A product without options: Shopify still gives it one variant ("Title: Default
        Title"). It gets no variant rows; that variant's price and stock are the product's
        own, and its SKU and barcode are kept as attributes."""
        row.values.update(
            price=variant.price,
            compare_at_price=variant.compare_at_price,
            in_stock=variant.in_stock,
            options=[],
            price_max=None,
        )
        for name, value in (("variant_sku", variant.sku), ("barcode", variant.barcode)):
            if value:
                row.attributes[name] = value
        row.variants = []

    def product_fields(self, row: ProductRow, fields: dict[str, str]) -> None:
        line = row.line
        for name, column in (("title", "title"), ("brand", "vendor")):
            if message := max_length_error(name, fields.get(column, "")):
                self.error(line, column.title(), message)
        row.values["description"] = html_text(fields.get("body (html)", ""))
        row.values["brand"] = fields.get("vendor", "")
        path = fields.get("product category") or fields.get("type", "")
        try:
            row.category = _category(path)
        except ValueError as exc:
            self.error(line, "Product Category", str(exc))
        if fields.get("product category") and fields.get("type"):
            row.attributes["type"] = fields["type"]
        status = fields.get("status", "").lower() or Product.Status.ACTIVE
        if status not in Product.Status.values:
            self.error(line, "Status", f"{status[:40]!r} is not active, draft or archived")
        elif status == Product.Status.ACTIVE and fields.get("published", "").lower() == "false":
            status = Product.Status.DRAFT  # unpublished: kept, not found by shoppers
        row.values["status"] = status
        self.attributes(row, fields)

    def attributes(self, row: ProductRow, fields: dict[str, str]) -> None:
        if tags := list_split(fields.get("tags", "")):
            row.attributes["tags"] = tags
        if fields.get("gift card", "").lower() == "true":
            row.attributes["gift_card"] = True
        for column in ("seo title", "seo description"):
            if fields.get(column):
                row.attributes[column.replace(" ", "_")] = fields[column]
        for column, value in fields.items():
            if not value or column in IGNORED or column.startswith(_IGNORED_PREFIXES):
                continue
            if _OPTION_COLUMN.fullmatch(column):
                continue
            if column.startswith("google shopping / "):
                row.attributes[_key(column.removeprefix("google shopping / "))] = value
            elif match := _METAFIELD.fullmatch(column):
                # Product metafields are facts about it (fabric, colour pattern); a variant's
                # have nowhere to go. A reference to another record ("gid://") says nothing.
                if match[2] == "product" and not value.startswith("gid://"):
                    row.attributes[_key(match[1] or column.rpartition(".")[2])] = value
            else:
                row.attributes[column] = value  # a column some app added: kept, as in our CSV

    def option_names(self, record: Record, fields: dict[str, str]) -> list[str]:
        names = []
        for number in sorted({int(m[1]) for c in fields if (m := _OPTION_COLUMN.fullmatch(c))}):
            name = fields.get(f"option{number} name", "")
            if number > MAX_OPTIONS and (name or fields.get(f"option{number} value")):
                self.error(
                    record.line,
                    f"Option{number} Name",
                    f"a product has at most {MAX_OPTIONS} options",
                )
            elif number <= MAX_OPTIONS and name and name not in names:
                names.append(name)
        return names

    def variants(self, row: ProductRow, names, lines) -> list[VariantRow]:
        variants, seen_skus, seen_options = [], {}, {}
        for record, fields in lines:
            if record is not lines[0][0] and not any(fields.get(c) for c in _VARIANT_COLUMNS):
                continue  # a line of images only (the first line always has a variant)
            errors_before = len(self.errors)
            if record is not self.group.records[0]:
                self.option_names(record, fields)  # a fourth option on a continuation line
            options = {}
            for number, name in enumerate(names, 1):
                if value := fields.get(f"option{number} value", ""):
                    options[name] = value
                else:
                    self.error(record.line, f"Option{number} Value", f"no value for {name!r}")
            for number in range(len(names) + 1, MAX_OPTIONS + 1):
                if fields.get(f"option{number} value"):
                    self.error(
                        record.line,
                        f"Option{number} Value",
                        f"option {number} has no name on the product's first line",
                    )
            variant = self.variant(record.line, fields, row.sku, options)
            key = tuple(options.items())
            if variant and key in seen_options:
                self.error(
                    record.line,
                    "Option1 Value",
                    f"the same options as line {seen_options[key]}: {', '.join(options.values())}",
                )
            elif variant and variant.sku in seen_skus:
                self.error(
                    record.line, "Variant SKU", f"also the SKU of line {seen_skus[variant.sku]}"
                )
            if len(self.errors) > errors_before or variant is None:
                self.variant_failed = True
                continue
            seen_options[key], seen_skus[variant.sku] = record.line, record.line
            variants.append(variant)
        return variants

    def variant(self, line: int, fields, product_sku: str, options) -> VariantRow | None:
        failed = len(self.errors)
        sku = fields.get("variant sku", "") or variant_sku_generated(product_sku, options)
        barcode = fields.get("variant barcode", "")
        for column, value, name in (
            ("Variant SKU", sku, "sku"),
            ("Variant Barcode", barcode, "barcode"),
        ):
            if message := max_length_error(name, value, ProductVariant):
                self.error(line, column, message)
        prices = {}
        for column in ("variant price", "variant compare at price"):
            if not fields.get(column):
                continue
            try:
                prices[column] = price_parse(fields[column])
            except ValueError as exc:
                self.error(line, column.title(), str(exc))
        if "variant price" not in prices and not fields.get("variant price"):
            self.error(line, "Variant Price", "is required")
        stock = None
        quantity = fields.get("variant inventory qty", "")
        if quantity and (
            fields.get("variant inventory tracker") or "variant inventory tracker" not in fields
        ):
            try:
                stock = int(quantity)
            except ValueError:
                self.error(
                    line, "Variant Inventory Qty", f"{quantity[:40]!r} is not a whole number"
                )
        if len(self.errors) > failed:
            return None
        # "continue": sold when out of stock (back-orders); "deny" stops at zero.
        backorders = fields.get("variant inventory policy", "").lower() == "continue"
        return VariantRow(
            line=line,
            sku=sku,
            options=options,
            price=prices["variant price"],
            compare_at_price=prices.get("variant compare at price"),
            stock=stock,
            in_stock=stock is None or stock > 0 or backorders,
            barcode=barcode,
            image=fields.get("variant image") or None,
            sku_column="Variant SKU",
        )

    def images(self, row: ProductRow, lines, variants: list[VariantRow]) -> None:
        """The product's images in Image Position order, then variant images not among them."""
        found: list[tuple[float, int, ImageRef]] = []
        for order, (record, fields) in enumerate(lines):
            position = float("inf")
            if fields.get("image position"):
                try:
                    position = int(fields["image position"])
                except ValueError:
                    self.error(record.line, "Image Position", "is not a whole number")
            for column in ("image src", "variant image"):
                if not fields.get(column):
                    continue
                try:
                    refs = _image_refs(fields[column], has_archive=self.has_archive)
                except ValueError as exc:
                    self.error(record.line, column.title(), str(exc))
                    if column == "variant image":
                        self.variant_failed = True
                    continue
                key = position if column == "image src" else float("inf")
                found += [(key, order, ref) for ref in refs]
        found.sort(key=lambda item: item[:2])
        row.images = list({ref.value: ref for _, _, ref in found}.values())  # first place wins
        known = {ref.value for ref in row.images}
        for variant in variants:
            if variant.image not in known:
                variant.image = None  # its ref failed, and is reported


def _key(text: str) -> str:
    return re.sub(r"[^\w]+", "_", text.strip().lower()).strip("_")
