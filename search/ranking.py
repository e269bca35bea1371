"""The raw vector statements every reader shares: the vector expression the HNSW indexes
are built on, running a nearest-neighbour query with its settings, and the statements of
similar products, captions of a photo, image-text match and the admin's image/title check.
The text search's own statement (words, vectors, SKU and pins in one) is search.retrieval.

Each casts vectors to the space's own `halfvec(n)` and repeats `space_id = <id>`, so the
planner uses that space's partial HNSW index; `cosine_distance` writes that expression.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models.expressions import RawSQL
from pgvector import HalfVector

from embeddings.models import EmbeddingSpace
from shop_search.db_routers import read_connection

# pgvector's HNSW returns at most ef_search rows; 1000 is its maximum.
MAX_EF_SEARCH = 1000


def vector_literal(vector: np.ndarray) -> str:
    return HalfVector(vector).to_text()


def cosine_distance(
    space: EmbeddingSpace, column: str, query: np.ndarray | str, *, name: str = "query"
) -> tuple[str, dict]:
    """`<column> <=> <query>` cast to the space's vector type, and its parameters.

    `query` is a vector (passed as the parameter `name`) or another SQL vector expression.
    The cast must be the index's own expression for the planner to use the index.
    """
    vtype = space.vector_type
    if isinstance(query, str):
        return f"{column}::{vtype} <=> {query}::{vtype}", {}
    return f"{column}::{vtype} <=> %({name})s::{vtype}", {name: vector_literal(query)}


def image_window(window: int) -> int:
    """Images to fetch to fill a window of `window` products.

    Products have one to a few photos (1.9 in the demo catalog); twice the window filled
    it in bench/search.py (400 images -> 200 products), at p50 < 10 ms and recall@10 0.96
    on 100k products, where three times cost 25% more time for +0.01 recall.
    """
    return min(window * 2, MAX_EF_SEARCH)


def nearest_rows(
    sql: str,
    params: dict,
    *,
    ef_search: int,
    filtered: bool = False,
    max_scan_tuples: int | None = None,
) -> list:
    """Run a nearest-neighbour query with the HNSW settings it needs, in one round trip."""
    ef_search = max(40, min(ef_search, MAX_EF_SEARCH))
    max_scan_tuples = max_scan_tuples or settings.SEARCH_MAX_SCAN_TUPLES
    db = read_connection()  # a replica inside search_read: SET LOCAL works on a standby
    with transaction.atomic(using=db.alias), db.cursor() as cursor:
        # HNSW yields at most ef_search rows: make it at least the window asked for. With
        # filters, scan on past ef_search until the LIMIT is met (bounded by max_scan_tuples).
        cursor.execute(
            "SELECT set_config('hnsw.ef_search', %s, true), "
            "set_config('hnsw.iterative_scan', %s, true), "
            "set_config('hnsw.max_scan_tuples', %s, true)",
            [
                str(ef_search),
                "relaxed_order" if filtered else "off",
                str(max_scan_tuples),
            ],
        )
        cursor.execute(sql, params)
        return cursor.fetchall()


def similar_products_rows(
    *, space: EmbeddingSpace, product_id: int, limit: int, exclude: Collection[int] = ()
) -> list:
    """(product id, distance) of the products whose photos are nearest this product's,
    but those in `exclude`."""
    exclude = [product_id, *exclude]
    # Our own photos and the excluded products' are among the nearest: a wider window.
    window = min(3 * (limit + len(exclude)), MAX_EF_SEARCH)
    distance, _ = cosine_distance(space, "e.vector", "own.vector")
    # One nearest-neighbour scan per photo of the product (LATERAL), best image per product.
    sql = f"""
        WITH own AS (
            SELECT e.vector FROM embeddings_imageembedding e
            JOIN catalog_productimage i ON i.id = e.image_id
            WHERE i.product_id = %(product)s AND e.space_id = {int(space.pk)}
                  AND e.vector IS NOT NULL
        ), hits AS (
            SELECT h.image_id, h.distance FROM own CROSS JOIN LATERAL (
                SELECT e.image_id, {distance} AS distance
                FROM embeddings_imageembedding e
                WHERE e.space_id = {int(space.pk)} AND e.vector IS NOT NULL
                ORDER BY {distance}
                LIMIT %(window)s
            ) h
        )
        SELECT i.product_id, min(h.distance) AS distance
        FROM hits h JOIN catalog_productimage i ON i.id = h.image_id
        WHERE i.product_id <> ALL(%(exclude)s)
        GROUP BY i.product_id
        ORDER BY min(h.distance), i.product_id
        LIMIT %(limit)s
    """
    params = {"product": product_id, "exclude": exclude, "window": window, "limit": limit}
    return nearest_rows(sql, params, ef_search=window)


def nearest_captions_rows(*, space: EmbeddingSpace, vector: np.ndarray, limit: int) -> list:
    """(product id, field, text, similarity) of the captions nearest `vector`."""
    distance, params = cosine_distance(space, "c.vector", vector)
    sql = f"""
        SELECT c.product_id, c.field, c.text, 1 - ({distance}) AS score
        FROM embeddings_captionembedding c
        WHERE c.space_id = {int(space.pk)}
        ORDER BY {distance}
        LIMIT %(limit)s
    """
    return nearest_rows(sql, {**params, "limit": limit}, ef_search=limit)


def image_text_match_row(
    *, space: EmbeddingSpace, image: np.ndarray, text: np.ndarray, compare: int, top: int
) -> tuple:
    """(score of text to image, captions fitting better, captions compared, top captions).

    Both query vectors are rounded to halfvec like the stored captions, so a catalog
    caption checked against its own product's photo ties with itself.
    """
    to_image, params = cosine_distance(space, "c.vector", image, name="image")
    pair, _ = cosine_distance(space, "%(text)s", "%(image)s")
    sql = f"""
        WITH nearest AS MATERIALIZED (
            SELECT c.product_id, c.field, c.text, 1 - ({to_image}) AS score
            FROM embeddings_captionembedding c
            WHERE c.space_id = {int(space.pk)}
            ORDER BY {to_image}
            LIMIT %(k)s
        ), pair AS (
            SELECT 1 - ({pair}) AS score
        )
        SELECT pair.score,
               (SELECT count(*) FROM nearest WHERE nearest.score > pair.score),
               (SELECT count(*) FROM nearest),
               (SELECT coalesce(json_agg(json_build_array(product_id, field, text, score)), '[]')
                FROM (SELECT * FROM nearest ORDER BY score DESC, product_id LIMIT %(top)s) t)
        FROM pair
    """
    params = {**params, "text": vector_literal(text), "k": compare, "top": top}
    (row,) = nearest_rows(sql, params, ef_search=compare)
    return row


def product_image_title_agree(space: EmbeddingSpace) -> RawSQL:
    """Per product (an annotation): is its title among the captions nearest its main photo?

    True or False; None while its photo or title has no vector in `space`. One HNSW scan
    of IMAGE_TITLE_TOP_CAPTIONS captions per product, so use it on a page of products.
    """
    sid = int(space.pk)
    distance, _ = cosine_distance(space, "c.vector", "main.vector")
    return RawSQL(
        f"""(
        SELECT CASE
            WHEN main.vector IS NULL OR NOT EXISTS (
                SELECT 1 FROM embeddings_captionembedding t
                WHERE t.product_id = catalog_product.id AND t.space_id = {sid}
                      AND t.field = 'title')
            THEN NULL
            ELSE EXISTS (
                SELECT 1 FROM (
                    SELECT c.product_id, c.field FROM embeddings_captionembedding c
                    WHERE c.space_id = {sid}
                    ORDER BY {distance}
                    LIMIT {int(settings.IMAGE_TITLE_TOP_CAPTIONS)}
                ) top
                WHERE top.product_id = catalog_product.id AND left(top.field, 5) = 'title')
            END
        FROM (
            SELECT (SELECT e.vector FROM embeddings_imageembedding e
                    JOIN catalog_productimage i ON i.id = e.image_id
                    WHERE i.product_id = catalog_product.id AND e.space_id = {sid}
                          AND e.vector IS NOT NULL
                    ORDER BY i.position, i.id LIMIT 1) AS vector
        ) main)""",
        [],
    )
