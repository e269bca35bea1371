"""Training examples and the split of a catalogue into training and validation products."""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Iterable
from typing import NamedTuple

from PIL import Image


class Example(NamedTuple):
    """One (product, text, image) training or validation example."""

    product_key: Hashable
    text: str
    image: Image.Image | bytes


class WeightedExample(NamedTuple):
    """An `Example` trained on `weight` times per epoch on average (the shoppers' query
    pairs count by engagement); validation ignores the weight."""

    product_key: Hashable
    text: str
    image: Image.Image | bytes
    weight: float


def split_by_product(
    product_keys: Iterable[Hashable], val_fraction: float = 0.1, seed: int = 0
) -> tuple[list[Hashable], list[Hashable]]:
    """Split distinct product keys into (train_keys, val_keys), deterministically.

    Each key goes to validation when a hash of (seed, key) falls below `val_fraction`, so
    the assignment of a product never depends on which other products exist (adding
    products to a catalogue does not reshuffle the old ones) nor on the process
    (`hash()` is salted per process; sha256 is not). Keys keep their first-seen order and
    duplicates are dropped, so no key is in both lists.
    """
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"val_fraction must be within [0, 1], got {val_fraction}")
    train: list[Hashable] = []
    val: list[Hashable] = []
    seen: set[Hashable] = set()
    for key in product_keys:
        if key in seen:
            continue
        seen.add(key)
        (val if is_validation_key(key, val_fraction, seed) else train).append(key)
    return train, val


def is_validation_key(key: Hashable, val_fraction: float, seed: int = 0) -> bool:
    """Whether `split_by_product` puts `key` in validation: a hash of (seed, key) alone, so
    a product can be placed on its own while streaming (the catalog export does)."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < val_fraction  # uniform in [0, 1)
