"""Kind captions: what teaches the demo model what a thing is, beside its colour.

Django-free (no database): the captions a product's category gives, and what they add to
the examples an epoch trains on.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from embeddings.training import kind_captions, kind_examples
from embeddings.training.captions import KIND_CAPTION_WEIGHT
from embeddings.training.data import collect_examples, epoch_text_batches
from embeddings.training.split import WeightedExample


def test_kind_captions_are_the_category_names_once_each():
    assert kind_captions(["Dresses", " 连衣裙 ", "", "Dresses"]) == ["Dresses", "连衣裙"]


def test_kind_examples_pair_every_image_with_each_new_kind_caption():
    images = [Image.new("RGB", (4, 4), (i, 0, 0)) for i in range(2)]
    examples = kind_examples("p1", ["Mugs", "马克杯"], images, titles=["马克杯"])
    assert examples == [
        WeightedExample("p1", "Mugs", images[0], KIND_CAPTION_WEIGHT),
        WeightedExample("p1", "Mugs", images[1], KIND_CAPTION_WEIGHT),
    ]
    assert KIND_CAPTION_WEIGHT == 1.0  # once an epoch, like a title


def test_kind_captions_at_half_weight_come_up_every_other_epoch_and_titles_every_epoch():
    image = Image.new("RGB", (4, 4))
    examples = []
    for p in range(200):
        examples.append((p, f"plain red thing {p}", image))
        examples += kind_examples(p, ["Things", "东西"], [image], weight=0.5)
    data = collect_examples(examples)
    assert data.text_weight.tolist() == [1.0, 0.5, 0.5] * 200
    rng = np.random.default_rng(0)
    shown = np.zeros(len(data.texts))
    for _ in range(40):
        for batch in epoch_text_batches(data, 32, rng):
            np.add.at(shown, batch, 1)
    titles, kinds = shown[0::3] / 40, np.concatenate([shown[1::3], shown[2::3]]) / 40
    assert 0.9 < titles.mean() <= 1.0  # every epoch (but the last short batch)
    assert 0.4 < kinds.mean() < 0.6  # every other epoch on average
