"""Similarity floors of a trained model: for queries of catalog words, and for nonsense.

Django-free like the rest of training, so bench/finetune.py reports them too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from catalog.images import decode_image
from catalog.text import word_chunks, words_join

from .split import Example


def shopper_queries(examples: list[Example]) -> list[str]:
    """Each title cut to its first and last word, the shape of real short queries
    ("red t-shirt"); Chinese titles by jieba's words ("红色T恤")."""
    queries = []
    for example in examples:
        words = word_chunks(example.text)
        queries.append(words_join([words[0], words[-1]]) if len(words) > 1 else example.text)
    return queries


def gibberish_queries(count: int, *, seed: int = 0) -> list[str]:
    """Random letter strings shaped like queries: one to three "words" of 3 to 8 letters."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    return [
        " ".join(
            "".join(rng.choice(letters, int(rng.integers(3, 9))))
            for _ in range(int(rng.integers(1, 4)))
        )
        for _ in range(count)
    ]


@dataclass(frozen=True)
class FloorCalibration:
    similarity_floor: float  # for queries with catalog words
    unknown_words_floor: float  # for queries with none: at least similarity_floor
    report: dict  # what they were calibrated on, for the fine-tune page


def similarity_floors_calibrate(
    *,
    encoder,
    examples: list[Example],
    catalog_images: int | None = None,
    percentile: float = 2.0,
    gibberish: int = 512,
    seed: int = 0,
) -> FloorCalibration:
    """The similarities under which a query's image-only hits are treated as noise, per model.

    Models differ wildly in their similarity scale (pretrained CLIP puts true matches near
    0.3, a small model trained on one shop near 0.8), so no global floor fits.

    - `similarity_floor`: the `percentile` of the similarity between short shopper-style
      queries (validation titles cut to their first and last word) and their own
      product's photos: 98% of such real queries stay above it.
    - `unknown_words_floor`: for queries with no word the catalog knows. Random letter
      strings ("qwkz plom") are compared with every validation photo; the floor is the
      similarity such a string reaches with one photo in 5 x `catalog_images` cases, so
      four nonsense queries in five find no photo of the whole catalog. A small
      model trained on one shop scores unseen strings high ("qwerty zxcv" 0.84 against a
      floor of 0.62 on the demo), which is why the vocabulary decides which floor applies.
    """
    texts = shopper_queries(examples)
    text_vecs = encoder.encode_texts(texts)
    unique: dict[int, int] = {}
    for example in examples:
        unique.setdefault(id(example.image), len(unique))
    pictures = {id(e.image): e.image for e in examples}
    image_vecs = encoder.encode_images([_as_pil_image(pictures[key]) for key in unique])
    own = image_vecs[[unique[id(e.image)] for e in examples]]
    similarities = (own * text_vecs).sum(axis=1)
    # "lower": an observed similarity, so at least (100 - percentile)% of the queries are at
    # or above it however few there are (interpolating could put it above the lowest few).
    floor = round(float(np.percentile(similarities, percentile, method="lower")), 4)

    nonsense = encoder.encode_texts(gibberish_queries(gibberish, seed=seed)) @ image_vecs.T
    images = max(catalog_images or 0, len(image_vecs))
    quantile = 1 - 0.2 / images
    unknown = max(floor, round(float(np.quantile(nonsense, quantile, method="higher")), 4))

    def hits_per_query(threshold: float) -> float:
        """Catalog photos a nonsense query reaches at `threshold`, on average (estimated)."""
        return round(float((nonsense >= threshold).mean() * images), 2)

    report = {
        "real_queries": len(texts),
        "gibberish_queries": gibberish,
        "validation_images": len(image_vecs),
        "catalog_images": images,
        "real_similarity": _summary(similarities),
        "gibberish_similarity": _summary(nonsense.ravel()),
        "gibberish_best_per_query": _summary(nonsense.max(axis=1)),
        "similarity_floor": floor,
        "unknown_words_floor": unknown,
        "real_queries_above_floor": round(float((similarities >= floor).mean()), 4),
        "real_queries_above_unknown_words_floor": round(float((similarities >= unknown).mean()), 4),
        "gibberish_photos_per_query_at_floor": hits_per_query(floor),
        "gibberish_photos_per_query_at_unknown_words_floor": hits_per_query(unknown),
    }
    return FloorCalibration(floor, unknown, report)


def _summary(values: np.ndarray) -> dict:
    return {
        name: round(float(np.percentile(values, q)), 4)
        for name, q in (("p2", 2), ("p50", 50), ("p98", 98), ("max", 100))
    }


def _as_pil_image(image):
    return image if hasattr(image, "convert") else decode_image(image)
