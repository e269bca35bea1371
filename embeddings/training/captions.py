"""The texts a product is trained on, besides its titles: what kind of thing it is.

Titles name colour, pattern and material as often as the kind ("plain red linen dress"),
and colour is the easiest of them to see, so a small model trained on titles alone sorts
photos by colour first. A caption that is only the product's category ("Dresses",
"连衣裙"), in every language the category is named in, pairs photos of every colour with
the same words and so pulls one kind together. Each counts as much as a title (once an
epoch): on the demo, half of that (every other epoch) left photo search at 6-7 of 10 of
the photo's kind, a whole one took it past 8 (bench/README.md).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence

from PIL import Image

from .split import WeightedExample

KIND_CAPTION_WEIGHT = 1.0


def kind_captions(category_names: Iterable[str]) -> list[str]:
    """The category's names (its leaf, in each language it has), stripped, without repeats."""
    return list(dict.fromkeys(name.strip() for name in category_names if name and name.strip()))


def kind_examples(
    product_key: Hashable,
    category_names: Iterable[str],
    images: Sequence[Image.Image | bytes],
    titles: Iterable[str] = (),
    weight: float = KIND_CAPTION_WEIGHT,
) -> list[WeightedExample]:
    """Training examples pairing each of a product's images with each kind caption that is
    not already one of its `titles`."""
    known = set(titles)
    return [
        WeightedExample(product_key, text, image, weight)
        for text in kind_captions(category_names)
        if text not in known
        for image in images
    ]
