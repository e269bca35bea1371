"""Every raw vector statement of the shop: hybrid product ranking, similar products,
captions of a photo, image-text match, the admin's image/title check.

Each casts vectors to the space's own `halfvec(n)` and repeats `space_id = <id>`, so the
planner uses that space's partial HNSW index; `cosine_distance` writes that expression.

Hybrid product ranking in one SQL statement: vector window, text window, fused by rank.

- Vector: products ranked by their best image's cosine similarity to the query vector,
  from the space's partial HNSW index (the query repeats its expression and `space_id`
  predicate). With filters (`vector_scan`): a filter that keeps few products
  (`SEARCH_EXACT_FILTER_PRODUCTS`) is ranked exactly over its own rows; a wider one through
  pgvector's iterative index scan, which keeps reading the index until enough filtered
  images are found, up to a number of tuples that grows with the catalog, and falls back
  to the exact ranking when even that did not fill the window (a filter far from the query).
- Text: products whose `search_document` (catalog migration 0003) matches the query,
  ranked by `ts_rank`; at most `SEARCH_TEXT_CANDIDATES` of them plus those in the vector
  window are ranked, so a query matching half the catalog still reads a bounded number
  of rows.
- Fusion: reciprocal rank fusion, score = sum of 1 / (k + rank) over both lists; an exact
  SKU match first. Vector-only hits under the space's similarity floor are not `relevant`:
  they come back flagged, as the related products a thin page may show (search.related).
- Phrasings (search.query): the text match accepts the query as typed, with its Chinese
  words segmented, or with its misspelt words corrected (`product_search_query_any` of
  %(texts)s); the text tower has seen the query as typed.
- Synonyms (search.synonyms) widen the text match: each matched span of the query may be
  any of its synonyms (`text_match_sql`); the shopper's own words rank first.
- Pinned products (search.rules) join the window through the `pin` list, with their
  attributes, whether the query found them or not; the shopper's filters still apply.
  Every row carries the product's price, created, brand, category and stock, so rules,
  sorting and facets work over the whole window without another query.

Every list is bounded by `SEARCH_MAX_RESULTS`, so a request never ranks more products
than that, however large the catalog; `count` is the number of relevant products in it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.db.models.expressions import RawSQL
from pgvector import HalfVector

from catalog.text import text_segment
from embeddings.models import EmbeddingSpace
from search.synonyms import NO_SYNONYMS, SynonymExpansion
from search.terms import has_word

# pgvector's HNSW returns at most ef_search rows; 1000 is its maximum.
MAX_EF_SEARCH = 1000


@dataclass(frozen=True)
class SearchFilters:
    category_ids: tuple[int, ...] = ()  # a category and its sub-categories
    brand: str = ""
    min_price: Decimal | None = None
    max_price: Decimal | None = None
    in_stock: bool | None = None

    def __bool__(self) -> bool:
        return bool(self.category_ids or self.brand) or any(
            value is not None for value in (self.min_price, self.max_price, self.in_stock)
        )

    def sql(self, alias: str) -> tuple[str, dict]:
        """` AND ...` conditions on the catalog_product row `alias`, and their parameters."""
        conditions = {
            "f_category_ids": (f"{alias}.category_id = ANY(%(f_category_ids)s)", self.category_ids),
            "f_brand": (f"{alias}.brand = %(f_brand)s", self.brand),
            "f_min_price": (f"{alias}.price >= %(f_min_price)s", self.min_price),
            "f_max_price": (f"{alias}.price <= %(f_max_price)s", self.max_price),
            "f_in_stock": (f"{alias}.in_stock = %(f_in_stock)s", self.in_stock),
        }
        sql, params = "", {}
        for name, (condition, value) in conditions.items():
            if value is not None and value != "" and value != ():
                sql += f" AND {condition}"
                params[name] = list(value) if isinstance(value, tuple) else value
        return sql, params


@dataclass(frozen=True)
class RankedProduct:
    product_id: int
    score: float  # the fused score results are ordered by
    similarity: float | None  # of its best image to the query; None: not in the vector window
    text_match: bool
    sku_match: bool
    synonym_match: bool = False  # its words match only through a synonym
    pinned: bool = False  # a rule pins it (search.rules places it)
    relevant: bool = True  # False: a vector-only hit under the floor (a related product)
    # The product's attributes, for rules, sorting and facets over the whole window.
    price: Decimal | None = None
    created: datetime | None = None
    brand: str = ""
    category_id: int | None = None
    in_stock: bool = True

    def rescored(self, score: float) -> RankedProduct:
        return replace(self, score=score)


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


def vector_ctes(
    space: EmbeddingSpace, filters: SearchFilters, *, exact: bool = False
) -> tuple[list[str], dict]:
    """`vec`: the products nearest to %(query)s by their best image, ranked.

    `exact`: rank every image the filter keeps (no HNSW), for a filter that keeps few.
    """
    distance, _ = cosine_distance(space, "e.vector", "%(query)s")
    where, params = filters.sql("p")
    join = (
        "JOIN catalog_productimage fi ON fi.id = e.image_id "
        "JOIN catalog_product p ON p.id = fi.product_id"
        if filters
        else ""
    )
    rows = f"""SELECT e.image_id, {distance} AS distance
            FROM embeddings_imageembedding e {join}
            WHERE e.space_id = {int(space.pk)} AND e.vector IS NOT NULL{where}"""
    if exact:
        # OFFSET 0 fences the filtered rows off from the ORDER BY, so the planner cannot
        # choose the HNSW index; it reads them through the filter's own indexes instead.
        ranked = f"""SELECT image_id, distance FROM ({rows} OFFSET 0) filtered
            ORDER BY distance LIMIT %(image_window)s"""
    else:
        ranked = f"{rows}\n            ORDER BY {distance}\n            LIMIT %(image_window)s"
    # MATERIALIZED: with relaxed_order the index returns images slightly out of order,
    # so they are collected first and ordered again below (pgvector's advice).
    return [
        f"""vec_images AS MATERIALIZED (
            {ranked}
        )""",
        """vec AS (
            SELECT i.product_id, min(h.distance) AS distance,
                   row_number() OVER (ORDER BY min(h.distance), i.product_id) AS rank
            FROM vec_images h JOIN catalog_productimage i ON i.id = h.image_id
            GROUP BY i.product_id
            ORDER BY rank
            LIMIT %(window)s
        )""",
    ], params


def text_match_sql(synonyms: SynonymExpansion = NO_SYNONYMS) -> tuple[str, str, str]:
    """The tsqueries a product's document must match and ranks by, and "its own words match".

    Without synonyms: every word of one of the query's phrasings %(texts)s (as typed,
    segmented, corrected). With them: every word outside the matched spans (%(syn_rest)s),
    and per span the span or one of its synonyms (%(syn_<g>_<i>)s); the ranking query is
    any of them. Every call is on parameters, so Postgres computes each tsquery once, at
    planning.
    """
    words = "product_search_query_any(%(texts)s, false)"
    if not synonyms:
        return words, "product_search_query_any(%(texts)s, true)", "true"
    parts = ["product_search_query(%(syn_rest)s, false)"] if has_word(synonyms.rest) else []
    ranking = ["product_search_query_any(%(texts)s, true)"]
    for g, group in enumerate(synonyms.groups):
        terms = [f"%(syn_{g}_{i})s" for i in range(len(group))]
        parts.append("(" + " || ".join(f"product_search_query({t}, false)" for t in terms) + ")")
        ranking += [f"product_search_query({t}, true)" for t in terms[1:]]
    return (
        "(" + " && ".join(parts) + ")",
        "(" + " || ".join(ranking) + ")",
        # Whole words: a word inside a compound ("bag" in "handbag") is not the shopper's own.
        "coalesce(p.search_document @@ product_search_query_whole(%(texts)s), false)",
    )


def text_match_params(synonyms: SynonymExpansion) -> dict:
    # Segmented: a Chinese run must be a word for product_search_query (catalog 0006).
    params = {"syn_rest": text_segment(synonyms.rest)}
    for g, group in enumerate(synonyms.groups):
        params.update({f"syn_{g}_{i}": text_segment(term) for i, term in enumerate(group)})
    return params


def text_ctes(filters: SearchFilters, synonyms: SynonymExpansion = NO_SYNONYMS) -> list[str]:
    """`txt`: products whose texts match %(text)s, ranked; `sku`: the exact SKU match."""
    where, _ = filters.sql("p")
    match, ranking, own_words = text_match_sql(synonyms)
    rank = f"coalesce(ts_rank(p.search_document, {ranking}, 1), 0)"
    return [
        # Those in the vector window are always ranked, so fusion sees both of their ranks.
        f"""text_hits AS (
            SELECT p.id AS product_id, {rank} AS text_score, {own_words} AS own_words
            FROM vec JOIN catalog_product p ON p.id = vec.product_id
            WHERE p.search_document @@ {match}
            UNION
            SELECT product_id, text_score, own_words FROM (
                SELECT p.id AS product_id, {rank} AS text_score, {own_words} AS own_words
                FROM catalog_product p
                WHERE p.search_document @@ {match}{where}
                LIMIT %(text_candidates)s
            ) capped
        )""",
        """txt AS (
            SELECT product_id, own_words,
                   row_number() OVER (ORDER BY own_words DESC, text_score DESC, product_id) AS rank
            FROM text_hits
            ORDER BY rank
            LIMIT %(window)s
        )""",
        f"""sku AS (
            SELECT p.id AS product_id FROM catalog_product p
            WHERE p.sku IN (%(sku)s, upper(%(sku)s)){where}
        )""",
    ]


def pin_cte(filters: SearchFilters) -> str:
    """`pin`: the pinned products %(pinned)s that pass the shopper's filters."""
    where, _ = filters.sql("p")
    return f"""pin AS (
        SELECT p.id AS product_id FROM catalog_product p
        WHERE p.id = ANY(%(pinned)s){where}
    )"""


# The columns of every ranked row (RankedProduct), from the fused list `f`.
RANKED_COLUMNS = """
    f.product_id, f.score, f.similarity, f.text_match, f.sku_match, f.synonym_match, f.pinned,
    coalesce(f.sku_match OR f.text_match OR f.similarity >= %(floor)s, false) AS relevant,
    p.price, p.created, p.brand, p.category_id, p.in_stock
"""


def hybrid_search_sql(
    space: EmbeddingSpace,
    filters: SearchFilters,
    *,
    text: bool,
    synonyms: SynonymExpansion = NO_SYNONYMS,
    exact: bool = False,
) -> str:
    """Products for a query vector (and, with `text`, its words), fused and ordered.

    Rows: RANKED_COLUMNS, the window's products under the floor too (`relevant` false).
    `exact`: the vector window ranks the filtered rows exactly (`vector_scan`).
    """
    ctes, _ = vector_ctes(space, filters, exact=exact)
    if not text:
        ctes.append(pin_cte(filters))
        return f"""
            WITH {", ".join(ctes)}
            SELECT {RANKED_COLUMNS}
            FROM (
                SELECT product_id, coalesce(1.0 / (%(k)s + rank), 0) AS score,
                       1 - distance AS similarity, false AS text_match, false AS sku_match,
                       false AS synonym_match, pin.product_id IS NOT NULL AS pinned
                FROM vec FULL JOIN pin USING (product_id)
            ) f JOIN catalog_product p ON p.id = f.product_id
            ORDER BY f.score DESC, f.product_id
        """
    ctes += text_ctes(filters, synonyms)
    ctes.append(pin_cte(filters))
    return f"""
        WITH {", ".join(ctes)}
        SELECT {RANKED_COLUMNS}
        FROM (
            SELECT product_id,
                   coalesce(1.0 / (%(k)s + vec.rank), 0) + coalesce(1.0 / (%(k)s + txt.rank), 0)
                       AS score,
                   1 - vec.distance AS similarity,
                   txt.rank IS NOT NULL AS text_match,
                   sku.product_id IS NOT NULL AS sku_match,
                   coalesce(NOT txt.own_words, false) AS synonym_match,
                   pin.product_id IS NOT NULL AS pinned
            FROM vec FULL JOIN txt USING (product_id) FULL JOIN sku USING (product_id)
                 FULL JOIN pin USING (product_id)
        ) f JOIN catalog_product p ON p.id = f.product_id
        ORDER BY f.sku_match DESC, f.score DESC, f.product_id
    """


def hybrid_search_params(
    *,
    space: EmbeddingSpace,
    vector: np.ndarray,
    filters: SearchFilters,
    text: str | None = None,
    match_texts: Sequence[str] = (),
    floor: float | None = None,
    synonyms: SynonymExpansion = NO_SYNONYMS,
    pinned: Sequence[int] = (),
) -> dict:
    window = settings.SEARCH_MAX_RESULTS
    _, query = cosine_distance(space, "e.vector", vector)
    params = {
        **query,
        "window": window,
        "image_window": image_window(window),
        "k": settings.SEARCH_RRF_K,
        "floor": -2.0 if floor is None else floor,  # cosine is never below -1
        "pinned": list(pinned),
        **filters.sql("p")[1],
    }
    if text is not None:
        params.update(
            text=text,
            texts=list(match_texts or [text]),
            sku=text.strip(),
            text_candidates=settings.SEARCH_TEXT_CANDIDATES,
        )
        if synonyms:
            params.update(text_match_params(synonyms))
    return params


def hybrid_search(
    *,
    space: EmbeddingSpace,
    vector: np.ndarray,
    filters: SearchFilters,
    text: str | None = None,
    match_texts: Sequence[str] = (),
    floor: float | None = None,
    synonyms: SynonymExpansion = NO_SYNONYMS,
    pinned: Sequence[int] = (),
) -> list[RankedProduct]:
    """The whole fused window, best first (at most about 2 x SEARCH_MAX_RESULTS + 1 + pins).

    `text` is the query as typed (its SKU match); `match_texts` the phrasings its text
    match accepts (default: `text` alone). Vector-only hits under `floor` are in it with
    `relevant` false.
    """
    params = hybrid_search_params(
        space=space,
        vector=vector,
        filters=filters,
        text=text,
        match_texts=match_texts,
        floor=floor,
        synonyms=synonyms,
        pinned=pinned,
    )
    scan = vector_scan(filters, image_window=params["image_window"])

    def run(exact: bool) -> list:
        sql = hybrid_search_sql(
            space, filters, text=text is not None, synonyms=synonyms, exact=exact
        )
        return nearest_rows(
            sql,
            params,
            ef_search=params["image_window"],
            filtered=bool(filters),
            max_scan_tuples=scan.max_scan_tuples,
        )

    rows = run(scan.exact)
    if filters and not scan.exact and _vector_hits(rows) < params["window"]:
        # The filter keeps more than the window (else it would be exact), so the index
        # scan ran out of tuples before it found them: a filter far from the query.
        rows = run(True)
    return [
        RankedProduct(
            product_id=pid,
            score=float(score),
            similarity=None if similarity is None else float(similarity),
            text_match=text_match,
            sku_match=sku_match,
            synonym_match=synonym_match,
            pinned=pinned_row,
            relevant=relevant,
            price=price,
            created=created,
            brand=brand,
            category_id=category_id,
            in_stock=in_stock,
        )
        for (
            pid, score, similarity, text_match, sku_match, synonym_match, pinned_row, relevant,
            price, created, brand, category_id, in_stock,
        ) in rows
    ]  # fmt: skip


def _vector_hits(rows: list) -> int:
    return sum(1 for row in rows if row[2] is not None)  # a similarity: in the vector window


@dataclass(frozen=True)
class VectorScan:
    exact: bool  # rank the filtered rows exactly, without HNSW
    max_scan_tuples: int  # else: HNSW tuples the iterative scan reads at most


def vector_scan(filters: SearchFilters, *, image_window: int) -> VectorScan:
    """How to find the nearest images a filter keeps, from the planner's estimate of how
    many products it keeps (EXPLAIN: no row is read; counting them cost as much as ranking
    them at 530k products, bench/search.py).

    Few (at most SEARCH_EXACT_FILTER_PRODUCTS): rank them exactly, at a cost in proportion
    to them. More: pgvector's iterative scan, which finds `image_window` filtered images
    in about image_window / share tuples when the filter is independent of the query; it
    may read twice that, at most SEARCH_MAX_SCAN_TUPLES. A filter that follows the vectors
    (a category the query is far from) would need many more: the scan stops short of the
    window and hybrid_search ranks the filtered rows exactly instead, so a failed scan
    costs no more than twice what a successful one would.
    """
    default = settings.SEARCH_MAX_SCAN_TUPLES
    if not filters:
        return VectorScan(exact=False, max_scan_tuples=default)
    where, params = filters.sql("p")
    with connection.cursor() as cursor:
        cursor.execute(
            f"EXPLAIN (FORMAT JSON) SELECT 1 FROM catalog_product p WHERE true{where}", params
        )
        (plan,) = cursor.fetchone()
        # reltuples: the planner's count of the catalog (ANALYZE, autovacuum), read for free.
        cursor.execute(
            "SELECT greatest(reltuples, 0)::bigint FROM pg_class "
            "WHERE oid = 'catalog_product'::regclass"
        )
        (catalog,) = cursor.fetchone()
    if isinstance(plan, str):
        plan = json.loads(plan)
    kept = max(1, int(plan[0]["Plan"]["Plan Rows"]))
    if kept <= settings.SEARCH_EXACT_FILTER_PRODUCTS:
        return VectorScan(exact=True, max_scan_tuples=default)
    tuples = 2 * image_window * max(catalog, kept) // kept
    return VectorScan(exact=False, max_scan_tuples=min(default, tuples))


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
    with transaction.atomic(), connection.cursor() as cursor:
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


def similar_products_rows(*, space: EmbeddingSpace, product_id: int, limit: int) -> list:
    """(product id, distance) of the products whose photos are nearest this product's."""
    window = min(3 * (limit + 1), MAX_EF_SEARCH)  # our own photos are among the nearest
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
        WHERE i.product_id <> %(product)s
        GROUP BY i.product_id
        ORDER BY min(h.distance), i.product_id
        LIMIT %(limit)s
    """
    params = {"product": product_id, "window": window, "limit": limit}
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
