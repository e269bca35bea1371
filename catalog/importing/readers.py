"""Streaming readers of the import formats: one record at a time, never the whole file.

Every record carries the line it starts on (for the report) and the byte offset just
after it, so an import can commit up to a record and later resume exactly there.
"""

from __future__ import annotations

import base64
import binascii
import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from django.conf import settings

# A physical line of CSV or JSON Lines longer than this is refused, not read into memory.
MAX_TEXT_LINE_BYTES = 4 * 1024 * 1024
BOM = b"\xef\xbb\xbf"
CSV_DELIMITERS = (",", ";", "\t")
# JSON nested deeper than this is refused: Python's parser overflows its stack on a line of
# 100,000 "[" (RecursionError), and a value just under that would overflow whatever walks
# it next (the database driver, the admin). Product attributes need a few levels at most.
MAX_JSON_DEPTH = 64


class ImportFileError(Exception):
    """The file (or its archive) cannot be imported at all; the message says why.

    `field` names the upload at fault: "file" (the products file) or "images" (the ZIP).
    """

    def __init__(self, message: str, *, field: str = "file"):
        super().__init__(message)
        self.field = field


@dataclass
class RowError:
    line: int
    field: str
    message: str
    sku: str = ""


@dataclass
class Record:
    """One record of the file: its fields, or the reason it could not be read."""

    line: int
    end_line: int
    end_offset: int
    fields: dict[str, Any] | None = None
    error: RowError | None = None


class LineReader:
    """Physical lines of a binary stream, numbered, with the offset after each.

    A line over `max_bytes` is skipped (yielded as None) instead of being read into memory.
    """

    def __init__(self, stream: IO[bytes], *, max_bytes: int, offset: int = 0, line: int = 0):
        stream.seek(offset)
        self.stream, self.max_bytes, self.offset, self.line = stream, max_bytes, offset, line

    def __iter__(self) -> Iterator[tuple[int, bytes | None]]:
        while data := self.stream.readline(self.max_bytes + 1):
            self.line += 1
            self.offset += len(data)
            if len(data) > self.max_bytes and not data.endswith(b"\n"):
                while data and not data.endswith(b"\n"):
                    data = self.stream.readline(1 << 20)
                    self.offset += len(data)
                yield self.line, None
            else:
                yield self.line, data


class JsonTooDeepError(ValueError):
    pass


def json_value(text: str | bytes) -> Any:
    """json.loads with its nesting bounded (JsonTooDeepError), never a RecursionError."""
    too_deep = JsonTooDeepError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        value = json.loads(text)
    except RecursionError:
        raise too_deep from None
    stack = [(value, 1)]
    while stack:  # iterative: a recursive walk is what overflows
        item, depth = stack.pop()
        if isinstance(item, dict | list) and item:
            if depth > MAX_JSON_DEPTH:
                raise too_deep
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return value


def file_size(size: int) -> str:
    if size >= 1e6:
        return f"{size / 1e6:.1f} MB"
    return f"{size / 1e3:.1f} kB" if size >= 1e3 else f"{size} bytes"


def _too_long(limit: int) -> str:
    return f"line is longer than {file_size(limit)}"


# --- CSV ------------------------------------------------------------------------------------


def csv_header(
    stream: IO[bytes], *, required: tuple[str, ...] = ("sku", "title")
) -> tuple[list[str], str, int]:
    """The column names of a CSV file (UTF-8, BOM or not), its delimiter, and the offset
    after the header. Spreadsheets in many locales separate with ';', so that is accepted.
    `required`: lower-case names the header must have (a shop platform's export has its own)."""
    lines = LineReader(stream, max_bytes=MAX_TEXT_LINE_BYTES)
    first = next(iter(lines), None)
    if first is None:
        raise ImportFileError("the file is empty: expected a header line (sku,title,price,...)")
    data = first[1]
    if data is None:
        raise ImportFileError(f"the header {_too_long(MAX_TEXT_LINE_BYTES)}")
    try:
        text = data.removeprefix(BOM).decode("utf-8")
    except UnicodeDecodeError:
        raise ImportFileError(
            "the file is not UTF-8 text: save it as “CSV UTF-8” (TSV files may be GB18030)"
        ) from None

    def names(delimiter: str) -> list[str]:
        return [name.strip() for name in next(csv.reader([text], delimiter=delimiter), [])]

    delimiter = next(
        (d for d in CSV_DELIMITERS if set(required) <= {n.lower() for n in names(d)}), ","
    )
    columns = names(delimiter)
    lowered = [name.lower() for name in columns]
    missing = [name for name in required if name not in lowered]
    if missing:
        raise ImportFileError(
            f"the header has no {' or '.join(repr(m) for m in missing)} column "
            f"(found: {', '.join(columns) or 'nothing'})"
        )
    repeated = sorted({name for name in lowered if name and lowered.count(name) > 1})
    if repeated:
        raise ImportFileError(f"the header repeats the column(s) {', '.join(repeated)}")
    return columns, delimiter, lines.offset


def csv_records(
    stream: IO[bytes],
    *,
    offset: int = 0,
    line: int = 0,
    required: tuple[str, ...] = ("sku", "title"),
) -> Iterator[Record]:
    """Records of a CSV file with a header; from `offset`/`line` when resuming."""
    columns, delimiter, header_end = csv_header(stream, required=required)
    if offset < header_end:
        offset, line = header_end, 1
    lines = LineReader(stream, max_bytes=MAX_TEXT_LINE_BYTES, offset=offset, line=line)
    bad_lines: list[tuple[int, str]] = []

    def text_lines() -> Iterator[str]:
        for number, data in lines:
            if data is None:
                bad_lines.append((number, _too_long(MAX_TEXT_LINE_BYTES)))
                yield "\n"
                continue
            try:
                yield data.decode("utf-8")
            except UnicodeDecodeError:
                bad_lines.append((number, "not UTF-8 text (save the file as “CSV UTF-8”)"))
                yield data.decode("utf-8", "replace")

    reader = csv.reader(text_lines(), delimiter=delimiter, strict=True)
    separator = "tab" if delimiter == "\t" else repr(delimiter)
    start = lines.line + 1
    while True:
        try:
            values = next(reader, None)
        except csv.Error as exc:
            values = []
            bad_lines.append((lines.line, f"not valid CSV: {exc}"))
        if values is None:
            return
        record = Record(line=start, end_line=lines.line, end_offset=lines.offset)
        start = lines.line + 1
        if bad_lines:
            number, message = bad_lines[0]
            where = "" if number == record.line else f"line {number}: "
            record.error = RowError(record.line, "", f"{where}{message}")
            bad_lines.clear()
        elif not any(value.strip() for value in values):
            continue  # a blank line, or a spreadsheet's empty row
        elif len(values) > len(columns):
            record.error = RowError(
                record.line,
                "",
                f"{len(values)} values but the header has {len(columns)} columns "
                f"(a {separator} inside a value needs quotes)",
            )
        else:
            values += [""] * (len(columns) - len(values))
            record.fields = dict(zip(columns, values, strict=True))
        yield record


# --- TSV: text<TAB>base64 image ----------------------------------------------------------------


def tsv_max_line_bytes() -> int:
    return settings.MAX_UPLOAD_IMAGE_BYTES * 4 // 3 + 64 * 1024


def tsv_records(stream: IO[bytes], *, offset: int = 0, line: int = 0) -> Iterator[Record]:
    """`text<TAB>base64 image` lines (UTF-8 or GB18030, no header), as title + image bytes."""
    limit = tsv_max_line_bytes()
    lines = LineReader(stream, max_bytes=limit, offset=offset, line=line)
    for number, data in lines:
        record = Record(line=number, end_line=number, end_offset=lines.offset)
        if data is None:
            over = file_size(settings.MAX_UPLOAD_IMAGE_BYTES)
            record.error = RowError(
                number, "image", f"{_too_long(limit)}: its image is over the limit of {over}"
            )
            yield record
            continue
        if number == 1:
            data = data.removeprefix(BOM)
        data = data.rstrip(b"\r\n")
        if not data.strip():
            continue
        # Base64 has no tabs, so the last tab separates even a title that contains one.
        raw_text, tab, encoded = data.rpartition(b"\t")
        if not tab:
            record.error = RowError(number, "", "expected text<TAB>base64 image, found no tab")
        else:
            try:
                record.fields = {"title": _decode_chinese_text(raw_text), "image": encoded}
            except UnicodeDecodeError:
                record.error = RowError(number, "title", "text is neither UTF-8 nor GB18030")
        yield record


def _decode_chinese_text(data: bytes) -> str:
    # GB18030 multibyte sequences are never valid UTF-8 in practice, so try UTF-8 first.
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("gb18030")


def base64_image(encoded: bytes) -> bytes:
    """Standard or URL-safe base64 (Chinese-CLIP writes the latter), strictly checked."""
    encoded = encoded.strip().replace(b"-", b"+").replace(b"_", b"/")
    encoded += b"=" * (-len(encoded) % 4)
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("image is not valid base64") from None


# --- JSON Lines -------------------------------------------------------------------------------


def jsonl_records(stream: IO[bytes], *, offset: int = 0, line: int = 0) -> Iterator[Record]:
    """One JSON object per line, with the CSV's fields."""
    lines = LineReader(stream, max_bytes=MAX_TEXT_LINE_BYTES, offset=offset, line=line)
    for number, data in lines:
        record = Record(line=number, end_line=number, end_offset=lines.offset)
        if data is None:
            record.error = RowError(number, "", _too_long(MAX_TEXT_LINE_BYTES))
            yield record
            continue
        if number == 1:
            data = data.removeprefix(BOM)
        if not data.strip():
            continue
        try:
            value = json_value(data.strip())
        except UnicodeDecodeError:
            record.error = RowError(number, "", "line is not UTF-8 text")
        except json.JSONDecodeError as exc:
            record.error = RowError(number, "", f"not valid JSON: {exc.msg} (column {exc.colno})")
        except JsonTooDeepError as exc:
            record.error = RowError(number, "", str(exc))
        else:
            if isinstance(value, dict):
                record.fields = {str(key).strip(): item for key, item in value.items()}
            else:
                found = type(value).__name__
                record.error = RowError(number, "", f"expected a JSON object, found {found}")
        yield record
