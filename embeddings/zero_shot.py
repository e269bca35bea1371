"""Zero-shot attributes of a photo over the catalog's own values: colour, pattern, material,
category and who it is for, with a calibrated confidence and the runner-ups.

The values are those the catalog's products hold (`attributes`, the category tree), with
their labels in English and Chinese (the catalog's `*_zh` names, the categories' translated
names, the facets' value aliases). Each value is scored two ways against a photo vector:
its text prompts in both languages on the text tower (open_clip's zero-shot), and the mean
photo vector of the products labelled with it (a prototype). Per attribute a blend of the
two and a temperature are fitted on the catalog's own labelled products: half give the
prototypes, the other half are scored, and the blend and temperature with the lowest log
loss win (so a small model whose text tower knows colour but hardly material leans on the
prototypes for material only). "Who it is for" is not guessed on its own: it sums the
category probabilities by the category's ancestors (Women/Dresses counts for women).

Everything a space needs (prompt vectors, prototypes, fitted blend) is built once per
(space, catalog values) and kept in-process; the catalog's values are read again after
ZERO_SHOT_REFRESH_SECONDS.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np
from django.conf import settings

from catalog.models import Category, FacetValueAlias
from embeddings.models import EmbeddingSpace
from embeddings.spaces import space_encoder
from shop_search.db_routers import read_connection

# Attributes read from `Product.attributes`, each with its Chinese names in `<name>_zh`.
STORED_ATTRIBUTES = ("colour", "pattern", "material")
CATEGORY, AUDIENCE = "category", "audience"
# Ancestors of a category that say whom it is for; "everyone" is a category under none.
AUDIENCE_WORDS = {
    "women": "女装", "woman": "女装", "ladies": "女装", "女装": "女装", "女士": "女装",
    "men": "男装", "man": "男装", "男装": "男装", "男士": "男装",
    "kids": "童装", "children": "童装", "girls": "女童", "boys": "男童", "baby": "婴儿",
    "童装": "童装",
}  # fmt: skip
EVERYONE = "everyone"
EVERYONE_LABELS = {"en": ("everyone",), "zh": ("通用",)}

# Prompts per language: the label alone (titles are short) and in a sentence, averaged.
PROMPTS = {
    "en": ("{}", "a photo of a {} product", "a {} item"),
    "zh": ("{}", "一张{}商品的照片", "{}的商品"),
}
CATEGORY_PROMPTS = {
    "en": ("{}", "a photo of a {}", "a {}"),
    "zh": ("{}", "一张{}的照片", "一件{}"),
}
BLENDS = (0.0, 0.25, 0.5, 0.75, 1.0)  # share of the prototype score, fitted per attribute
TEMPERATURES = tuple(float(t) for t in np.geomspace(1.0, 400.0, 40))
MIN_CALIBRATION = 8  # labelled photos below which an attribute keeps text prompts alone

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


@dataclass(frozen=True)
class AttributeGuess:
    name: str  # the attribute, as products store it: "colour", "material"...
    value: str  # one of the catalog's own values for it, as stored ("red")
    confidence: float  # calibrated probability that value is right, 0..1
    alternatives: tuple[tuple[str, float], ...]  # runner-ups (value, probability), best first


@dataclass
class _Vocabulary:
    """The catalog's values per attribute, with their labels per language."""

    values: dict[str, list[str]] = field(default_factory=dict)
    labels: dict[tuple[str, str], dict[str, list[str]]] = field(default_factory=dict)
    # category value -> audience value (its ancestors), when the tree names an audience
    audience_of: dict[str, str] = field(default_factory=dict)
    signature: str = ""

    def label(self, name: str, value: str, lang: str) -> str:
        labels = self.labels.get((name, value), {})
        return (labels.get(lang) or labels.get("en") or [value])[0]


def _add_label(labels: dict[str, list[str]], text: str | None) -> None:
    text = (text or "").strip()
    if not text:
        return
    lang = "zh" if _CJK.search(text) else "en"
    if text.lower() not in (known.lower() for known in labels[lang]):
        labels[lang].append(text)


_STORED_SQL = """
SELECT n.name, v.value, CASE jsonb_typeof(p.attributes -> (n.name || '_zh'))
         WHEN 'array' THEN p.attributes -> (n.name || '_zh') ->> (v.i::int - 1)
         WHEN 'string' THEN p.attributes ->> (n.name || '_zh') END AS zh, count(*)
FROM catalog_product p
CROSS JOIN unnest(%s::text[]) n(name)
CROSS JOIN LATERAL jsonb_array_elements_text(CASE jsonb_typeof(p.attributes -> n.name)
    WHEN 'array' THEN p.attributes -> n.name
    WHEN 'string' THEN jsonb_build_array(p.attributes -> n.name) ELSE '[]'::jsonb END)
  WITH ORDINALITY v(value, i)
WHERE p.status = 'active' AND trim(v.value) <> ''
GROUP BY 1, 2, 3
"""
# A product's category as a value: the key it stores ("dress"), else its category's name.
_CATEGORY_VALUE = "coalesce(nullif(trim(p.attributes ->> 'category'), ''), c.name)"
_CATEGORY_SQL = f"""
SELECT {_CATEGORY_VALUE}, p.attributes ->> 'category_name', p.category_id, count(*)
FROM catalog_product p LEFT JOIN catalog_category c ON c.id = p.category_id
WHERE p.status = 'active' AND {_CATEGORY_VALUE} IS NOT NULL
GROUP BY 1, 2, 3
"""


def _vocabulary_read() -> _Vocabulary:
    vocabulary = _Vocabulary()
    labels: dict[tuple[str, str], dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    counts: dict[str, Counter] = defaultdict(Counter)
    with read_connection().cursor() as cursor:  # a replica inside search_read
        cursor.execute(_STORED_SQL, [list(STORED_ATTRIBUTES)])
        stored = cursor.fetchall()
        cursor.execute(_CATEGORY_SQL)
        categorised = cursor.fetchall()
    for name, value, zh, count in sorted(stored, key=lambda row: -row[3]):
        counts[name][value] += count
        _add_label(labels[name, value], value)
        _add_label(labels[name, value], zh)
    categories = {c.pk: c for c in Category.objects.all()}
    category_of: dict[str, Counter] = defaultdict(Counter)
    for value, name_en, category_id, count in sorted(categorised, key=lambda row: -row[3]):
        counts[CATEGORY][value] += count
        _add_label(labels[CATEGORY, value], name_en)
        if category_id in categories:
            category_of[value][category_id] += count
    for value, ids in category_of.items():
        leaf = categories[ids.most_common(1)[0][0]]
        _add_label(labels[CATEGORY, value], leaf.name)
        _add_label(labels[CATEGORY, value], (leaf.names or {}).get("zh"))
        _add_label(labels[CATEGORY, value], value)
        audience = _audience(leaf, categories)
        if audience is not None:
            vocabulary.audience_of[value] = audience.name.lower()
            _add_label(labels[AUDIENCE, audience.name.lower()], audience.name)
            zh = (audience.names or {}).get("zh") or AUDIENCE_WORDS[audience.name.lower()]
            _add_label(labels[AUDIENCE, audience.name.lower()], zh)
    # Facet value aliases are more names of the same value ("红色" is Red, "stripes" striped).
    for alias in FacetValueAlias.objects.select_related("facet"):
        name = alias.facet.name.lower()
        for value in counts.get(name, ()):
            if value.lower() == alias.value.lower():
                _add_label(labels[name, value], alias.alias)
    for name, counter in counts.items():
        if len(counter) >= 2:  # one value is no question
            vocabulary.values[name] = sorted(counter)
    if vocabulary.audience_of and CATEGORY in vocabulary.values:
        for value in vocabulary.values[CATEGORY]:
            vocabulary.audience_of.setdefault(value, EVERYONE)
        labels[AUDIENCE, EVERYONE] = {lang: list(t) for lang, t in EVERYONE_LABELS.items()}
        vocabulary.values[AUDIENCE] = sorted(set(vocabulary.audience_of.values()))
    else:
        vocabulary.audience_of = {}
    vocabulary.labels = {key: dict(value) for key, value in labels.items()}
    digest = hashlib.sha256(repr((vocabulary.values, vocabulary.labels)).encode())
    vocabulary.signature = digest.hexdigest()
    return vocabulary


def _audience(category: Category, categories: dict[int, Category]) -> Category | None:
    """The nearest ancestor (or itself) whose name says whom it is for."""
    seen = set()
    while category is not None and category.pk not in seen:
        seen.add(category.pk)
        names = [category.name.lower(), (category.names or {}).get("zh", "")]
        if any(name in AUDIENCE_WORDS for name in names):
            return category
        category = categories.get(category.parent_id)
    return None


@dataclass
class _Attribute:
    """One attribute's scorer in one space."""

    values: list[str]
    text: np.ndarray  # (k, d) mean prompt vector per value in both languages, unit length
    text_by_lang: dict[str, np.ndarray]  # the same per language
    prototypes: np.ndarray  # (k, d) mean labelled photo vector per value (text where none)
    blend: float = 0.0
    temperature: float = 50.0
    calibrated_on: int = 0

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        scores = (1 - self.blend) * (vectors @ self.text.T) + self.blend * (
            vectors @ self.prototypes.T
        )
        return _softmax(scores * self.temperature)


@dataclass
class _SpaceModel:
    vocabulary: _Vocabulary
    attributes: dict[str, _Attribute]
    built: float


def _softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


def _prompt_vectors(
    space: EmbeddingSpace, vocabulary: _Vocabulary, name: str
) -> dict[str, np.ndarray]:
    """Per language, and for both ("" key), the mean of each value's prompts over its labels."""
    templates = CATEGORY_PROMPTS if name == CATEGORY else PROMPTS
    values = vocabulary.values[name]
    texts, owners = [], []
    for row, value in enumerate(values):
        labels = vocabulary.labels.get((name, value), {"en": [value]})
        for lang in PROMPTS:
            # A value without a label in a language is prompted by its stored value.
            for label in labels.get(lang) or [value]:
                for template in templates[lang]:
                    texts.append(template.format(label))
                    owners.append((lang, row))
    encoded = space_encoder(space).encode_texts(texts)
    sums = {lang: np.zeros((len(values), encoded.shape[1]), dtype=np.float32) for lang in PROMPTS}
    for (lang, row), vector in zip(owners, encoded, strict=True):
        sums[lang][row] += vector
    by_lang = {lang: _unit(total) for lang, total in sums.items()}
    by_lang[""] = _unit(sum(by_lang[lang] for lang in PROMPTS))
    return by_lang


_LABELLED_SQL = f"""
SELECT DISTINCT ON (p.id) p.id, e.vector, p.attributes, {_CATEGORY_VALUE}
FROM catalog_product p
JOIN catalog_productimage i ON i.product_id = p.id
JOIN embeddings_imageembedding e ON e.image_id = i.id AND e.space_id = %s
LEFT JOIN catalog_category c ON c.id = p.category_id
WHERE p.status = 'active' AND e.vector IS NOT NULL AND p.id IN (
  SELECT id FROM catalog_product WHERE status = 'active' ORDER BY id LIMIT %s)
ORDER BY p.id, i.position, i.id
"""


def _labelled_photos(space: EmbeddingSpace) -> tuple[np.ndarray, list[dict[str, str]]]:
    """The first photo vector of up to ZERO_SHOT_CALIBRATION_PRODUCTS labelled products,
    and each one's values (a list of several colours says nothing about one photo)."""
    with read_connection().cursor() as cursor:  # a replica inside search_read
        cursor.execute(_LABELLED_SQL, [space.pk, settings.ZERO_SHOT_CALIBRATION_PRODUCTS])
        rows = cursor.fetchall()
    vectors, labels = [], []
    for _, vector, attributes, category in rows:
        vectors.append(json.loads(vector) if isinstance(vector, str) else vector.to_numpy())
        if isinstance(attributes, str):  # Django's psycopg loader leaves jsonb as text
            attributes = json.loads(attributes)
        attributes = attributes if isinstance(attributes, dict) else {}
        values = {
            name: attributes[name].strip()
            for name in STORED_ATTRIBUTES
            if isinstance(attributes.get(name), str) and attributes[name].strip()
        }
        if category:
            values[CATEGORY] = category
        labels.append(values)
    if not vectors:
        return np.zeros((0, space.embed_dim), dtype=np.float32), []
    return _unit(np.asarray(vectors, dtype=np.float32)), labels


def _fit(attribute: _Attribute, vectors: np.ndarray, truth: np.ndarray) -> None:
    """Prototypes from one half of the labelled photos, the blend and temperature with the
    lowest log loss on the other half, then prototypes from all of them."""
    halves = np.arange(len(truth)) % 2
    held = halves == 1
    prototypes = _prototypes(vectors[~held], truth[~held], attribute.text)
    best = (np.inf, 0.0, attribute.temperature)
    if held.sum() >= MIN_CALIBRATION:
        rows = np.arange(held.sum())
        text_scores = vectors[held] @ attribute.text.T
        proto_scores = vectors[held] @ prototypes.T
        for blend in BLENDS:
            scores = (1 - blend) * text_scores + blend * proto_scores
            for temperature in TEMPERATURES:
                p = _softmax(scores * temperature)[rows, truth[held]]
                loss = float(-np.log(np.maximum(p, 1e-9)).mean())
                if loss < best[0] - 1e-9:
                    best = (loss, blend, temperature)
    _, attribute.blend, attribute.temperature = best
    attribute.prototypes = _prototypes(vectors, truth, attribute.text)
    attribute.calibrated_on = int(held.sum()) if np.isfinite(best[0]) else 0


def _prototypes(vectors: np.ndarray, truth: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    prototypes = fallback.copy()
    for row in range(len(fallback)):
        mine = vectors[truth == row]
        if len(mine):
            prototypes[row] = _unit(mine.mean(axis=0))
    return prototypes


def _space_model_build(space: EmbeddingSpace, vocabulary: _Vocabulary) -> _SpaceModel:
    vectors, labels = _labelled_photos(space)
    attributes = {}
    for name, values in vocabulary.values.items():
        if name == AUDIENCE:
            continue  # summed from the category's probabilities
        prompts = _prompt_vectors(space, vocabulary, name)
        attribute = _Attribute(
            values=values,
            text=prompts.pop(""),
            text_by_lang=prompts,
            prototypes=np.zeros((0, space.embed_dim), dtype=np.float32),
            temperature=_logit_scale(space),
        )
        index = {value: row for row, value in enumerate(values)}
        rows = [i for i, known in enumerate(labels) if known.get(name) in index]
        truth = np.asarray([index[labels[i][name]] for i in rows], dtype=np.int64)
        _fit(attribute, vectors[rows], truth)
        attributes[name] = attribute
    return _SpaceModel(vocabulary=vocabulary, attributes=attributes, built=time.monotonic())


def _logit_scale(space: EmbeddingSpace) -> float:
    scale = getattr(space_encoder(space).model, "logit_scale", None)
    return float(scale.exp().item()) if scale is not None else 100.0


_lock = threading.Lock()
_vocabulary_cache: tuple[float, _Vocabulary] | None = None
_models: dict[tuple[int, str, str], _SpaceModel] = {}


def _vocabulary() -> _Vocabulary:
    global _vocabulary_cache
    with _lock:
        now = time.monotonic()
        if _vocabulary_cache and now - _vocabulary_cache[0] < settings.ZERO_SHOT_REFRESH_SECONDS:
            return _vocabulary_cache[1]
    vocabulary = _vocabulary_read()
    with _lock:
        _vocabulary_cache = (time.monotonic(), vocabulary)
    return vocabulary


def _space_model(space: EmbeddingSpace) -> _SpaceModel:
    vocabulary = _vocabulary()
    key = (space.pk, space.checkpoint_sha256 or space.name, vocabulary.signature)
    with _lock:
        model = _models.get(key)
    if model is not None and time.monotonic() - model.built < settings.ZERO_SHOT_REFRESH_SECONDS:
        return model
    model = _space_model_build(space, vocabulary)
    with _lock:
        for stale in [k for k in _models if k[0] == space.pk]:
            del _models[stale]
        _models[key] = model
    return model


def zero_shot_cache_clear() -> None:
    """Forget the catalog's values and every space's fitted scorers (after a bulk change,
    and between tests)."""
    global _vocabulary_cache
    with _lock:
        _vocabulary_cache = None
        _models.clear()


def zero_shot_attributes() -> tuple[str, ...]:
    """The attributes it can answer for this catalog (each with at least two values)."""
    order = (*STORED_ATTRIBUTES, CATEGORY, AUDIENCE)
    return tuple(name for name in order if name in _vocabulary().values)


def attribute_values(name: str) -> tuple[str, ...]:
    """The catalog's own values of an attribute, as stored (empty for an unknown one)."""
    return tuple(_vocabulary().values.get(name, ()))


def attribute_value_label(name: str, value: str, lang: str) -> str:
    """The value as shoppers say it in "en" or "zh" (the stored value when no label is known)."""
    return _vocabulary().label(name, value, lang)


def attributes_predict(
    *, space: EmbeddingSpace, image_vectors: np.ndarray, names=None
) -> list[dict[str, AttributeGuess]]:
    """For each row of `image_vectors` ((n, d) unit vectors of photos in `space`), the most
    likely value of each attribute in `names` (default: all of `zero_shot_attributes()`)."""
    model = _space_model(space)
    vectors = np.asarray(image_vectors, dtype=np.float32).reshape(-1, space.embed_dim)
    wanted = [n for n in (names or zero_shot_attributes()) if n in model.vocabulary.values]
    results: list[dict[str, AttributeGuess]] = [{} for _ in range(len(vectors))]
    if not len(vectors):
        return results
    probabilities = {}
    for name in {CATEGORY if n == AUDIENCE else n for n in wanted}:
        attribute = model.attributes[name]
        probabilities[name] = (attribute.values, attribute.probabilities(vectors))
    if AUDIENCE in wanted:
        values, category_p = probabilities[CATEGORY]
        audiences = model.vocabulary.values[AUDIENCE]
        columns = [audiences.index(model.vocabulary.audience_of[v]) for v in values]
        summed = np.zeros((len(vectors), len(audiences)), dtype=np.float64)
        np.add.at(summed.T, np.asarray(columns), category_p.T)
        probabilities[AUDIENCE] = (audiences, summed)
    for name in wanted:
        values, p = probabilities[name]
        order = np.argsort(-p, axis=1)
        for row, ranked in enumerate(order):
            best, *rest = ranked[:4]
            results[row][name] = AttributeGuess(
                name=name,
                value=values[best],
                confidence=float(p[row, best]),
                alternatives=tuple((values[i], float(p[row, i])) for i in rest),
            )
    return results


def attribute_probabilities(
    *,
    space: EmbeddingSpace,
    image_vectors: np.ndarray,
    name: str,
    blend: float | None = None,
    lang: str = "",
) -> tuple[list[str], np.ndarray]:
    """The values of one stored attribute and their probabilities per row; `blend` scores
    with another prototype share than the fitted one (0: text prompts alone), `lang` with
    the prompts of one language ("en", "zh"), at the fitted temperature: for comparing
    accuracies (tests, benches), not confidences."""
    attribute = _space_model(space).attributes[name]
    if blend is not None:
        attribute = dataclasses.replace(attribute, blend=blend)
    if lang:
        attribute = dataclasses.replace(attribute, text=attribute.text_by_lang[lang])
    vectors = np.asarray(image_vectors, dtype=np.float32).reshape(-1, space.embed_dim)
    return attribute.values, attribute.probabilities(vectors)


def zero_shot_report(space: EmbeddingSpace) -> dict[str, dict]:
    """How each attribute is scored in a space: its values, the fitted prototype share
    (0: text prompts alone) and temperature, and on how many labelled photos."""
    model = _space_model(space)
    return {
        name: {
            "values": len(attribute.values),
            "blend": attribute.blend,
            "temperature": round(attribute.temperature, 2),
            "calibrated_on": attribute.calibrated_on,
        }
        for name, attribute in model.attributes.items()
    }
