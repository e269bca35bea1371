"""Reads: photo search, similar products, captions and image-text match; the query
vectors; and the result page every product search ends in (`search_page`: rules,
sorting, related products and facets over the whole ranked window). The text search's
stages are search.pipeline.

Each is one bounded SQL query over the active space's HNSW indexes (search.ranking,
search.retrieval), then one query for the page's products.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from django.conf import settings
from django.core.cache import cache
from django.db.models import QuerySet
from PIL import Image

from catalog.models import Product, ProductImage, ProductVariant
from catalog.selectors import category_ancestor_ids, category_nodes
from embeddings.models import EmbeddingSpace
from embeddings.spaces import space_active, space_encoder
from search.filters import SearchFilters
from search.query import QueryAnalysis
from search.ranking import (
    MAX_EF_SEARCH,
    image_text_match_row,
    nearest_captions_rows,
    similar_products_rows,
)
from search.related import NoResultsHelp, no_results_help, related_rows
from search.retrieval import RankedProduct, hybrid_search
from search.rules import (
    NO_RULES,
    RuleEffects,
    products_hidden_everywhere,
    rules_apply,
    rules_for_search,
)
from search.sorting import Sort, ranked_sort
from search.variants import AttributeFacet, attribute_facets, best_variants

logger = logging.getLogger(__name__)

NO_FILTERS = SearchFilters()


@dataclass(frozen=True)
class ProductHit:
    product: Product
    score: float  # fused rank score: what results are ordered by
    similarity: float | None  # cosine of its best image to the query; None: text match only
    # why it is here: "sku", "text", "synonym" (its words match through one), "image", "pinned"
    matched: tuple[str, ...] = ()
    related: bool = False  # under the "Related products" divider of a thin page
    variant: ProductVariant | None = None  # the one it is shown with (search.variants)

    @property
    def image(self) -> ProductImage | None:
        """The photo the card shows: its variant's, else the product's first."""
        if self.variant is not None and self.variant.image is not None:
            return self.variant.image
        return next(iter(self.product.images.all()), None)

    @property
    def price(self):
        return self.variant.price if self.variant is not None else self.product.price

    @property
    def in_stock(self) -> bool:
        return self.variant.in_stock if self.variant is not None else self.product.in_stock


@dataclass(frozen=True)
class FacetCount:
    value: str  # what the filter parameter takes: a category slug, a brand
    label: str
    count: int
    depth: int = 0  # categories: 0 for a top-level one, 1 for its children...


@dataclass(frozen=True)
class Facets:
    categories: list[FacetCount] = field(default_factory=list)
    brands: list[FacetCount] = field(default_factory=list)
    in_stock: int = 0
    attributes: list[AttributeFacet] = field(default_factory=list)  # options, attributes


@dataclass(frozen=True)
class SearchPage:
    space: EmbeddingSpace
    count: int
    results: list[ProductHit]
    facets: Facets = field(default_factory=Facets)
    sort: str = Sort.RELEVANCE
    synonyms: dict[str, list[str]] = field(default_factory=dict)  # span -> its synonyms
    suggestions: NoResultsHelp | None = None  # when nothing is relevant
    corrected_query: str | None = None  # text search: the corrected words it also matched
    # An interleaved search (search.interleaving): the candidate space merged with `space`,
    # and per result who contributed it (0: `space`, 1: the candidate, -1: neither).
    interleaved_with: EmbeddingSpace | None = None
    teams: tuple[int, ...] = ()
    search_id: uuid.UUID | None = None  # its row in the search log (search.searchlog)
    # A text search (search.pipeline): what it understood (search.understanding), the
    # words its matches leave out and those every word match has (search.matching).
    understood: tuple = ()
    ignored_words: tuple[str, ...] = ()
    matched_words: tuple[str, ...] = ()
    # A text search: the learned ranker's features of each product shown (search.features),
    # by product id, for the log.
    features: dict[int, tuple[float, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class CaptionHit:
    product_id: int
    field: str
    text: str
    score: float


@dataclass(frozen=True)
class ImageTextMatch:
    space: EmbeddingSpace
    score: float
    rank: int | None  # among the catalog captions by fit to the image; None: beyond `compared`
    compared: int  # how many of the image's nearest captions the rank was counted within
    top_captions: list[CaptionHit]


# --- query vectors ------------------------------------------------------------------------


def normalise_query(query: str) -> str:
    return " ".join(query.lower().split())


def query_vector_cache_key(space: EmbeddingSpace, normalised_query: str) -> str:
    digest = hashlib.sha256(f"{space.pk}:{space.name}:{normalised_query}".encode()).hexdigest()
    return f"search:qv:{digest}"


def text_vector(space: EmbeddingSpace, text: str) -> np.ndarray:
    """The query's vector in `space`, cached by (space, normalised query).

    Django's cache: Redis when CACHE_URL is set (shared by all web processes), else in
    process. A cache that is down only costs the text tower's time.
    """
    text = normalise_query(text)
    key = query_vector_cache_key(space, text)
    try:
        cached = cache.get(key)
    except Exception:  # any backend's connection error: search must go on without it
        logger.warning("query vector cache unreachable", exc_info=True)
        cached = None
    if cached is not None:
        return np.frombuffer(cached, dtype=np.float32)
    vector = np.asarray(space_encoder(space).encode_texts([text])[0], dtype=np.float32)
    try:
        cache.set(key, vector.tobytes(), timeout=settings.SEARCH_QUERY_CACHE_SECONDS)
    except Exception:
        logger.warning("query vector cache unreachable", exc_info=True)
    return vector


def text_vectors(space: EmbeddingSpace, texts: list[str]) -> np.ndarray:
    """Many queries' vectors (rows in the order given): those cached by text_vector are
    read in one round trip, the rest encoded in batches and cached for it."""
    texts = [normalise_query(text) for text in texts]
    keys = [query_vector_cache_key(space, text) for text in texts]
    try:
        cached = cache.get_many(keys)
    except Exception:  # as in text_vector: a cache that is down costs only the encoding
        logger.warning("query vector cache unreachable", exc_info=True)
        cached = {}
    missing = sorted({text for text, key in zip(texts, keys, strict=True) if key not in cached})
    if missing:
        encoded = space_encoder(space).encode_texts(missing)
        fresh = {
            query_vector_cache_key(space, text): np.asarray(vector, dtype=np.float32).tobytes()
            for text, vector in zip(missing, encoded, strict=True)
        }
        try:
            cache.set_many(fresh, timeout=settings.SEARCH_QUERY_CACHE_SECONDS)
        except Exception:
            logger.warning("query vector cache unreachable", exc_info=True)
        cached = {**cached, **fresh}
    if not texts:
        return np.zeros((0, space.embed_dim), dtype=np.float32)
    return np.stack([np.frombuffer(cached[key], dtype=np.float32) for key in keys])


def image_vector(space: EmbeddingSpace, image: Image.Image) -> np.ndarray:
    return space_encoder(space).encode_images([image])[0]


def space_similarity_floor(space: EmbeddingSpace) -> float:
    floor = space.similarity_floor
    return settings.SEARCH_SIMILARITY_FLOOR if floor is None else floor


def query_similarity_floor(space: EmbeddingSpace, analysis: QueryAnalysis) -> float:
    """The floor for this query's image-only hits: higher when none of its words is one
    the catalog knows or a correction of one ("qwerty zxcv"), where the space (or the
    SEARCH_UNKNOWN_WORDS_FLOOR setting) says how much higher."""
    floor = space_similarity_floor(space)
    if analysis.in_vocabulary:
        return floor
    unknown = space.unknown_words_floor
    unknown = settings.SEARCH_UNKNOWN_WORDS_FLOOR if unknown is None else unknown
    return floor if unknown is None else max(floor, unknown)


# --- product search -----------------------------------------------------------------------


def product_search_by_image(
    *,
    image: Image.Image,
    filters: SearchFilters = NO_FILTERS,
    limit: int,
    offset: int = 0,
    sort: str = Sort.RELEVANCE,
) -> SearchPage:
    """Products whose photos look most like `image`."""
    space = space_active()
    return products_nearest(
        space=space,
        vector=image_vector(space, image),
        filters=filters,
        limit=limit,
        offset=offset,
        sort=sort,
    )


def products_nearest(
    *,
    space: EmbeddingSpace,
    vector: np.ndarray,
    filters: SearchFilters = NO_FILTERS,
    limit: int,
    offset: int = 0,
    sort: str = Sort.RELEVANCE,
) -> SearchPage:
    """Products ranked by their best image's similarity to `vector`, in `space`; the rules
    without a query apply."""
    rules = rules_for_search(query=None, filters=filters)
    ranked = hybrid_search(space=space, vector=vector, filters=filters, pinned=rules.pinned_ids)
    return search_page(
        space=space,
        ranked=ranked,
        limit=limit,
        offset=offset,
        rules=rules,
        sort=sort,
        filters=filters,
        looks_like=vector,
    )


def search_page(
    *,
    space: EmbeddingSpace,
    ranked: list[RankedProduct],
    limit: int,
    offset: int,
    with_facets: bool = True,
    rules: RuleEffects = NO_RULES,
    sort: str = Sort.RELEVANCE,
    filters: SearchFilters | None = None,
    related: bool = False,
    nearest_categories: bool = False,
    words: Sequence[str] = (),
    variant_filters: SearchFilters | None = None,
    looks_like: np.ndarray | None = None,
) -> SearchPage:
    """One page of a ranked window, with its products loaded and facets over the window.

    The relevant set (rows over the floor, and pinned ones) gets the rules and the sort
    order as a whole before it is cut into pages. With `related`, a first page thinner
    than `limit` is filled with the window's products under the floor, unless nothing
    was relevant but pins; with `filters`, an empty result says what to try instead (with
    `nearest_categories`, also the categories of the window's most similar products).
    Each product is shown with its variant that best fits `variant_filters` (default:
    `filters`), the query's `words` and the query vector `looks_like` (search.variants).
    """
    relevant = rules_apply(
        [r for r in ranked if r.relevant or r.pinned], rules, place_pins=sort == Sort.RELEVANCE
    )
    relevant = ranked_sort(relevant, sort)
    window = [(r, False) for r in relevant[offset : offset + limit]]
    natural = any(r.relevant for r in relevant)
    if related and natural and offset == 0 and len(relevant) < limit:
        extra = related_rows(ranked, hidden=rules.hidden, limit=limit - len(relevant))
        window += [(r, True) for r in extra]
    products = {
        p.pk: p
        for p in Product.objects.filter(
            pk__in=[r.product_id for r, _ in window], status=Product.Status.ACTIVE
        )
        .select_related("category")
        .prefetch_related("images")
    }
    variants = best_variants(
        [pk for pk, product in products.items() if product.options],
        filters=variant_filters or filters or NO_FILTERS,
        words=words,
        looks_like=(space, looks_like) if looks_like is not None else None,
    )
    results = [
        ProductHit(
            products[r.product_id],
            r.score,
            r.similarity,
            _matched(r),
            is_related,
            variants.get(r.product_id),
        )
        for r, is_related in window
        if r.product_id in products  # deleted or hidden since the vectors were read
    ]
    facets = search_facets(ranked=relevant) if with_facets else Facets()
    suggestions = (
        no_results_help(filters=filters, nearest=ranked if nearest_categories else ())
        if filters is not None and not relevant
        else None
    )
    return SearchPage(
        space=space,
        count=len(relevant),
        results=results,
        facets=facets,
        sort=sort,
        suggestions=suggestions,
    )


def _matched(ranked: RankedProduct) -> tuple[str, ...]:
    reasons = (
        ("sku", ranked.sku_match),
        ("text", ranked.text_match),
        ("synonym", ranked.synonym_match),
        ("image", ranked.similarity is not None),
        ("pinned", ranked.pinned),
    )
    return tuple(name for name, hit in reasons if hit)


def search_facets(*, ranked: list[RankedProduct]) -> Facets:
    """Counts by category (each counted in its ancestors too), brand and stock, from the
    attributes the ranking query returned with each product."""
    rows = [(r.category_id, r.brand, r.in_stock) for r in ranked]
    nodes = category_nodes() if any(category for category, _, _ in rows) else {}
    per_category = Counter(
        pk for category, _, _ in rows if category for pk in category_ancestor_ids(nodes, category)
    )
    categories: list[FacetCount] = []

    def walk(parent_id, depth):
        children = [n for n in nodes.values() if n.parent_id == parent_id and per_category[n.id]]
        for node in sorted(children, key=lambda n: (-per_category[n.id], n.name)):
            categories.append(FacetCount(node.slug, node.name, per_category[node.id], depth))
            walk(node.id, depth + 1)

    walk(None, 0)
    brands = Counter(brand for _, brand, _ in rows if brand)
    return Facets(
        attributes=attribute_facets([r.product_id for r in ranked]),
        categories=categories,
        brands=[
            FacetCount(b, b, n) for b, n in sorted(brands.items(), key=lambda i: (-i[1], i[0]))
        ],
        in_stock=sum(1 for _, _, in_stock in rows if in_stock),
    )


def products_shown_to(*, user) -> QuerySet[Product]:
    """The products whose own page (and similar products) `user` may open: for shoppers,
    active ones that no rule hides from every search; staff see them all (a preview)."""
    if user.is_staff:
        return Product.objects.all()
    return Product.objects.filter(status=Product.Status.ACTIVE).exclude(
        pk__in=list(products_hidden_everywhere())
    )


def product_hidden_from_shoppers(product: Product) -> str:
    """Why shoppers cannot see this product (it is a draft or archived, or a rule hides it
    from every search), for its page to tell staff; empty when they can."""
    if product.status != Product.Status.ACTIVE:
        return (
            "This product is a draft"
            if product.status == Product.Status.DRAFT
            else "This product is archived"
        )
    if product.pk in products_hidden_everywhere():
        return "A merchandising rule hides this product from every search"
    return ""


def products_similar(*, product: Product, limit: int) -> SearchPage:
    """Products whose photos look like this product's, from the stored image vectors; not
    those a rule hides from every search."""
    space = space_active()
    rows = similar_products_rows(
        space=space, product_id=product.pk, limit=limit, exclude=products_hidden_everywhere()
    )
    ranked = [
        RankedProduct(pid, 1.0 / (settings.SEARCH_RRF_K + rank), 1 - float(distance), False, False)
        for rank, (pid, distance) in enumerate(rows, start=1)
    ]
    return search_page(space=space, ranked=ranked, limit=limit, offset=0, with_facets=False)


# --- captions -----------------------------------------------------------------------------


def captions_by_image(*, image: Image.Image, limit: int) -> tuple[EmbeddingSpace, list[CaptionHit]]:
    """The catalog captions (titles, descriptions) that best describe an image."""
    space = space_active()
    rows = nearest_captions_rows(space=space, vector=image_vector(space, image), limit=limit)
    return space, [CaptionHit(pid, fld, text, float(score)) for pid, fld, text, score in rows]


def image_text_match(*, image: Image.Image, text: str, top: int = 5) -> ImageTextMatch:
    """How well `text` describes `image`, and where it ranks among the catalog's captions.

    The rank is counted within the image's MATCH_TOP_CAPTIONS nearest captions (an HNSW
    scan, never the whole catalog): a text that fits worse than all of them has no rank.
    Both vectors are rounded to halfvec like the stored captions, so a catalog caption
    checked against its own product's photo ties with itself instead of beating itself.
    """
    space = space_active()
    k = min(settings.MATCH_TOP_CAPTIONS, MAX_EF_SEARCH)
    score, better, compared, nearest = image_text_match_row(
        space=space,
        image=image_vector(space, image),
        text=text_vector(space, text),
        compare=k,
        top=top,
    )
    # Every compared caption fits better, and there may be more beyond them: no rank.
    rank = None if better == compared == k else better + 1
    return ImageTextMatch(
        space=space,
        score=float(score),
        rank=rank,
        compared=compared,
        top_captions=[CaptionHit(pid, fld, txt, float(s)) for pid, fld, txt, s in nearest],
    )
