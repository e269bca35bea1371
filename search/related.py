"""Thin and empty result pages: related products under a thin page, help on an empty one.

A query with a few relevant products (words, SKU, or similarity above the floor) gets the
next best products by similarity to fill its first page, under a "Related products"
divider: the ranking query already returns them (its window's products under the floor),
so nothing more is read. A query with no relevant product at all (nonsense, or nothing
in the shop) shows nothing related: instead it suggests removing a filter and the
categories nearest the query (those of the most similar products), and the shop's popular
categories only when there is nothing else ("did you mean" comes with typo correction).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from django.core.cache import cache
from django.db.models import Count

from catalog.models import Product
from catalog.selectors import category_nodes
from search.filters import SearchFilters
from search.retrieval import RankedProduct
from search.rules import filter_category_id

logger = logging.getLogger(__name__)

# Popular categories are counted over the catalog at most this often, not per request.
POPULAR_CATEGORIES_SECONDS = 600
POPULAR_CATEGORIES_KEY = "search:popular-categories"
POPULAR_CATEGORIES = 6
# An empty page offers the categories of the window's most similar products.
NEAREST_PRODUCTS = 20
NEAREST_CATEGORIES = 3


@dataclass(frozen=True)
class FilterRemoval:
    param: str  # the request parameter to drop: category, brand, min_price, max_price, in_stock
    label: str  # "Brand: Acme"


@dataclass(frozen=True)
class PopularCategory:
    slug: str
    name: str
    count: int  # products in it


@dataclass(frozen=True)
class NoResultsHelp:
    remove_filters: list[FilterRemoval] = field(default_factory=list)
    categories: list[PopularCategory] = field(default_factory=list)
    nearest: bool = False  # `categories` are those nearest the query, not the popular ones


def related_rows(
    ranked: list[RankedProduct], *, hidden: Collection[int], limit: int
) -> list[RankedProduct]:
    """The window's products under the similarity floor, most similar first."""
    candidates = [
        row
        for row in ranked
        if not row.relevant
        and not row.pinned
        and row.similarity is not None
        and row.product_id not in hidden
    ]
    candidates.sort(key=lambda row: (-row.similarity, row.product_id))
    return candidates[:limit]


def no_results_help(
    *, filters: SearchFilters, nearest: Sequence[RankedProduct] = ()
) -> NoResultsHelp:
    """What an empty page offers: each filter to remove, the categories of the products
    most like the query (from `nearest`, the ranked window), and only when there is
    neither, the shop's popular categories."""
    removals = filter_removals(filters)
    near = categories_nearest(nearest)
    if near or removals:
        return NoResultsHelp(remove_filters=removals, categories=near, nearest=bool(near))
    return NoResultsHelp(categories=categories_popular())


def categories_nearest(ranked: Sequence[RankedProduct]) -> list[PopularCategory]:
    """The categories of the NEAREST_PRODUCTS most similar products of a ranked window,
    the most frequent first (their count is how many of those products they hold)."""
    similar = sorted(
        (row for row in ranked if row.similarity is not None and row.category_id),
        key=lambda row: (-row.similarity, row.product_id),
    )[:NEAREST_PRODUCTS]
    counts = Counter(row.category_id for row in similar)
    if not counts:
        return []
    nodes = category_nodes()
    return [
        PopularCategory(nodes[pk].slug, nodes[pk].name, count)
        for pk, count in counts.most_common(NEAREST_CATEGORIES)
        if pk in nodes
    ]


def filter_removals(filters: SearchFilters) -> list[FilterRemoval]:
    removals = []
    if filters.category_ids:
        nodes = category_nodes()
        category_id = filter_category_id(filters, nodes)
        name = nodes[category_id].name if category_id is not None else "the chosen one"
        removals.append(FilterRemoval("category", f"Category: {name}"))
    if filters.brand:
        removals.append(FilterRemoval("brand", f"Brand: {filters.brand}"))
    if filters.min_price is not None:
        removals.append(FilterRemoval("min_price", f"Price from {filters.min_price}"))
    if filters.max_price is not None:
        removals.append(FilterRemoval("max_price", f"Price up to {filters.max_price}"))
    for attribute in filters.attributes:
        if not attribute.lenient:
            label = f"{attribute.name.capitalize()}: {' or '.join(attribute.values)}"
            removals.append(FilterRemoval(f"attr.{attribute.name}", label))
    if filters.in_stock is not None:
        removals.append(
            FilterRemoval("in_stock", "In stock only" if filters.in_stock else "Out of stock only")
        )
    return removals


def categories_popular() -> list[PopularCategory]:
    """The categories with the most active products, counted at most every few minutes."""
    try:
        cached = cache.get(POPULAR_CATEGORIES_KEY)
    except Exception:  # a cache that is down only costs the count
        logger.warning("cache unreachable", exc_info=True)
        cached = None
    if cached is not None:
        return [PopularCategory(*row) for row in cached]
    rows = [
        (row["category__slug"], row["category__name"], row["count"])
        for row in Product.objects.filter(category__isnull=False, status=Product.Status.ACTIVE)
        .values("category__slug", "category__name")
        .annotate(count=Count("id"))
        .order_by("-count", "category__name")[:POPULAR_CATEGORIES]
    ]
    try:
        cache.set(POPULAR_CATEGORIES_KEY, rows, timeout=POPULAR_CATEGORIES_SECONDS)
    except Exception:
        logger.warning("cache unreachable", exc_info=True)
    return [PopularCategory(*row) for row in rows]
