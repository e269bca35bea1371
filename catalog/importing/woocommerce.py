"""WooCommerce's product CSV export: simple, variable, grouped and external products, and
variations that name their variable product in Parent (its SKU, or "id:123").

A variable product's attributes that its variations use are its options; the others are
attributes. The file is read twice: a first pass finds every variation of each parent
(which options they use, which SKUs exist), so a variation anywhere in the file is
neither lost nor made inactive by its parent's line.
https://github.com/woocommerce/woocommerce/wiki/Product-CSV-Import-Schema
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
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
from catalog.importing.readers import RowError, csv_records
from catalog.importing.rows import ProductRow, VariantRow, _category, _image_refs
from catalog.models import MAX_OPTIONS, Product, ProductVariant

TYPES = ("variation", "variable", "simple", "grouped", "external")
_ATTRIBUTE = re.compile(r"attribute (\d+) name")
_UNESCAPED_COMMA = re.compile(r"(?<!\\),")


@dataclass
class _FileIndex:
    """What the first pass learns: product keys by WooCommerce ID, and per parent the
    option names and SKUs of its variations."""

    keys_by_id: dict[str, str] = field(default_factory=dict)
    options: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    variant_skus: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))


class WooCommerceFile:
    def __init__(self, stream: IO[bytes]):
        self.stream = stream
        self.index = _FileIndex()

    def _records(self, **position):
        return csv_records(self.stream, required=PLATFORM_COLUMNS[Format.WOOCOMMERCE], **position)

    def records(self, *, offset: int, line: int) -> Iterator[RecordGroup]:
        self.index = self._index()
        # A variation joins the lines of its parent; any other line starts a product.
        return records_grouped(self._records(offset=offset, line=line), self._group_key)

    def _group_key(self, raw: dict[str, str]) -> tuple[str, bool]:
        fields = {k.strip().lower(): v.strip() for k, v in raw.items()}
        if _type(fields) == "variation":
            return self._parent_key(fields), False
        return _product_key(fields), True

    def _index(self) -> _FileIndex:
        index, variations = _FileIndex(), []
        for record in self._records():
            if record.fields is None:
                continue
            fields = fields_lowered(record)
            if _type(fields) == "variation":
                variations.append(
                    (fields.get("parent", ""), fields.get("sku", ""), _values(fields))
                )
            elif fields.get("id"):
                index.keys_by_id[fields["id"]] = _product_key(fields)
        self.index = index
        for parent, sku, options in variations:
            key = self._parent_key({"parent": parent})
            index.variant_skus[key].add(sku or variant_sku_generated(key, options))
            names = index.options[key]
            names += [name for name in options if name.lower() not in map(str.lower, names)]
        return index

    def _parent_key(self, fields: dict[str, str]) -> str:
        parent = fields.get("parent", "")
        if parent.lower().startswith("id:"):
            number = parent[3:].strip()
            return self.index.keys_by_id.get(number) or sku_fit(f"woo-{number}")
        return sku_fit(parent)

    def parse(self, group: RecordGroup, *, has_archive: bool) -> ProductRow | list[RowError]:
        return _ProductParse(self, group, has_archive).row()


def _type(fields: dict[str, str]) -> str:
    # "simple, virtual", "variable": the kind of product, with flags after it.
    words = {word.strip().lower() for word in fields.get("type", "").split(",")}
    return next((kind for kind in TYPES if kind in words), "")


def _product_key(fields: dict[str, str]) -> str:
    # Products without a SKU are common in WooCommerce: their ID is their key then.
    if fields.get("sku"):
        return sku_fit(fields["sku"])
    return sku_fit(f"woo-{fields['id']}") if fields.get("id") else ""


def _attributes(fields: dict[str, str]) -> list[tuple[int, str, list[str], bool]]:
    """(number, name, values, visible) of each `Attribute N name` column that has a name."""
    found = []
    for column in fields:
        if (match := _ATTRIBUTE.fullmatch(column)) and fields[column]:
            number = int(match[1])
            values = list_split(fields.get(f"attribute {number} value(s)", ""))
            visible = fields.get(f"attribute {number} visible", "1") != "0"
            found.append((number, fields[column], values, visible))
    return sorted(found)


def _values(fields: dict[str, str]) -> dict[str, str]:
    """A variation's option values: its attributes, one value each."""
    return {name: values[0] if values else "" for _, name, values, _ in _attributes(fields)}


def _comma_list(text: str) -> list[str]:
    # WooCommerce escapes a comma inside a name as "\,".
    return [
        item.replace("\\,", ",").strip() for item in _UNESCAPED_COMMA.split(text) if item.strip()
    ]


class _ProductParse:
    def __init__(self, file: WooCommerceFile, group: RecordGroup, has_archive: bool):
        self.file, self.group, self.has_archive = file, group, has_archive
        self.errors: list[RowError] = []
        self.variant_failed = False

    def error(self, line: int, field: str, message: str) -> None:
        self.errors.append(RowError(line, field, message))

    def row(self) -> ProductRow | list[RowError]:
        first_record = self.group.records[0]
        if first_record.error is not None:
            return group_failed(self.group, [first_record.error], "")
        first, line = fields_lowered(first_record), first_record.line
        kind = _type(first)
        if kind == "variation":
            return self.variations_of_earlier_product(first)
        sku = _product_key(first)
        if not kind:
            self.error(
                line,
                "Type",
                f"{first.get('type', '')[:40]!r} is not simple, variable, "
                "variation, grouped or external",
            )
        if not sku:
            self.error(line, "SKU", "is required (or an ID)")
        row = ProductRow(line=line, sku=sku, title=first.get("name", ""))
        if not self.errors:
            self.product_fields(row, first, kind)
        if self.errors:
            return group_failed(self.group, self.errors, sku)
        variations = []
        for record in self.group.records[1:]:
            if record.error is not None:
                self.errors.append(record.error)
                self.variant_failed = True
            elif kind != "variable":
                self.error(record.line, "Parent", f"{sku!r} is a {kind} product, not variable")
            else:
                variations.append((record.line, fields_lowered(record)))
        if kind == "variable":
            row.variants = self.variants(row, variations)
            row.option_names = self.file.index.options.get(sku, [])[:MAX_OPTIONS]
            row.variants_kept = self.file.index.variant_skus[sku] - {v.sku for v in row.variants}
            row.variants_complete = not self.variant_failed
        for error in self.errors:
            error.sku = error.sku or sku
        row.line_errors = self.errors
        return row

    def variations_of_earlier_product(self, first: dict[str, str]) -> ProductRow | list[RowError]:
        """Variations away from their parent's lines: joined to it once it is imported (the
        import reports a parent it cannot find)."""
        key = self.file._parent_key(first)
        if not first.get("parent"):
            self.error(self.group.line, "Parent", "a variation needs its parent (SKU or id:ID)")
            return group_failed(self.group, self.errors, "")
        row = ProductRow(line=self.group.line, sku=key, title="", attach=True, images=[])
        lines = [(r.line, fields_lowered(r)) for r in self.group.records if r.error is None]
        self.errors += [r.error for r in self.group.records if r.error is not None]
        row.variants = self.variants(row, lines)
        row.variants_complete = False
        if not row.variants:
            return group_failed(self.group, self.errors, key)
        row.line_errors = self.errors
        return row

    def product_fields(self, row: ProductRow, fields: dict[str, str], kind: str) -> None:
        line = row.line
        if not row.title:
            self.error(line, "Name", "is required")
        for name, column, value in (
            ("title", "Name", row.title),
            ("brand", "Brands", fields.get("brands", "")),
        ):
            if message := max_length_error(name, value):
                self.error(line, column, message)
        texts = [html_text(fields.get(c, "")) for c in ("short description", "description")]
        row.values["description"] = "\n\n".join(text for text in texts if text)
        if brands := _comma_list(fields.get("brands", "")):
            row.values["brand"] = brands[0]
        try:
            paths = [_category(path) for path in _comma_list(fields.get("categories", ""))]
        except ValueError as exc:
            self.error(line, "Categories", str(exc))
            paths = []
        # The first category is the product's; the others are kept, as paths.
        row.category = paths[0] if paths else ()
        if paths[1:]:
            row.attributes["categories"] = [" > ".join(path) for path in paths[1:]]
        if tags := _comma_list(fields.get("tags", "")):
            row.attributes["tags"] = tags
        if fields.get("is featured?") == "1":
            row.attributes["featured"] = True
        # Unpublished (0: private, -1: draft), or hidden from search ("hidden", "catalog":
        # shop pages only): kept, but shoppers do not find it here either.
        visibility = fields.get("visibility in catalog", "visible").lower() or "visible"
        searchable = fields.get("published", "1") == "1" and visibility in ("visible", "search")
        row.values["status"] = Product.Status.ACTIVE if searchable else Product.Status.DRAFT
        if kind == "grouped":
            # A group shows other products, each imported on its own; it has no price or
            # stock of its own, so it is kept but not searchable.
            row.values["status"] = Product.Status.DRAFT
            if children := _comma_list(fields.get("grouped products", "")):
                row.attributes["grouped_products"] = children
        self.images(row, line, fields)
        options = self.file.index.options.get(row.sku, []) if kind == "variable" else []
        self.options(row, fields, options)
        if kind != "variable":
            offer = self.offer(line, fields, required=kind not in ("grouped", "variable"))
            if offer is not None:
                price, compare_at, stock, in_stock = offer
                row.values.update(
                    price=price,
                    compare_at_price=compare_at,
                    in_stock=in_stock,
                    options=[],
                    price_max=None,
                )
            if barcode := fields.get("gtin, upc, ean, or isbn"):
                row.attributes["barcode"] = barcode  # as a variant's would be
            if kind == "grouped" and offer is None:
                row.values.setdefault("price", price_parse("0"))
            row.variants = []

    def options(self, row: ProductRow, fields: dict[str, str], used: list[str]) -> None:
        """Attributes its variations use are options (at most MAX_OPTIONS); the visible
        others are attributes (hidden ones are not shown to shoppers, so not searched)."""
        lowered = {name.lower() for name in used}
        count = 0
        for number, name, values, visible in _attributes(fields):
            if name.lower() in lowered:
                count += 1
                if count > MAX_OPTIONS:
                    self.error(
                        row.line,
                        f"Attribute {number} name",
                        f"{name!r} would be option {count}: a product has at most "
                        f"{MAX_OPTIONS} options",
                    )
            elif visible and values:
                row.attributes[name] = values[0] if len(values) == 1 else values
        if len(used) > MAX_OPTIONS and count <= MAX_OPTIONS:
            self.error(
                row.line,
                "Attribute 1 name",
                f"its variations use {len(used)} options ({', '.join(used)}): a product "
                f"has at most {MAX_OPTIONS}",
            )

    def offer(self, line: int, fields: dict[str, str], *, required: bool):
        """(price, compare-at price, stock, sellable) of a line, or None (errors noted)."""
        failed = len(self.errors)
        prices = {}
        for column in ("regular price", "sale price"):
            if fields.get(column):
                try:
                    prices[column] = price_parse(fields[column])
                except ValueError as exc:
                    self.error(line, column.capitalize(), str(exc))
        stock = None
        if fields.get("stock"):
            try:
                stock = int(float(fields["stock"]))  # "5" or "5.0"
            except ValueError:
                self.error(line, "Stock", f"{fields['stock'][:40]!r} is not a whole number")
        if not prices and required and len(self.errors) == failed:
            self.error(line, "Regular price", "is required")
        if len(self.errors) > failed or not prices:
            return None
        # A sale price is the price, the regular one is then shown struck through.
        price = prices.get("sale price", prices.get("regular price"))
        regular = prices.get("regular price")
        compare_at = regular if "sale price" in prices and regular and regular > price else None
        flag = fields.get("in stock?", "").lower()
        backorders = fields.get("backorders allowed?", "0").lower() in ("1", "notify")
        if flag in ("1", "0", "backorder"):
            in_stock = flag != "0" or backorders
        else:
            in_stock = stock is None or stock > 0 or backorders
        return price, compare_at, stock, in_stock

    def images(self, row: ProductRow, line: int, fields: dict[str, str]) -> list[str]:
        values = []
        if fields.get("images"):
            try:
                # Comma-separated; a URL's own commas are rare and would be %2C.
                refs = _image_refs(list_split(fields["images"]), has_archive=self.has_archive)
            except ValueError as exc:
                self.error(line, "Images", str(exc))
                return []
            known = {ref.value for ref in row.images or ()}
            row.images = [*(row.images or ()), *(r for r in refs if r.value not in known)]
            values = [ref.value for ref in refs]
        return values

    def variants(self, row: ProductRow, lines) -> list[VariantRow]:
        names = self.file.index.options.get(row.sku, [])
        variants, seen = [], {}
        for line, fields in lines:
            failed = len(self.errors)
            given = {name.lower(): value for name, value in _values(fields).items()}
            options = {}
            for number, name in enumerate(names[:MAX_OPTIONS], 1):
                if given.get(name.lower()):
                    options[name] = given[name.lower()]
                else:
                    self.error(
                        line,
                        f"Attribute {number} value(s)",
                        f"no value for {name!r} (give each variation its own: “any” is "
                        "not imported)",
                    )
            sku = fields.get("sku") or variant_sku_generated(row.sku, _values(fields))
            if message := max_length_error("sku", sku, ProductVariant):
                self.error(line, "SKU", message)
            barcode = fields.get("gtin, upc, ean, or isbn", "")
            if message := max_length_error("barcode", barcode, ProductVariant):
                self.error(line, "GTIN, UPC, EAN, or ISBN", message)
            if sku in seen:
                self.error(line, "SKU", f"also the SKU of line {seen[sku]}")
            offer = self.offer(line, fields, required=True)
            images = self.images(row, line, fields)
            if len(self.errors) > failed or offer is None:
                self.variant_failed = True
                continue
            price, compare_at, stock, in_stock = offer
            seen[sku] = line
            variants.append(
                VariantRow(
                    line=line,
                    sku=sku,
                    options=options,
                    price=price,
                    compare_at_price=compare_at,
                    stock=stock,
                    in_stock=in_stock,
                    barcode=barcode,
                    image=images[0] if images else None,
                )
            )
        return variants
