"""The e-commerce CLIP toolkits' pair files: one "text<TAB>base64 image" line per pair.

EasyNLP's e-commerce CLIP and ERNIE-ViL 2.0's retrieval task work from `train.tsv`,
`dev.tsv`, `test.tsv` and `predict.tsv` in this format, UTF-8 or GB18030. The files are
read with the bulk import's TSV reader, one line at a time, so a file of any size streams:
what stays in memory is a batch of images, and for Recall@K the vectors.

Identical texts, and identical images (the same bytes), are one item each. A file's pairs
link them into groups (connected components: texts and images joined by any chain of
pairs), and any member of a text's group is a right answer for it, and the other way
round, like a catalog product's titles and photos in `recall_at_k`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, TypeVar

import numpy as np
from django.conf import settings
from PIL import Image

from catalog.images import ImageDecodeError, decode_image
from catalog.importing.readers import base64_image, file_size, tsv_records
from embeddings import training
from embeddings.encoder import ClipEncoder
from embeddings.training import Example

if TYPE_CHECKING:
    import torch

# Bad lines kept on a report; every one still reaches `on_bad_line` and the count.
KEPT_BAD_LINES = 1000

T = TypeVar("T")
Progress = Callable[[int], None]  # bytes of the file read so far


@dataclass(frozen=True)
class PairLine:
    """A line whose text and image bytes read; the image is decoded where it is used."""

    line: int
    end_offset: int  # bytes of the file up to the end of this line
    text: str
    data: bytes
    sha256: str


@dataclass(frozen=True)
class BadLine:
    line: int
    end_offset: int
    reason: str


@dataclass
class PairFileReport:
    """What reading a pair file found: the good pairs and every bad line, by number."""

    pairs: int = 0
    bad_line_count: int = 0
    bad_lines: list[BadLine] = field(default_factory=list)  # the first KEPT_BAD_LINES
    on_bad_line: Callable[[BadLine], None] | None = None

    def bad(self, line: BadLine) -> None:
        self.bad_line_count += 1
        if len(self.bad_lines) < KEPT_BAD_LINES:
            self.bad_lines.append(line)
        if self.on_bad_line:
            self.on_bad_line(line)

    def summary(self) -> dict:
        return {
            "pairs": self.pairs,
            "bad_line_count": self.bad_line_count,
            "bad_lines": [{"line": b.line, "reason": b.reason} for b in self.bad_lines],
        }


def pair_lines(stream: IO[bytes]) -> Iterator[PairLine | BadLine]:
    """Every pair line of a binary stream, read or refused with the reason; blank lines are
    skipped. The image bytes are checked for base64 and size here, not decoded."""
    limit = settings.MAX_UPLOAD_IMAGE_BYTES
    for record in tsv_records(stream):
        line, offset = record.line, record.end_offset
        if record.error is not None:
            yield BadLine(line, offset, record.error.message)
            continue
        text = record.fields["title"].strip()
        if not text:
            yield BadLine(line, offset, "text is empty")
            continue
        try:
            data = base64_image(record.fields["image"])
        except ValueError as exc:
            yield BadLine(line, offset, str(exc))
            continue
        if not data:
            yield BadLine(line, offset, "no image after the tab")
        elif len(data) > limit:
            yield BadLine(
                line,
                offset,
                f"image is {file_size(len(data))}, over the limit of {file_size(limit)}",
            )
        else:
            yield PairLine(line, offset, text, data, hashlib.sha256(data).hexdigest())


def pair_image(pair: PairLine, *, draft_size: int | None = None) -> Image.Image:
    """The line's image as RGB, or ImageDecodeError saying why not: the checks of an upload
    (MAX_IMAGE_PIXELS, MAX_IMAGE_ASPECT_RATIO)."""
    return decode_image(
        pair.data,
        max_pixels=settings.MAX_IMAGE_PIXELS,
        max_aspect_ratio=settings.MAX_IMAGE_ASPECT_RATIO,
        draft_size=draft_size,
    )


def _chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def pair_groups(
    text_count: int, image_count: int, edges: Sequence[tuple[int, int]]
) -> tuple[np.ndarray, np.ndarray]:
    """The group of every text and every image: connected by the (text, image) edges."""
    parent = list(range(text_count + image_count))

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]  # path halving keeps the trees flat
            x = parent[x]
        return x

    for text, image in edges:
        a, b = root(text), root(text_count + image)
        if a != b:
            parent[a] = b
    roots = np.fromiter((root(x) for x in range(len(parent))), np.int64, len(parent))
    return roots[:text_count], roots[text_count:]


# --- score every pair (ERNIE-ViL's predict task) --------------------------------------------


def pair_cosines(
    encoder: ClipEncoder, images: list[torch.Tensor], texts: list[str], batch_size: int
) -> np.ndarray:
    image_vecs = encoder.encode_images(images, batch_size)
    text_vecs = encoder.encode_texts(texts, batch_size)
    # Divided by the norms again: fp16 encoders (GPU) return vectors only nearly unit length.
    dots = np.einsum("ij,ij->i", image_vecs, text_vecs)
    return dots / (np.linalg.norm(image_vecs, axis=1) * np.linalg.norm(text_vecs, axis=1))


def pairs_score(
    *,
    encoder: ClipEncoder,
    stream: IO[bytes],
    out: IO[str],
    batch_size: int = 256,
    progress: Progress | None = None,
    on_bad_line: Callable[[BadLine], None] | None = None,
) -> PairFileReport:
    """Write "line<TAB>cosine" for every line of a pair file, in input order, a batch at a time.

    A bad line (and a blank one) gets its number and an empty score, so the output has one
    row per input line, up to the last non-blank one. Images are decoded in full, as
    `/api/match/` decodes an upload, so the scores are the API's (up to its halfvec
    rounding).
    """
    report = PairFileReport(on_bad_line=on_bad_line)
    written = 0
    for chunk in _chunks(pair_lines(stream), batch_size):
        rows: list[PairLine | BadLine] = []
        images, texts = [], []
        for item in chunk:
            if isinstance(item, PairLine):
                try:
                    # Model-sized at once: a batch of camera photos would take gigabytes.
                    images.append(encoder.preprocess(pair_image(item)))
                    texts.append(item.text)
                except ImageDecodeError as exc:
                    item = BadLine(item.line, item.end_offset, str(exc))
            rows.append(item)
        scores = iter(pair_cosines(encoder, images, texts, batch_size) if images else ())
        lines = []
        for item in rows:
            lines += [f"{number}\t\n" for number in range(written + 1, item.line)]
            if isinstance(item, PairLine):
                lines.append(f"{item.line}\t{next(scores):.6f}\n")
                report.pairs += 1
            else:
                lines.append(f"{item.line}\t\n")
                report.bad(item)
            written = item.line
        out.write("".join(lines))
        if progress:
            progress(chunk[-1].end_offset)
    return report


# --- Recall@K both ways on a file's pairs ----------------------------------------------------


@dataclass
class PairFileRecall(PairFileReport):
    metrics: dict[str, float] = field(default_factory=dict)
    texts: int = 0  # distinct texts: the text-to-image queries
    images: int = 0  # distinct images: the image-to-text queries
    groups: int = 0

    def summary(self) -> dict:
        counts = {"texts": self.texts, "images": self.images, "groups": self.groups}
        return {"metrics": self.metrics, **counts, **super().summary()}


def pairs_recall(
    *,
    encoder: ClipEncoder,
    stream: IO[bytes],
    batch_size: int = 256,
    ks: Sequence[int] = (1, 5, 10),
    progress: Progress | None = None,
    on_bad_line: Callable[[BadLine], None] | None = None,
) -> PairFileRecall:
    """Text-to-image and image-to-text Recall@K (`recall_at_k`: ties count against the
    query) on a pair file, streamed: each distinct text and image is encoded once, in
    batches, and only the vectors are kept. Writes nothing anywhere."""
    report = PairFileRecall(on_bad_line=on_bad_line)
    text_index: dict[str, int] = {}
    image_index: dict[str, int] = {}  # by sha256 of the image bytes
    undecodable: dict[str, str] = {}  # sha256 -> why, so a repeated bad image is tried once
    edges: list[tuple[int, int]] = []
    pending_texts: list[str] = []
    pending_images: list[torch.Tensor] = []  # preprocessed: model-sized
    text_chunks: list[np.ndarray] = []
    image_chunks: list[np.ndarray] = []

    def encode(final: bool = False) -> None:
        if pending_images and (final or len(pending_images) >= batch_size):
            image_chunks.append(encoder.encode_images(pending_images, batch_size))
            pending_images.clear()
        if pending_texts and (final or len(pending_texts) >= batch_size):
            text_chunks.append(encoder.encode_texts(pending_texts, batch_size))
            pending_texts.clear()

    for chunk in _chunks(pair_lines(stream), batch_size):
        for item in chunk:
            if isinstance(item, PairLine):
                image = image_index.get(item.sha256)
                if image is None and item.sha256 not in undecodable:
                    try:
                        picture = pair_image(item, draft_size=encoder.image_size)
                        pending_images.append(encoder.preprocess(picture))
                        image = image_index[item.sha256] = len(image_index)
                    except ImageDecodeError as exc:
                        undecodable[item.sha256] = str(exc)
                if image is None:
                    item = BadLine(item.line, item.end_offset, undecodable[item.sha256])
                else:
                    text = text_index.get(item.text)
                    if text is None:
                        text = text_index[item.text] = len(text_index)
                        pending_texts.append(item.text)
                    edges.append((text, image))
                    report.pairs += 1
            if isinstance(item, BadLine):
                report.bad(item)
        encode()
        if progress:
            progress(chunk[-1].end_offset)
    encode(final=True)

    report.texts, report.images = len(text_index), len(image_index)
    if not edges:
        return report
    text_group, image_group = pair_groups(report.texts, report.images, edges)
    report.groups = len(np.unique(image_group))
    report.metrics = training.recall_at_k(
        np.concatenate(image_chunks), image_group, np.concatenate(text_chunks), text_group, ks=ks
    )
    return report


# --- training and validation examples from a file --------------------------------------------


@dataclass
class PairFileExamples(PairFileReport):
    """A pair file as training examples: (group key, text, image), images decoded once.

    The group key is "tsv:" + the smallest sha256 among the group's images, so it does
    not depend on the order of the lines (the split by product hashes it)."""

    path: str = ""
    examples: list[Example] = field(default_factory=list)
    image_sha256: list[str] = field(default_factory=list)  # one per example

    def summary(self) -> dict:
        return {"path": self.path, **super().summary()}


def pair_file_examples(
    path: str | Path,
    *,
    image_size: int,
    on_bad_line: Callable[[BadLine], None] | None = None,
) -> PairFileExamples:
    """Every good pair of the file at `path` as an example, its image decoded at about
    `image_size` (JPEG draft mode). Training keeps its images in memory anyway (see
    `embeddings.training.data`); the file itself is streamed."""
    report = PairFileExamples(path=str(path), on_bad_line=on_bad_line)
    images: dict[str, Image.Image] = {}
    undecodable: dict[str, str] = {}
    texts: dict[str, int] = {}
    shas: dict[str, int] = {}
    rows: list[tuple[str, str]] = []  # (text, sha256) per good pair
    with open(path, "rb") as stream:
        for item in pair_lines(stream):
            if isinstance(item, PairLine) and item.sha256 not in images:
                if item.sha256 not in undecodable:
                    try:
                        images[item.sha256] = pair_image(item, draft_size=image_size)
                    except ImageDecodeError as exc:
                        undecodable[item.sha256] = str(exc)
                if item.sha256 in undecodable:
                    item = BadLine(item.line, item.end_offset, undecodable[item.sha256])
            if isinstance(item, BadLine):
                report.bad(item)
            else:
                texts.setdefault(item.text, len(texts))
                shas.setdefault(item.sha256, len(shas))
                rows.append((item.text, item.sha256))
                report.pairs += 1
    edges = [(texts[text], shas[sha]) for text, sha in rows]
    _, image_group = pair_groups(len(texts), len(shas), edges)
    key_of_group: dict[int, str] = {}
    for sha, index in shas.items():
        group = int(image_group[index])
        key_of_group[group] = min(key_of_group.get(group, sha), sha)
    for text, sha in rows:
        key = f"tsv:{key_of_group[int(image_group[shas[sha]])]}"
        report.examples.append(Example(key, text, images[sha]))
        report.image_sha256.append(sha)
    return report
