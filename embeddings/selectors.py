"""Reads: nearest-neighbour search in the active space, one bounded SQL query each."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from threading import Lock

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from pgvector import HalfVector
from PIL import Image

from catalog.models import Product
from embeddings.models import EmbeddingSpace
from embeddings.services import space_encoder, space_get_active

# pgvector's HNSW returns at most ef_search rows; 1000 is its maximum.
MAX_EF_SEARCH = 1000


@dataclass(frozen=True)
class ProductHit:
    product: Product
    score: float


@dataclass(frozen=True)
class SearchPage:
    space: EmbeddingSpace
    count: int
    results: list[ProductHit]


@dataclass(frozen=True)
class CaptionHit:
    product_id: int
    field: str
    text: str
    score: float


def vector_literal(vector: np.ndarray) -> str:
    return HalfVector(vector).to_text()


def image_search_sql(space: EmbeddingSpace) -> str:
    """Products ranked by their best image's cosine similarity to %(query)s.

    The inner query repeats the index's expression and `space_id` predicate literally
    so the planner uses the space's partial HNSW index; its LIMIT bounds the work.
    """
    vector = f"e.vector::{space.vector_type}"
    query = f"%(query)s::{space.vector_type}"
    return f"""
        WITH hits AS (
            SELECT e.image_id, {vector} <=> {query} AS distance
            FROM embeddings_imageembedding e
            WHERE e.space_id = {int(space.pk)} AND e.vector IS NOT NULL
            ORDER BY {vector} <=> {query}
            LIMIT %(window)s
        ), best AS (
            SELECT DISTINCT ON (i.product_id) i.product_id, h.distance
            FROM hits h JOIN catalog_productimage i ON i.id = h.image_id
            ORDER BY i.product_id, h.distance
        )
        SELECT product_id, 1 - distance AS score FROM best ORDER BY distance, product_id
        LIMIT %(max_results)s
    """


def image_search_params(vector: np.ndarray) -> dict:
    max_results = settings.SEARCH_MAX_RESULTS
    # Products have one to a few images: fetch enough images to fill the result window.
    window = min(max_results * 3, MAX_EF_SEARCH)
    return {"query": vector_literal(vector), "window": window, "max_results": max_results}


def _nearest(sql: str, params: dict, window: int) -> list[tuple]:
    with transaction.atomic(), connection.cursor() as cursor:
        # HNSW yields at most ef_search rows: make it at least the window asked for.
        cursor.execute(f"SET LOCAL hnsw.ef_search = {max(40, min(window, MAX_EF_SEARCH))}")
        cursor.execute(sql, params)
        return cursor.fetchall()


def products_nearest(
    *, space: EmbeddingSpace, vector: np.ndarray, limit: int, offset: int = 0
) -> SearchPage:
    params = image_search_params(vector)
    rows = _nearest(image_search_sql(space), params, params["window"])
    page = rows[offset : offset + limit]
    ids = [product_id for product_id, _ in page]
    products = {p.pk: p for p in Product.objects.filter(pk__in=ids).prefetch_related("images")}
    results = [
        ProductHit(products[product_id], float(score))
        for product_id, score in page
        if product_id in products  # deleted since the vectors were read
    ]
    return SearchPage(space=space, count=len(rows), results=results)


class _QueryVectorCache:
    """Query vectors by (space, normalised query): popular queries skip the text tower."""

    def __init__(self, size: int = 2048):
        self.size, self.items, self.lock = size, OrderedDict(), Lock()

    def get_or_compute(self, key, compute):
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        value = compute()
        with self.lock:
            self.items[key] = value
            if len(self.items) > self.size:
                self.items.popitem(last=False)
        return value


_query_vectors = _QueryVectorCache()


def normalise_query(query: str) -> str:
    return " ".join(query.lower().split())


def text_vector(space: EmbeddingSpace, text: str) -> np.ndarray:
    text = normalise_query(text)
    return _query_vectors.get_or_compute(
        (space.pk, text), lambda: space_encoder(space).encode_texts([text])[0]
    )


def product_search_by_text(*, query: str, limit: int, offset: int = 0) -> SearchPage:
    space = space_get_active()
    return products_nearest(
        space=space, vector=text_vector(space, query), limit=limit, offset=offset
    )


def captions_by_image(*, image: Image.Image, limit: int) -> tuple[EmbeddingSpace, list[CaptionHit]]:
    """The catalog captions (titles, descriptions) that best describe an image."""
    space = space_get_active()
    vector = space_encoder(space).encode_images([image])[0]
    expr = f"c.vector::{space.vector_type}"
    query = f"%(query)s::{space.vector_type}"
    sql = f"""
        SELECT c.product_id, c.field, c.text, 1 - ({expr} <=> {query}) AS score
        FROM embeddings_captionembedding c
        WHERE c.space_id = {int(space.pk)}
        ORDER BY {expr} <=> {query}
        LIMIT %(limit)s
    """
    rows = _nearest(sql, {"query": vector_literal(vector), "limit": limit}, limit)
    return space, [CaptionHit(pid, fld, text, float(score)) for pid, fld, text, score in rows]
