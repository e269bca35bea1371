"""Embedding many images at the accelerator's pace: while the model encodes one batch, a pool
of threads reads, decodes and preprocesses the next ones.

Threads, not processes: Pillow releases the GIL while it decodes and resizes, so threads
decode in parallel without pickling images between processes. Each image is decoded in
JPEG draft mode close to the model's size (catalog.images.decode_image) and cut to the
model's input as uint8; scaling and normalising run on the device, on the whole batch,
so a GPU gets a quarter of the bytes, from pinned memory, without blocking.

Images with the same content (the same sha256) are decoded and encoded once and share
the vector. Django-free like the encoder: callers describe each image as an ImageSource.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from catalog.images import (
    DEFAULT_MAX_IMAGE_ASPECT_RATIO,
    DEFAULT_MAX_IMAGE_PIXELS,
    ImageDecodeError,
)
from embeddings.encoder import ClipEncoder

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class ImageSource:
    """One image to embed: the caller's key, how to read its bytes (raising
    ImageDecodeError saying why when they cannot be read), and its content's sha256 ("" for
    an image that shares with none)."""

    key: Hashable
    read: Callable[[], bytes]
    content_sha256: str = ""


@dataclass
class EncodedBatch:
    """One batch's outcome: `vectors[i]` is the vector of `keys[i]`; `failed` maps a key to
    why it has none; `encoded` is how many distinct images went through the model."""

    keys: list = field(default_factory=list)
    vectors: np.ndarray | None = None
    failed: dict = field(default_factory=dict)
    encoded: int = 0


@dataclass
class _Prepared:
    pixels: torch.Tensor | None  # None: no copy of this content could be used
    keys: list  # the sources that get this content's vector
    failed: dict


def image_sources_encode(
    encoder: ClipEncoder,
    sources: Sequence[ImageSource],
    *,
    batch_size: int = 64,
    threads: int = 4,
    prefetch: int = 2,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    max_aspect_ratio: float = DEFAULT_MAX_IMAGE_ASPECT_RATIO,
) -> Iterator[EncodedBatch]:
    """Encode `sources`, yielding one EncodedBatch per `batch_size` distinct images.

    Up to `prefetch` batches are read and decoded by `threads` threads while the model
    encodes, and while the caller writes the batch it was given (`threads=0`: everything
    in the calling thread, one step after another). A source that cannot be read or
    decoded is in `failed` with the reason; the others of its batch still get vectors.
    Errors other than ImageDecodeError (storage down, say) propagate.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    groups = _content_groups(sources)
    batches = [groups[start : start + batch_size] for start in range(0, len(groups), batch_size)]

    def prepare(group: list[ImageSource]) -> _Prepared:
        return _prepare(encoder, group, max_pixels, max_aspect_ratio)

    pool = ThreadPoolExecutor(threads, thread_name_prefix="embed-decode") if threads > 0 else None
    pending: deque[list[Future | _Prepared]] = deque()
    try:
        queued = 0
        while pending or queued < len(batches):
            while queued < len(batches) and len(pending) <= prefetch:
                if pool is None:
                    pending.append([prepare(group) for group in batches[queued]])
                else:
                    pending.append([pool.submit(prepare, group) for group in batches[queued]])
                queued += 1
            prepared = [p.result() if isinstance(p, Future) else p for p in pending.popleft()]
            yield _encode(encoder, prepared)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _content_groups(sources: Sequence[ImageSource]) -> list[list[ImageSource]]:
    """Sources grouped by content, in the order each content first appears."""
    groups: dict[Hashable, list[ImageSource]] = {}
    for index, source in enumerate(sources):
        groups.setdefault(source.content_sha256 or ("unique", index), []).append(source)
    return list(groups.values())


def _prepare(
    encoder: ClipEncoder, group: list[ImageSource], max_pixels: int, max_aspect_ratio: float
) -> _Prepared:
    """Read the first copy of this content that can be read, decode and preprocess it.

    A copy whose file cannot be read fails alone and the next copy is tried; content that
    does not decode fails for every copy not yet failed, since all hold the same bytes.
    """
    failed: dict = {}
    for index, source in enumerate(group):
        try:
            data = source.read()
        except ImageDecodeError as exc:
            failed[source.key] = str(exc)
            continue
        sharing = [s.key for s in group[index:]]
        try:
            image = encoder.decode_image(
                data, max_pixels=max_pixels, max_aspect_ratio=max_aspect_ratio
            )
        except ImageDecodeError as exc:
            failed.update(dict.fromkeys(sharing, str(exc)))
            return _Prepared(None, [], failed)
        return _Prepared(encoder.batch_pixels(image), sharing, failed)
    return _Prepared(None, [], failed)


def _encode(encoder: ClipEncoder, prepared: list[_Prepared]) -> EncodedBatch:
    batch = EncodedBatch(vectors=np.zeros((0, encoder.embed_dim), dtype=np.float32))
    for item in prepared:
        batch.failed.update(item.failed)
    usable = [item for item in prepared if item.pixels is not None]
    if not usable:
        return batch
    vectors = encoder.encode_batch(_stack([item.pixels for item in usable], encoder.device))
    rows = [row for row, item in enumerate(usable) for _ in item.keys]
    batch.keys = [key for item in usable for key in item.keys]
    batch.vectors = vectors[rows]
    batch.encoded = len(usable)
    return batch


def _stack(pixels: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    import torch

    if device.type != "cuda":
        return torch.stack(pixels)
    # Page-locked, so the copy to the GPU runs by DMA without blocking this thread; torch's
    # caching host allocator reuses the buffer once that copy is done.
    out = torch.empty((len(pixels), *pixels[0].shape), dtype=pixels[0].dtype, pin_memory=True)
    return torch.stack(pixels, out=out)
