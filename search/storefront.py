"""Reads for the shop's pages without a query: the home page's categories and products,
and browsing a category (or any filters) with no words typed."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Count
from django.utils import timezone

from catalog.models import Product
from catalog.selectors import category_nodes
from embeddings.spaces import space_active
from search.filters import SearchFilters
from search.models import SearchEvent
from search.retrieval import RankedProduct
from search.rules import products_hidden_everywhere, rules_for_search
from search.selectors import ProductHit, SearchPage, search_page
from search.sorting import Sort
from shop_search.db_routers import read_connection

BESTSELLER_DAYS = 30


@dataclass(frozen=True)
class CategoryCount:
    slug: str
    name: str
    products: int  # active products in it and its sub-categories


def storefront_categories() -> list[CategoryCount]:
    """The top-level categories with how many products shoppers can find in each (its
    sub-categories included), the biggest first; empty ones left out."""
    nodes = category_nodes()

    def root_of(pk: int) -> int:
        seen = set()
        while nodes[pk].parent_id is not None and pk not in seen:  # a hand-made cycle stops
            seen.add(pk)
            pk = nodes[pk].parent_id
        return pk

    per_category = (
        Product.objects.filter(status=Product.Status.ACTIVE, category__isnull=False)
        .exclude(pk__in=list(products_hidden_everywhere()))
        .values_list("category_id")
        .annotate(n=Count("id"))
    )
    totals: Counter[int] = Counter()
    for category_id, n in per_category:
        totals[root_of(category_id)] += n
    return sorted(
        (CategoryCount(nodes[pk].slug, nodes[pk].name, n) for pk, n in totals.items()),
        key=lambda c: (-c.products, c.name),
    )


def storefront_products(*, limit: int) -> tuple[str, list[ProductHit]]:
    """The home page's row of products and its heading: the most bought in the last
    BESTSELLER_DAYS days (purchase events of the search log), the newest filling the row."""
    hidden = products_hidden_everywhere()
    since = timezone.now() - dt.timedelta(days=BESTSELLER_DAYS)
    shown = Product.objects.filter(status=Product.Status.ACTIVE).exclude(pk__in=list(hidden))
    bought = list(
        SearchEvent.objects.filter(
            type=SearchEvent.Type.PURCHASE,
            created__gte=since,
            product__status=Product.Status.ACTIVE,
        )
        .exclude(product_id__in=list(hidden))
        .values_list("product_id")
        .annotate(n=Count("id"))
        .order_by("-n", "product_id")
        .values_list("product_id", flat=True)[:limit]
    )
    newest = list(
        shown.exclude(pk__in=bought)
        .order_by("-created", "-pk")
        .values_list("pk", flat=True)[: limit - len(bought)]
    )
    products = shown.filter(pk__in=bought + newest).prefetch_related("images").in_bulk()
    hits = [ProductHit(products[pk], 0.0, None) for pk in bought + newest if pk in products]
    return ("Popular now" if bought else "New in"), hits


_BROWSE_SQL = """
    SELECT p.id, p.price, p.created, p.brand, p.category_id, p.in_stock
    FROM catalog_product p
    WHERE p.status = 'active'{where}
    ORDER BY p.created DESC, p.id DESC
    LIMIT %(limit)s
"""


def products_browse(
    *, filters: SearchFilters, limit: int, offset: int, sort: str = Sort.RELEVANCE
) -> SearchPage:
    """The products that pass `filters`, with no query: the newest first (or in `sort`'s
    order), with facets over them and the rules without a query applied, as a search would."""
    where, params = filters.sql("p")
    with read_connection().cursor() as cursor:
        cursor.execute(
            _BROWSE_SQL.format(where=where),
            {**params, "limit": 2 * settings.SEARCH_MAX_RESULTS + 1},
        )
        rows = cursor.fetchall()
    ranked = [
        RankedProduct(
            pid,
            1.0 / (settings.SEARCH_RRF_K + rank),
            None,
            False,
            False,
            price=price,
            created=created,
            brand=brand,
            category_id=category_id,
            in_stock=in_stock,
        )
        for rank, (pid, price, created, brand, category_id, in_stock) in enumerate(rows, start=1)
    ]
    return search_page(
        space=space_active(),
        ranked=ranked,
        limit=limit,
        offset=offset,
        rules=rules_for_search(query=None, filters=filters),
        sort=sort,
        filters=filters,
    )
