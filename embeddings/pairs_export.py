"""The catalog's (caption, image) pairs as files for the toolkits and for open_clip_train.

The same pairs and the same product-level train/validation split as `finetune_clip`
(`catalog_titles` x each decodable image; `catalog_is_validation`), so a model trained
elsewhere on the export is measured on products it never saw, like ours.

* "tsv": `train.tsv` and `dev.tsv`, one "text<TAB>base64 image" line per pair (UTF-8,
  standard base64), what EasyNLP's e-commerce CLIP and ERNIE-ViL 2.0 read.
* "csv": `train.csv` and `val.csv` in open_clip_train's defaults (`--dataset-type csv`:
  tab-separated, a header with `filepath` and `title`), with the images written once each
  under `images/` beside them, named by their sha256.
"""

from __future__ import annotations

import base64
import csv
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from django.conf import settings

from catalog.images import ImageDecodeError, decode_image
from embeddings.catalog_pairs import catalog_is_validation, catalog_titles, catalog_trained_products

FORMATS = ("tsv", "csv")
FILE_NAMES = {"tsv": ("train.tsv", "dev.tsv"), "csv": ("train.csv", "val.csv")}
IMAGES_DIR = "images"
# Decoded only to check it opens, at about this size (JPEG draft mode): cheap, and what
# training reads would fail on anyway.
CHECK_SIZE = 224
# mkstemp makes files only their owner can read; an export is for other machines' users.
READABLE = 0o644


@dataclass
class ExportReport:
    out_dir: Path
    files: dict[str, int] = field(default_factory=dict)  # file name -> pairs written
    products: dict[str, int] = field(default_factory=dict)  # file name -> products in it
    images_written: int = 0  # csv: image files written (identical photos once)
    skipped_images: list[tuple[int, str]] = field(default_factory=list)  # (image id, why)


def _one_line(text: str) -> str:
    # A tab or a line break inside a title would split the line (the toolkits do no quoting).
    return " ".join(text.split())


@contextmanager
def _written_whole(path: Path, mode: str = "w") -> Iterator[IO]:
    """A file that appears at `path` only once written completely (a temporary file beside
    it, renamed), or not at all."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        text = {"encoding": "utf-8", "newline": ""} if "b" not in mode else {}
        with open(fd, mode, **text) as stream:
            yield stream
        os.chmod(tmp, READABLE)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _image_entry(
    image, report: ExportReport, out_dir: Path, format: str, absolute_paths: bool
) -> str | None:
    """What a line says of the image: its base64 (tsv) or its path (csv, the file written
    the first time); None for an image that does not decode, recorded on the report."""
    try:
        with image.file.open("rb") as f:
            data = f.read()
        decode_image(
            data,
            max_pixels=settings.MAX_IMAGE_PIXELS,
            max_aspect_ratio=settings.MAX_IMAGE_ASPECT_RATIO,
            draft_size=CHECK_SIZE,
        )
    except (ImageDecodeError, FileNotFoundError) as exc:
        report.skipped_images.append((image.pk, str(exc)))
        return None
    if format == "tsv":
        return base64.b64encode(data).decode("ascii")
    relative = Path(IMAGES_DIR) / image.sha256[:2] / f"{image.sha256}{Path(image.file.name).suffix}"
    path = out_dir / relative
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with _written_whole(path, "wb") as f:
            f.write(data)
        report.images_written += 1
    return str(path.resolve() if absolute_paths else relative)


def catalog_pairs_export(
    *,
    out_dir: str | Path,
    format: str = "tsv",
    max_products: int | None = None,
    absolute_paths: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ExportReport:
    """Write the catalog's pairs into `out_dir`, products streamed in chunks.

    Each file appears only once complete (written beside it, then renamed), so an
    interrupted export leaves the previous files or none. In the csv format `filepath` is
    relative to `out_dir` (run open_clip_train from there), or absolute with
    `absolute_paths`.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {format!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = ExportReport(out_dir=out_dir)
    names = FILE_NAMES[format]
    products = catalog_trained_products()
    if max_products:
        products = products[:max_products]
    with ExitStack() as stack:
        streams, writers = {}, {}
        for name in names:
            streams[name] = stack.enter_context(_written_whole(out_dir / name))
            report.files[name] = report.products[name] = 0
            if format == "csv":
                writers[name] = csv.writer(streams[name], delimiter="\t", lineterminator="\n")
                writers[name].writerow(["filepath", "title"])
        for product in products.iterator(chunk_size=500):
            name = names[1] if catalog_is_validation(product.pk) else names[0]
            texts = [_one_line(text) for text in catalog_titles(product)]
            images = []
            for image in product.images.all():
                entry = _image_entry(image, report, out_dir, format, absolute_paths)
                if entry is not None:
                    images.append(entry)
            if texts and images:
                report.products[name] += 1
                for text in texts:
                    for image in images:
                        if format == "csv":
                            writers[name].writerow([image, text])
                        else:
                            streams[name].write(f"{text}\t{image}\n")
                        report.files[name] += 1
            if progress:
                progress(1)
    return report
