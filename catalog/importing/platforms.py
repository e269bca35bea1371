"""What the shop platforms' product exports (Shopify, WooCommerce) share: recognising them
by their header, reading one product's lines as one group, HTML descriptions as text,
prices written with thousands separators, and SKUs for variants that have none."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from html.parser import HTMLParser
from typing import IO, Any

from django.utils.text import slugify

from catalog.importing.readers import ImportFileError, Record, RowError, csv_header
from catalog.importing.rows import _price
from catalog.models import ImportJob, Product

Format = ImportJob.Format
SKU_LENGTH = Product._meta.get_field("sku").max_length
# The columns a platform's export cannot do without (lower case).
PLATFORM_COLUMNS = {Format.SHOPIFY: ("handle",), Format.WOOCOMMERCE: ("type",)}


def csv_format_detect(stream: IO[bytes]) -> str:
    """The format of a CSV file: a platform's export, told by its header, else our CSV."""
    try:
        columns, _, _ = csv_header(stream, required=())
    except ImportFileError:
        return Format.CSV  # the CSV reader says what is wrong with it
    finally:
        stream.seek(0)
    names = {name.lower() for name in columns}
    ours = {"sku", "title"} <= names  # our CSV may have any other column, as attributes
    shopify = names & {"variant sku", "variant price", "option1 name"} or not ours
    if "handle" in names and "title" in names and shopify:
        return Format.SHOPIFY
    if "type" in names and names & {"parent", "regular price"} and not ours:
        return Format.WOOCOMMERCE
    return Format.CSV


@dataclass
class RecordGroup:
    """The consecutive lines of one product: committed together, never split by a batch."""

    records: list[Record]
    error = None  # each record carries its own

    @property
    def line(self) -> int:
        return self.records[0].line

    @property
    def end_line(self) -> int:
        return self.records[-1].end_line

    @property
    def end_offset(self) -> int:
        return self.records[-1].end_offset


def records_grouped(
    records: Iterator[Record], key: Callable[[dict[str, str]], tuple[str, bool]]
) -> Iterator[RecordGroup]:
    """Group consecutive records by `key(fields)` -> (group key, whether it starts a group).

    An unreadable record stays in the group around it, so it does not split a product.
    """
    group: list[Record] = []
    current = None
    for record in records:
        if record.fields is None:
            if group:
                group.append(record)
            else:
                yield RecordGroup([record])
            continue
        name, starts = key(record.fields)
        if group and (starts or name != current):
            yield RecordGroup(group)
            group = []
        group.append(record)
        current = name
    if group:
        yield RecordGroup(group)


def fields_lowered(record: Record) -> dict[str, str]:
    # The platforms' column names vary in case between versions; values are trimmed.
    return {
        name.strip().lower(): value.strip() if isinstance(value, str) else value
        for name, value in record.fields.items()
    }


def group_failed(group: RecordGroup, errors: list[RowError], sku: str) -> list[RowError]:
    """The group's errors, and a line for each of its other lines: none was imported."""
    failed = {error.line for error in errors}
    message = f"not imported: its product (line {min(failed, default=group.line)}) has errors"
    for record in group.records:
        if record.line not in failed:
            errors.append(record.error or RowError(record.line, "", message, sku))
        failed.add(record.line)
    for error in errors:
        error.sku = error.sku or sku
    return sorted(errors, key=lambda error: error.line)


# --- values ---------------------------------------------------------------------------------

_GROUPED_PRICES = (
    (re.compile(r"\d{1,3}(\.\d{3})+,\d{1,2}"), "."),  # 1.234,50 (most of Europe)
    (re.compile(r"\d{1,3}(,\d{3})+\.\d{1,2}"), ","),  # 1,234.50
    (re.compile(r"\d{1,3}([ \u00a0\u202f]\d{3})+([.,]\d{1,2})?"), " \u00a0\u202f"),  # 1 234,50
)


def price_parse(value: Any) -> Decimal:
    """A price, also with thousands separators when they are unambiguous ("1.234,50" is
    1234.50: a group of three digits, then a decimal part with the other separator)."""
    text = str(value).strip()
    for pattern, separators in _GROUPED_PRICES:
        if pattern.fullmatch(text):
            for separator in separators:
                text = text.replace(separator, "")
            text = text.replace(",", ".")
            break
    return _price(text)


def sku_fit(text: str) -> str:
    """A SKU within the column's length: a longer one is cut, and a hash keeps it unique."""
    if len(text) <= SKU_LENGTH:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{text[: SKU_LENGTH - 9]}-{digest}"


def variant_sku_generated(product_sku: str, options: dict[str, str]) -> str:
    """A variant without a SKU gets one from its product and option values: the same in
    every export, so re-importing updates it."""
    values = "-".join(slugify(value, allow_unicode=True) or "x" for value in options.values())
    return sku_fit(f"{product_sku}-{values}" if values else product_sku)


def list_split(text: str, separator: str = ",") -> list[str]:
    return [item.strip() for item in text.split(separator) if item.strip()]


def max_length_error(name: str, value: str, model=Product) -> str | None:
    limit = model._meta.get_field(name).max_length
    return f"is {len(value)} characters, over the limit of {limit}" if len(value) > limit else None


# --- HTML descriptions ------------------------------------------------------------------------

_HIDDEN_TAGS = {"script", "style", "noscript", "template", "iframe", "object", "svg", "head"}
_BLOCK_TAGS = {
    "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "figcaption",
    "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "ol", "p", "pre",
    "section", "table", "td", "th", "tr", "ul",
}  # fmt: skip


class _TextOfHtml(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)  # entities arrive unescaped
        self.parts: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag, attrs):
        if tag in _HIDDEN_TAGS:
            self.hidden += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in _HIDDEN_TAGS:
            self.hidden = max(self.hidden - 1, 0)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self.hidden:
            self.parts.append(data)


def html_text(html: str) -> str:
    """The text a shopper reads in an HTML description: scripts and styles dropped, tags
    stripped, entities unescaped, one line per paragraph."""
    if "<" not in html and "&" not in html:
        return html.strip()
    parser = _TextOfHtml()
    parser.feed(html)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).split("\n"))
    return "\n".join(line for line in lines if line)
