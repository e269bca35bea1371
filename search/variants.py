"""Products with variants in results: the variant each result shows, and the option and
attribute facets, counted by product.

Results are products; each is shown with the variant that best fits the search: one that
meets the filters (price, stock and options hold for that one variant), then the one whose
option values the query names ("red dress": the red one), in stock first, then the shop's
order. Its photo and price are what the card shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from catalog.models import ProductVariant
from catalog.selectors import FacetConfig, facet_config
from embeddings.models import EmbeddingSpace
from search.filters import SearchFilters
from search.ranking import cosine_distance
from shop_search.db_routers import read_connection

NO_FILTERS = SearchFilters()


def best_variants(
    product_ids: Sequence[int],
    *,
    filters: SearchFilters = NO_FILTERS,
    words: Sequence[str] = (),
    looks_like: tuple[EmbeddingSpace, np.ndarray] | None = None,
) -> dict[int, ProductVariant]:
    """The variant each product of `product_ids` is best shown with (products without
    variants are left out), in one statement: one that meets `filters`, then the most of
    its option values among `words`, then (`looks_like`: a space and a query vector) its
    photo nearest the query, then in stock, then the shop's order."""
    if not product_ids:
        return {}
    condition, _ = filters.variant_sql("v", "p")
    _, params = filters.sql("p")
    values = sorted({w.strip().lower() for w in words if w.strip()})
    nearest, join = "", ""
    if looks_like is not None:
        space, vector = looks_like
        distance, query = cosine_distance(space, "e.vector", vector)
        nearest = f"{distance} NULLS LAST,"
        params.update(query, space=space.pk)
        join = (
            "LEFT JOIN embeddings_imageembedding e "
            "ON e.image_id = v.image_id AND e.space_id = %(space)s"
        )
    rows = ProductVariant.objects.raw(
        f"""
        SELECT DISTINCT ON (v.product_id) v.*
        FROM catalog_productvariant v JOIN catalog_product p ON p.id = v.product_id {join}
        WHERE v.product_id = ANY(%(ids)s) AND v.active AND {condition}
        ORDER BY v.product_id,
                 (SELECT count(*) FROM unnest(v.option_keys) k
                  WHERE split_part(k, '=', 2) = ANY(%(values)s)) DESC,
                 {nearest} v.in_stock DESC, v.position, v.id
        """,
        {**params, "ids": list(product_ids), "values": values},
    )
    return {variant.product_id: variant for variant in rows.prefetch_related("image")}


def query_values(tokens: Sequence[str]) -> list[str]:
    """What in a query may name an option value: each word, and each two adjacent words
    ("dark blue")."""
    words = [t.lower() for t in tokens]
    return words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]


@dataclass(frozen=True)
class AttributeValueCount:
    value: str  # what `attr.<name>=` takes
    label: str
    count: int  # products


@dataclass(frozen=True)
class AttributeFacet:
    name: str  # lower case: the `attr.<name>` parameter
    label: str
    values: list[AttributeValueCount] = field(default_factory=list)


def attribute_facets(
    product_ids: Sequence[int], *, config: FacetConfig | None = None
) -> list[AttributeFacet]:
    """Facets over the options of `product_ids` (and the attributes the facet
    configuration names): each value with the number of products that have it in an
    active variant or as an attribute (entered, or read from photos and accepted: see
    catalog.inferred). Aliases count as their value."""
    if not product_ids:
        return []
    config = config if config is not None else facet_config()
    with read_connection().cursor() as cursor:
        cursor.execute(
            """
            WITH named AS (
              SELECT p.id, o.value ->> 'name' AS name, v.value, o.n * 1000 + v.n AS position
              FROM catalog_product p,
                   jsonb_array_elements(p.options) WITH ORDINALITY o(value, n),
                   jsonb_array_elements_text(o.value -> 'values') WITH ORDINALITY v(value, n)
              WHERE p.id = ANY(%(ids)s)
              UNION ALL
              SELECT p.id, a.key, v.value, 100000
              -- Values read from photos and accepted count where none was entered.
              FROM catalog_product p, jsonb_each(p.inferred_attributes || p.attributes) a,
                   jsonb_array_elements_text(CASE jsonb_typeof(a.value)
                       WHEN 'array' THEN a.value ELSE jsonb_build_array(a.value) END) v(value)
              WHERE p.id = ANY(%(ids)s) AND lower(a.key) = ANY(%(attributes)s)
                AND jsonb_typeof(a.value) IN ('string', 'number', 'boolean', 'array')
            )
            SELECT lower(trim(name)), min(name), trim(value), min(position),
                   array_agg(DISTINCT id)
            FROM named WHERE trim(value) <> ''
            GROUP BY 1, 3
            """,
            {"ids": list(product_ids), "attributes": list(config.names)},
        )
        rows = cursor.fetchall()
    by_name: dict[str, dict[str, tuple[str, int, set[int]]]] = {}
    labels: dict[str, str] = {}
    for name, label, value, position, ids in rows:
        if config.names and name not in config.names:
            continue
        labels.setdefault(name, config.labels.get(name, label))
        value = config.aliases.get(name, {}).get(value.lower(), value)
        key = value.lower()
        _, first, products = by_name.setdefault(name, {}).get(key, (value, position, set()))
        by_name[name][key] = (value, min(first, position), products | set(ids))
    order = list(config.names) or sorted(
        by_name, key=lambda n: min(position for _, position, _ in by_name[n].values())
    )
    return [
        AttributeFacet(
            name=name,
            label=labels[name],
            values=[
                AttributeValueCount(value, value, len(products))
                for value, _, products in sorted(
                    by_name[name].values(), key=lambda item: (item[1], -len(item[2]), item[0])
                )
            ],
        )
        for name in order
        if name in by_name
    ]
