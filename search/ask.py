"""Questions about a product photo (/api/ask/ and the product page's ask box): the answer in
the question's language, its confidence, the runner-ups and what it rests on.

The type comes from search.questions; attributes and yes/no answers are CLIP zero-shot over
the catalog's own values (embeddings.zero_shot); "describe" composes the top attributes
into a sentence beside the catalog captions nearest the photo (as /api/captions/); "find"
is the text search. A product is asked about through the stored vector of its first photo
in the active space (nothing is re-encoded); an uploaded photo is encoded once, and only for
the types that look at it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from catalog.models import Product
from embeddings.models import EmbeddingSpace, ImageEmbedding
from embeddings.spaces import space_active
from embeddings.zero_shot import (
    AttributeGuess,
    attribute_value_label,
    attribute_values,
    attributes_predict,
    zero_shot_attributes,
)
from search.pipeline import product_search_by_text
from search.questions import ValueLexicon, question_classify
from search.ranking import nearest_captions_rows
from search.selectors import CaptionHit, ProductHit, SearchPage, image_vector

# Below this calibrated probability an answer says that it is unsure.
SURE = 0.5
DESCRIBE_ORDER = ("colour", "pattern", "material", "category")

SENTENCES = {
    "en": {
        "colour": "The colour is {}.",
        "pattern": "The pattern is {}.",
        "material": "It looks like {}.",
        "category": "It is a {}.",
        "audience": "It is for {}.",
        "yes": "Yes, it is {}.",
        "no": "No, it looks {} rather than {}.",
        "unsure": " (not sure)",
        "describe": "A {}.",
        "for": " For {}.",
        "nearest": " Closest in the catalog: “{}”.",
        "found": "{} products match; the best is “{}”.",
        "none": "Nothing in the catalog matches “{}”.",
        "unsupported": "Sorry, a photo only tells what a product is, its colour, pattern and "
        "material, and whom it is for: prices, sizes, stock and counts are on the product page.",
        "unknown": "Sorry, this shop has no {} values to read from a photo.",
    },
    "zh": {
        "colour": "颜色是{}。",
        "pattern": "图案是{}。",
        "material": "材质看起来是{}。",
        "category": "这是{}。",
        "audience": "适合人群：{}。",
        "yes": "是的，是{}。",
        "no": "不是，看起来是{}，不是{}。",
        "unsure": "（不太确定）",
        "describe": "一件{}。",
        "for": "适合人群：{}。",
        "nearest": "最相近的商品：「{}」。",
        "found": "找到{}件商品，最匹配的是「{}」。",
        "none": "没有与「{}」匹配的商品。",
        "unsupported": "抱歉，照片只能看出商品是什么、颜色、图案、材质和适合人群；"
        "价格、尺码、库存和数量请看商品详情。",
        "unknown": "抱歉，本店没有可以从照片看出的{}信息。",
    },
}
ATTRIBUTE_NAMES_ZH = {
    "colour": "颜色",
    "pattern": "图案",
    "material": "材质",
    "category": "品类",
    "audience": "适合人群",
}
OTHER_LANGUAGE = (
    "Sorry, questions can be asked in English or Chinese. 抱歉，目前只支持英文或中文提问。"
)


class PhotoMissing(LookupError):
    """The product has no photo with a vector in the active space to answer from."""


@dataclass(frozen=True)
class ValueAnswer:
    name: str  # the attribute
    value: str  # as the catalog stores it
    label: str  # in the question's language
    confidence: float


@dataclass(frozen=True)
class PhotoAnswer:
    space: EmbeddingSpace
    type: str
    lang: str  # "en", "zh" or "" (another language)
    answer: str
    confidence: float | None  # calibrated probability of the answer; None: find, unsupported
    attribute: str = ""
    alternatives: list[ValueAnswer] = field(default_factory=list)
    attributes: list[ValueAnswer] = field(default_factory=list)  # what it rests on
    captions: list[CaptionHit] = field(default_factory=list)
    page: SearchPage | None = None  # find: the search's page (its results are the evidence)

    @property
    def products(self) -> list[ProductHit]:
        return self.page.results if self.page is not None else []


def question_lexicon() -> ValueLexicon:
    """The catalog's values by their English and Chinese names (embeddings.zero_shot)."""
    return ValueLexicon.build(
        {name: attribute_values(name) for name in zero_shot_attributes()},
        attribute_value_label,
    )


def product_photo_vector(*, space: EmbeddingSpace, product: Product) -> np.ndarray:
    """The stored vector of the product's first photo that has one in `space` (the one its
    page shows first), or PhotoMissing."""
    row = (
        ImageEmbedding.objects.filter(space=space, image__product=product, vector__isnull=False)
        .order_by("image__position", "image_id")
        .values_list("vector", flat=True)
        .first()
    )
    if row is None:
        has_photos = product.images.exists()
        raise PhotoMissing(
            f"Product {product.pk}'s photos are not read by the model yet: try again shortly."
            if has_photos
            else f"Product {product.pk} has no photo to ask about."
        )
    vector = np.asarray(row.to_numpy() if hasattr(row, "to_numpy") else row, dtype=np.float32)
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


def photo_question_answer(
    *,
    question: str,
    product: Product | None = None,
    image: Image.Image | None = None,
    limit: int = 5,
) -> PhotoAnswer:
    """The answer to a question about a product's photo or an uploaded one."""
    space = space_active()
    asked = question_classify(question, lexicon=question_lexicon(), space=space)
    lang = asked.lang
    words = SENTENCES.get(lang)
    if words is None:
        return PhotoAnswer(space, "unsupported", "", OTHER_LANGUAGE, None)
    if asked.type == "unsupported":
        return PhotoAnswer(space, "unsupported", lang, words["unsupported"], None)
    if asked.type == "find":
        page = product_search_by_text(query=asked.text, limit=limit)
        if page.results:
            best = _product_title(page.results[0].product, lang)
            answer = words["found"].format(page.count, best)
        else:
            answer = words["none"].format(asked.text)
        return PhotoAnswer(space, "find", lang, answer, None, page=page)

    def vector() -> np.ndarray:
        if product is not None:
            return product_photo_vector(space=space, product=product)
        return np.asarray(image_vector(space, image), dtype=np.float32)

    if asked.type == "describe":
        return _describe(space, lang, vector(), limit)
    name = asked.attribute
    if name not in zero_shot_attributes():  # e.g. no category tree says whom things are for
        said = ATTRIBUTE_NAMES_ZH.get(name, name) if lang == "zh" else name
        return PhotoAnswer(space, "unsupported", lang, words["unknown"].format(said), None)
    (guesses,) = attributes_predict(space=space, image_vectors=vector()[None], names=[name])
    guess = guesses[name]
    label = _labeller(lang)
    if asked.type == "yes_no":
        return _yes_no(space, lang, guess, asked.value, label)
    sentence = words[asked.attribute].format(label(guess.name, guess.value))
    return PhotoAnswer(
        space,
        "attribute",
        lang,
        _hedged(sentence, guess.confidence, lang),
        guess.confidence,
        attribute=guess.name,
        alternatives=_alternatives(guess, label),
        attributes=[_value_answer(guess, label)],
    )


def _labeller(lang: str) -> Callable[[str, str], str]:
    return lambda name, value: attribute_value_label(name, value, lang)


def _value_answer(guess: AttributeGuess, label) -> ValueAnswer:
    return ValueAnswer(guess.name, guess.value, label(guess.name, guess.value), guess.confidence)


def _alternatives(guess: AttributeGuess, label) -> list[ValueAnswer]:
    return [ValueAnswer(guess.name, v, label(guess.name, v), p) for v, p in guess.alternatives]


def _hedged(sentence: str, confidence: float, lang: str) -> str:
    return sentence + SENTENCES[lang]["unsure"] if confidence < SURE else sentence


def _value_probability(guess: AttributeGuess, value: str) -> float:
    """The value's probability: the guess's or a runner-up's; a value beyond the runner-ups
    gets an even share of what they leave (at most the last runner-up's)."""
    if value == guess.value:
        return guess.confidence
    listed = dict(guess.alternatives)
    if value in listed:
        return listed[value]
    rest = len(attribute_values(guess.name)) - 1 - len(listed)
    left = max(0.0, 1.0 - guess.confidence - sum(listed.values()))
    share = left / rest if rest > 0 else 0.0
    return min(share, min(listed.values(), default=share))


def _yes_no(space, lang, guess: AttributeGuess, value: str, label) -> PhotoAnswer:
    words = SENTENCES[lang]
    asked_label = label(guess.name, value)
    p = _value_probability(guess, value)
    if value == guess.value:
        sentence, confidence = words["yes"].format(asked_label), p
    else:
        sentence = words["no"].format(label(guess.name, guess.value), asked_label)
        confidence = 1.0 - p
    return PhotoAnswer(
        space,
        "yes_no",
        lang,
        _hedged(sentence, confidence, lang),
        confidence,
        attribute=guess.name,
        alternatives=_alternatives(guess, label),
        attributes=[_value_answer(guess, label)],
    )


def _describe(space: EmbeddingSpace, lang: str, vector: np.ndarray, limit: int) -> PhotoAnswer:
    words = SENTENCES[lang]
    label = _labeller(lang)
    (guesses,) = attributes_predict(space=space, image_vectors=vector[None])
    parts = [guesses[name] for name in DESCRIBE_ORDER if name in guesses]
    joiner = "" if lang == "zh" else " "
    sentence = (
        words["describe"].format(joiner.join(label(g.name, g.value) for g in parts))
        if parts
        else ""
    )
    if "audience" in guesses:
        audience = guesses["audience"]
        sentence += words["for"].format(label(audience.name, audience.value))
        parts.append(audience)
    rows = nearest_captions_rows(space=space, vector=vector, limit=limit)
    captions = [CaptionHit(pid, fld, text, float(score)) for pid, fld, text, score in rows]
    nearest = next((c for c in captions if _is_chinese(c.text) == (lang == "zh")), None)
    if nearest is not None:
        sentence = (sentence + words["nearest"].format(nearest.text)).strip()
    confidence = float(np.mean([g.confidence for g in parts])) if parts else None
    return PhotoAnswer(
        space,
        "describe",
        lang,
        sentence,
        confidence,
        attributes=[_value_answer(g, label) for g in parts],
        captions=captions,
    )


def _is_chinese(text: str) -> bool:
    return any("\u3400" <= ch <= "\u9fff" for ch in text)


def _product_title(product: Product, lang: str) -> str:
    if lang == "en":
        return product.title
    titles = (product.attributes or {}).get("titles") or {}
    return titles.get(lang) or product.title
