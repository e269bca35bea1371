"""Examples -> distinct texts and images per product, and the batches of an epoch.

Every distinct text of a product is one training pair per epoch, paired with one of the
product's images drawn at random that epoch.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from PIL import Image

from catalog.images import decode_image
from catalog.text import word_chunks, words_join

Preprocess = Callable[[Image.Image], torch.Tensor]
Tokenizer = Callable[[list[str]], torch.Tensor]


@dataclass
class ExampleSet:
    """Examples reduced to distinct (product, text) and (product, image) entries.

    `image_pixels` holds every image preprocessed once (float16, CPU) when caching; else
    `images` keeps the source images and they are preprocessed whenever used.
    """

    products: list[Hashable]
    texts: list[str]
    text_product: np.ndarray  # product index per distinct text
    images: list[Image.Image | bytes]
    image_product: np.ndarray  # product index per distinct image
    product_images: list[np.ndarray] = field(default_factory=list)
    # Expected times per epoch of each distinct text (the largest weight of its examples);
    # None: every text once.
    text_weight: np.ndarray | None = None
    tokens: torch.Tensor | None = None
    image_pixels: torch.Tensor | None = None

    def to(self, device: torch.device) -> ExampleSet:
        """Tokens and cached pixels moved next to the model (a few MB per thousand images)."""
        if device.type != "cpu":
            self.tokens = self.tokens.to(device) if self.tokens is not None else None
            if self.image_pixels is not None:
                self.image_pixels = self.image_pixels.to(device)
        return self


def as_pil(image: Image.Image | bytes) -> Image.Image:
    return decode_image(bytes(image)) if isinstance(image, bytes | bytearray) else image


def _image_digest(image: Image.Image | bytes) -> bytes:
    if isinstance(image, bytes | bytearray):
        return hashlib.blake2b(bytes(image), digest_size=16).digest()
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{image.mode}{image.size}".encode())
    h.update(image.tobytes())
    return h.digest()


def collect_examples(examples: Iterable[Sequence[Any]]) -> ExampleSet:
    """(product_key, text, image[, weight]) examples reduced to each product's distinct
    texts and images (same pixels: same image), in first-seen order."""
    product_index: dict[Hashable, int] = {}
    text_index: dict[tuple[int, str], int] = {}
    image_index: dict[tuple[int, bytes], int] = {}
    texts: list[str] = []
    text_product: list[int] = []
    text_weight: list[float] = []
    images: list[Image.Image | bytes] = []
    image_product: list[int] = []
    # id(image) -> (image, digest): an object shared by several examples is hashed once;
    # holding the image keeps its id from being reused by another object meanwhile.
    digests: dict[int, tuple[Any, bytes]] = {}
    for example in examples:
        product_key, text, image = example[:3]
        weight = float(example[3]) if len(example) > 3 else 1.0
        p = product_index.setdefault(product_key, len(product_index))
        if (p, text) not in text_index:
            text_index[(p, text)] = len(texts)
            texts.append(text)
            text_product.append(p)
            text_weight.append(weight)
        else:
            i = text_index[(p, text)]
            text_weight[i] = max(text_weight[i], weight)
        seen = digests.get(id(image))
        digest = seen[1] if seen else _image_digest(image)
        digests[id(image)] = (image, digest)
        if (p, digest) not in image_index:
            image_index[(p, digest)] = len(images)
            images.append(image)
            image_product.append(p)
    data = ExampleSet(
        products=list(product_index),
        texts=texts,
        text_product=np.asarray(text_product, dtype=np.int64),
        images=images,
        image_product=np.asarray(image_product, dtype=np.int64),
        text_weight=(np.asarray(text_weight) if any(w != 1.0 for w in text_weight) else None),
    )
    by_product: list[list[int]] = [[] for _ in data.products]
    for i, p in enumerate(image_product):
        by_product[p].append(i)
    data.product_images = [np.asarray(ix, dtype=np.int64) for ix in by_product]
    return data


def prepare_examples(
    examples: Iterable[Sequence[Any]],
    preprocess: Preprocess,
    tokenizer: Tokenizer,
    cache_images: bool,
) -> ExampleSet:
    """`collect_examples`, with every text tokenized and, when caching, every image
    preprocessed once."""
    data = collect_examples(examples)
    data.tokens = tokenizer(data.texts) if data.texts else None
    if cache_images and data.images:
        first = preprocess(as_pil(data.images[0]))
        pixels = torch.empty((len(data.images), *first.shape), dtype=torch.float16)
        pixels[0] = first
        for i in range(1, len(data.images)):
            pixels[i] = preprocess(as_pil(data.images[i]))
        data.image_pixels = pixels
    return data


def batch_pixels(data: ExampleSet, indices: Sequence[int], preprocess: Preprocess) -> torch.Tensor:
    """Float32 pixels of the images at `indices`: cached, or preprocessed now."""
    if data.image_pixels is not None:
        index = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        return data.image_pixels[index.to(data.image_pixels.device)].float()
    return torch.stack([preprocess(as_pil(data.images[i])) for i in indices])


def epoch_batches(
    text_product: np.ndarray, batch_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """One epoch of batches of text indices, shuffled, with no product twice in a batch
    where possible (two texts of one product in a batch are false negatives for InfoNCE).

    Texts are dealt in rounds (every product's first text, then every product's second
    text...), each round shuffled, and a text that would repeat a product in the batch
    being filled waits for the next one. Only when nothing else is left does a batch take
    a repeat. A final batch under half the batch size is merged away (dropped) when there
    are other batches; its texts come up again in other epochs.
    """
    n = len(text_product)
    if n == 0:
        return []
    batch_size = max(1, min(batch_size, n))
    order = rng.permutation(n)
    # Rank of each text among its product's texts, in shuffled order -> dealing round.
    round_of = np.empty(n, dtype=np.int64)
    counts: dict[int, int] = {}
    for i in order:
        p = int(text_product[i])
        round_of[i] = counts.get(p, 0)
        counts[p] = round_of[i] + 1
    order = order[np.argsort(round_of[order], kind="stable")]

    pending = deque(int(i) for i in order)
    batches: list[np.ndarray] = []
    while pending:
        batch: list[int] = []
        seen: set[int] = set()
        deferred: list[int] = []
        while pending and len(batch) < batch_size:
            i = pending.popleft()
            p = int(text_product[i])
            if p in seen:
                deferred.append(i)
            else:
                batch.append(i)
                seen.add(p)
        while deferred and len(batch) < batch_size:  # nothing else left: allow repeats
            batch.append(deferred.pop(0))
        pending.extendleft(reversed(deferred))
        batches.append(np.asarray(batch, dtype=np.int64))
    if len(batches) > 1 and len(batches[-1]) < batch_size / 2:
        batches.pop()
    return batches


def epoch_text_batches(
    data: ExampleSet, batch_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """`epoch_batches` of the texts, each text once, or with weights floor(w) times and
    once more with probability frac(w) (so w times on average; 0.5: every other epoch)."""
    if data.text_weight is None:
        return epoch_batches(data.text_product, batch_size, rng)
    whole = np.floor(data.text_weight)
    repeats = whole.astype(np.int64) + (rng.random(len(whole)) < data.text_weight - whole)
    order = np.repeat(np.arange(len(whole)), repeats)
    return [order[b] for b in epoch_batches(data.text_product[order], batch_size, rng)]


@lru_cache(maxsize=1 << 16)
def _words(text: str, segment_chinese: bool) -> tuple[tuple[str, int], ...]:
    if segment_chinese:
        return tuple(word_chunks(text))
    return tuple((word, i) for i, word in enumerate(text.split()))


def drop_words(
    text: str, probability: float, rng: np.random.Generator, *, segment_chinese: bool = True
) -> str:
    """With `probability`, `text` cut to a random non-empty subset of its words.

    Words are split at spaces and, with `segment_chinese`, Chinese runs by jieba
    ("红色条纹棉质T恤" -> 红色 条纹 棉质 T恤, so it can become "红色T恤"); the words kept
    join as they stood (no space inside a Chinese run).
    """
    words = _words(text, segment_chinese)
    if len(words) < 2 or rng.random() >= probability:
        return text
    keep = rng.random(len(words)) < 0.5
    if not keep.any():
        keep[rng.integers(len(words))] = True
    return words_join([w for w, k in zip(words, keep, strict=True) if k])


@dataclass
class EpochPairs:
    """One epoch's pairing: each text's image (one of its product's, drawn anew every
    epoch) and whether that image is flipped horizontally (None: no flips)."""

    image_choice: np.ndarray
    flips: np.ndarray | None


def epoch_pairs(data: ExampleSet, rng: np.random.Generator, hflip: bool) -> EpochPairs:
    image_choice = np.array(
        [rng.choice(data.product_images[p]) for p in data.text_product], dtype=np.int64
    )
    flips = rng.random(len(data.texts)) < 0.5 if hflip else None
    return EpochPairs(image_choice, flips)


def batch_tensors(
    data: ExampleSet,
    batch: np.ndarray,
    pairs: EpochPairs,
    preprocess: Preprocess,
    tokenizer: Tokenizer,
    word_dropout: float,
    rng: np.random.Generator,
    device: torch.device,
    segment_chinese: bool = True,
    positions: np.ndarray | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(pixels, tokens) of a batch of text indices, on `device`.

    With `positions`, only those entries of the batch (a rank's share of it); the random
    choices are drawn for the whole batch all the same, so every rank's `rng` stays in step.
    """
    if word_dropout > 0:
        texts = [
            drop_words(data.texts[i], word_dropout, rng, segment_chinese=segment_chinese)
            for i in batch
        ]
    if positions is not None:
        batch = batch[positions]
        texts = [texts[p] for p in positions] if word_dropout > 0 else []
    pixels = batch_pixels(data, pairs.image_choice[batch], preprocess)
    if pairs.flips is not None and pairs.flips[batch].any():
        flip = torch.as_tensor(pairs.flips[batch]).to(pixels.device)
        pixels[flip] = pixels[flip].flip(-1)
    pixels = pixels.to(device, non_blocking=True)
    if word_dropout > 0:
        tokens = tokenizer(texts).to(device, non_blocking=True)
    else:
        tokens = data.tokens[torch.as_tensor(batch).to(data.tokens.device)]
    return pixels, tokens
