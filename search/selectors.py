"""Reads: product search (text, photo, similar products), captions and image-text match.

Each is one bounded SQL query over the active space's HNSW indexes (search.ranking),
then one query for the page's products and one for the facets.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np
from django.conf import settings
from django.core.cache import cache
from PIL import Image

from catalog.models import Product
from catalog.selectors import category_ancestor_ids, category_nodes
from embeddings.models import EmbeddingSpace
from embeddings.spaces import space_active, space_encoder
from search.query import QueryAnalysis, query_analyse
from search.ranking import (
    MAX_EF_SEARCH,
    RankedProduct,
    SearchFilters,
    hybrid_search,
    image_text_match_row,
    nearest_captions_rows,
    similar_products_rows,
)

logger = logging.getLogger(__name__)

NO_FILTERS = SearchFilters()


@dataclass(frozen=True)
class ProductHit:
    product: Product
    score: float  # fused rank score: what results are ordered by
    similarity: float | None  # cosine of its best image to the query; None: text match only
    matched: tuple[str, ...] = ()  # why it is here: "sku", "text", "image"


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


@dataclass(frozen=True)
class SearchPage:
    space: EmbeddingSpace
    count: int
    results: list[ProductHit]
    facets: Facets = field(default_factory=Facets)
    corrected_query: str | None = None  # text search: the corrected words it also matched


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


def product_search_by_text(
    *,
    query: str,
    filters: SearchFilters = NO_FILTERS,
    limit: int,
    offset: int = 0,
    correct: bool = True,
) -> SearchPage:
    """Hybrid search: words, SKU and the query's meaning, fused; nonsense finds nothing.

    With `correct`, misspelt words also match as corrected (search.query); the text tower
    sees the query as typed.
    """
    space = space_active()
    analysis = query_analyse(query=query, correct=correct)
    ranked = hybrid_search(
        space=space,
        vector=text_vector(space, query),
        filters=filters,
        text=query,
        match_texts=analysis.match_texts,
        floor=query_similarity_floor(space, analysis),
    )
    page = search_page(space=space, ranked=ranked, limit=limit, offset=offset)
    return replace(page, corrected_query=analysis.corrected_query)


def product_search_by_image(
    *, image: Image.Image, filters: SearchFilters = NO_FILTERS, limit: int, offset: int = 0
) -> SearchPage:
    """Products whose photos look most like `image`."""
    space = space_active()
    return products_nearest(
        space=space,
        vector=image_vector(space, image),
        filters=filters,
        limit=limit,
        offset=offset,
    )


def products_nearest(
    *,
    space: EmbeddingSpace,
    vector: np.ndarray,
    filters: SearchFilters = NO_FILTERS,
    limit: int,
    offset: int = 0,
) -> SearchPage:
    """Products ranked by their best image's similarity to `vector`, in `space`."""
    ranked = hybrid_search(space=space, vector=vector, filters=filters)
    return search_page(space=space, ranked=ranked, limit=limit, offset=offset)


def search_page(
    *,
    space: EmbeddingSpace,
    ranked: list[RankedProduct],
    limit: int,
    offset: int,
    with_facets: bool = True,
) -> SearchPage:
    """One page of a ranked window, with its products loaded and facets over the window."""
    window = ranked[offset : offset + limit]
    products = {
        p.pk: p
        for p in Product.objects.filter(pk__in=[r.product_id for r in window])
        .select_related("category")
        .prefetch_related("images")
    }
    results = [
        ProductHit(products[r.product_id], r.score, r.similarity, _matched(r))
        for r in window
        if r.product_id in products  # deleted since the vectors were read
    ]
    facets = search_facets(product_ids=[r.product_id for r in ranked]) if with_facets else Facets()
    return SearchPage(space=space, count=len(ranked), results=results, facets=facets)


def _matched(ranked: RankedProduct) -> tuple[str, ...]:
    reasons = (
        ("sku", ranked.sku_match),
        ("text", ranked.text_match),
        ("image", ranked.similarity is not None),
    )
    return tuple(name for name, hit in reasons if hit)


def search_facets(*, product_ids: list[int]) -> Facets:
    """Counts by category (each counted in its ancestors too), brand and stock."""
    rows = list(
        Product.objects.filter(pk__in=product_ids).values_list("category_id", "brand", "in_stock")
    )
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
        categories=categories,
        brands=[
            FacetCount(b, b, n) for b, n in sorted(brands.items(), key=lambda i: (-i[1], i[0]))
        ],
        in_stock=sum(1 for _, _, in_stock in rows if in_stock),
    )


def products_similar(*, product: Product, limit: int) -> SearchPage:
    """Products whose photos look like this product's, from the stored image vectors."""
    space = space_active()
    rows = similar_products_rows(space=space, product_id=product.pk, limit=limit)
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
