"""Retrieval: the text search's one SQL statement, and the photo search's.

- Vector: products ranked by their best image's cosine similarity to the query vector,
  from the space's partial HNSW index (search.ranking writes its expression). With filters
  (`vector_scan`): a filter that keeps few products (`SEARCH_EXACT_FILTER_PRODUCTS`) is
  ranked exactly over its own rows; a wider one through pgvector's iterative index scan,
  which keeps reading the index until enough filtered images are found, up to a number of
  tuples that grows with the catalog, and falls back to the exact ranking when even that
  did not fill the window (a filter far from the query).
- Words (`TextMatch`, from search.matching): products matching every *required* term of
  the query (each term: any of its forms, its English stem, or its category's names; see
  search.query), ranked by how many of all the query's known words they match, then
  `ts_rank` (title above description). At most `SEARCH_TEXT_CANDIDATES` of them plus those
  in the vector window are ranked, so a query matching half the catalog still reads a
  bounded number of rows.
- SKU: the product whose SKU, or one of whose variants' SKU, is the query.

Only active products are retrieved: draft and archived ones have no vectors (the
embeddings app deletes them) and an empty search document (catalog migration 0008), and
the SKU, pins and filter-only matches ask for the status.
- Pins (search.rules) join with their attributes, whether the query found them or not;
  the shopper's filters still apply.

Every row carries its rank in each list and the product's price, created, brand, category
and stock, so fusion (`fuse`), the cut-off, rules, sorting and facets work over the whole
window without another query. Every list is bounded by `SEARCH_MAX_RESULTS`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal

import numpy as np
from django.conf import settings

from embeddings.models import EmbeddingSpace, ImageEmbedding
from embeddings.spaces import space_partition
from search.filters import SearchFilters
from search.query import SKU_MATCH_SQL, QueryTerm, term_match_sql, term_params
from search.ranking import cosine_distance, image_window, nearest_rows
from shop_search.db_routers import read_connection


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
    # What retrieval found (the learned ranker's first features): its rank in each list,
    # and how many of the query's words it matches.
    vector_rank: int | None = None
    text_rank: int | None = None
    words_matched: int = 0
    text_score: float | None = None  # ts_rank of its word match (title above description)
    photos: int = 0
    # Its learned ranker features (search.features), once the pipeline computed them.
    features: tuple[float, ...] = ()

    def rescored(self, score: float) -> RankedProduct:
        return replace(self, score=score)


@dataclass(frozen=True)
class TextMatch:
    """What the words of a query must match (search.matching decides)."""

    terms: tuple[QueryTerm, ...] = ()
    required: tuple[int, ...] = ()  # indexes of the terms every word match must have
    counted: tuple[int, ...] = ()  # the terms a match ranks higher for matching (known ones)
    sku: str = ""  # the query as typed: a product with this SKU is matched first
    # No words are left to match (all were understood as filters: "Acme under 50"): every
    # product the filters keep matches.
    every_product: bool = False

    @property
    def synonym_terms(self) -> tuple[int, ...]:
        return tuple(i for i in self.required if self.terms[i].synonyms)


NO_TEXT = TextMatch()


def vector_ctes(
    space: EmbeddingSpace,
    filters: SearchFilters,
    *,
    exact: bool = False,
    binary: int = 0,
    window: SearchFilters | None = None,
) -> tuple[list[str], dict]:
    """`vec`: the products nearest to %(query)s by their best image, ranked.

    `filters` apply inside the index scan; `exact`: rank every image they keep (no HNSW),
    for filters that keep few; `binary`: a category's many images by their binary codes
    first, then `binary` times the image window by their vectors (`vector_scan` says
    when). `window`: filters applied to the nearest products after the scan (a text
    search's understood filters: its word matches carry their recall, and the scan stays
    as fast as without them).
    """
    distance, _ = cosine_distance(space, "e.vector", "%(query)s")
    where, joined, params = vector_filter_sql(filters)
    join = (
        "JOIN catalog_productimage fi ON fi.id = e.image_id "
        "JOIN catalog_product p ON p.id = fi.product_id"
        if joined
        else ""
    )
    rows = f"""SELECT e.image_id, {distance} AS distance
            FROM embeddings_imageembedding e {join}
            WHERE e.space_id = {int(space.pk)} AND e.vector IS NOT NULL{where}"""
    if exact and binary and filters.category_ids and not joined:
        # A category's images ranked by their binary codes, read from the covering index
        # of the space's partition alone (64 bytes each, not their 1 KB rows; no other
        # column asked, so an index-only scan), then the nearest few times the window
        # re-ranked by their vectors: 4 times kept the exact top ten of a 12% category, for
        # a third of the time of reading every row (bench/search.py, filter_10pct).
        ranked = f"""SELECT c.image_id, {distance} AS distance
            FROM (SELECT e.image_id FROM {space_partition(ImageEmbedding, space)} e
                  WHERE true{where}
                  ORDER BY e.bq <~> binary_quantize(%(query)s::{space.vector_type})
                  LIMIT %(image_window)s * {int(binary)}) c
            JOIN embeddings_imageembedding e
              ON e.space_id = {int(space.pk)} AND e.image_id = c.image_id
            ORDER BY distance LIMIT %(image_window)s"""
    elif exact:
        # OFFSET 0 fences the filtered rows off from the ORDER BY, so the planner cannot
        # choose the HNSW index; it reads them through the filter's own indexes instead.
        ranked = f"""SELECT image_id, distance FROM ({rows} OFFSET 0) filtered
            ORDER BY distance LIMIT %(image_window)s"""
    else:
        ranked = f"{rows}\n            ORDER BY {distance}\n            LIMIT %(image_window)s"
    window_join = ""
    if window is not None:
        window_where, window_params = window.sql("w", prefix="w")
        window_join = (
            f"\n            JOIN catalog_product w ON w.id = i.product_id WHERE true{window_where}"
        )
        params = {**params, **window_params}
    # MATERIALIZED: with relaxed_order the index returns images slightly out of order,
    # so they are collected first and ordered again below (pgvector's advice).
    return [
        f"""vec_images AS MATERIALIZED (
            {ranked}
        )""",
        f"""vec AS (
            SELECT i.product_id, min(h.distance) AS distance,
                   row_number() OVER (ORDER BY min(h.distance), i.product_id) AS rank
            FROM vec_images h JOIN catalog_productimage i ON i.id = h.image_id{window_join}
            GROUP BY i.product_id
            ORDER BY rank
            LIMIT %(window)s
        )""",
    ], params


def vector_filter_sql(filters: SearchFilters) -> tuple[str, bool, dict]:
    """The vector scan's filters: ` AND ...` on image vector rows `e` (joined to their product
    `p` when the second value is true), and their parameters.

    A category alone is tested on the vector rows themselves (their `category_id`, kept by
    embeddings migration 0006): no join per row, a plain filter inside the index scan, and
    for the exact ranking a covering index of the category's binary codes (vector_ctes):
    a 12% category at 200,000 products in 25 ms, against 177 ms through the products
    (bench/search.py). With other filters the product is joined anyway and the category
    is tested there, where the planner can start from the most selective of them (a brand
    within a category: 33 ms; started from the category's vectors, several times that).
    """
    if filters.category_ids and not replace(filters, category_ids=()):
        sql = " AND e.category_id = ANY(%(s_vector_categories)s)"
        return sql, False, {"s_vector_categories": list(filters.category_ids)}
    where, params = filters.sql("p", prefix="s")
    return where, bool(filters), params


def text_ctes(filters: SearchFilters, match: TextMatch) -> list[str]:
    """`txt`: products matching every required term, ranked; `sku`: the exact SKU match."""
    where, _ = filters.sql("p")
    required = " AND ".join(term_match_sql(i) for i in match.required)
    required = required or ("p.status = 'active'" if match.every_product else "false")
    matched = " + ".join(f"{term_match_sql(i)}::int" for i in match.counted) or "0"
    # Ranked by its words' forms, and by the query as typed (CJK: its character pairs, so
    # adjacent words rank first).
    ranking = " || ".join(
        [f"coalesce(product_search_term(%(t{i}_forms)s), ''::tsquery)" for i in match.counted]
        + ["coalesce(product_search_query(%(sku)s, true), ''::tsquery)"]
    )
    score = f"ts_rank(p.search_document, {ranking}, 1)"
    # Matched through the shopper's own words as whole words ("bag", not the tail of
    # "handbag"), not only through a synonym.
    own = " AND ".join(
        f"coalesce(p.search_document @@ product_search_query_whole(%(t{i}_own)s), false)"
        for i in match.synonym_terms
    )
    own = own or "true"
    columns = f"p.id AS product_id, {score} AS text_score, {matched} AS words_matched, {own} AS own"
    return [
        # Those in the vector window are always ranked, so fusion sees both of their ranks.
        f"""text_hits AS (
            SELECT {columns}
            FROM vec JOIN catalog_product p ON p.id = vec.product_id
            WHERE {required}
            UNION
            SELECT * FROM (
                SELECT {columns}
                FROM catalog_product p
                WHERE {required}{where}
                LIMIT %(text_candidates)s
            ) capped
        )""",
        """txt AS (
            SELECT product_id, words_matched, own, text_score,
                   row_number() OVER (
                       ORDER BY words_matched DESC, own DESC, text_score DESC, product_id
                   ) AS rank
            FROM text_hits
            ORDER BY rank
            LIMIT %(window)s
        )""",
        f"""sku AS ({SKU_MATCH_SQL.format(where=where)})""",
    ]


def pin_cte(filters: SearchFilters) -> str:
    """`pin`: the pinned products %(pinned)s that pass the shopper's filters (active ones:
    a rule may pin a product that was archived since)."""
    where, _ = filters.sql("p")
    return f"""pin AS (
        SELECT p.id AS product_id FROM catalog_product p
        WHERE p.id = ANY(%(pinned)s) AND p.status = 'active'{where}
    )"""


# The columns of every retrieved row, from the joined lists `f`.
RETRIEVED_COLUMNS = """
    f.product_id, f.vector_rank, 1 - f.distance AS similarity, f.text_rank, f.words_matched,
    f.sku_match, f.synonym_match, f.pinned,
    p.price, p.created, p.brand, p.category_id, p.in_stock, f.text_score,
    (SELECT count(*) FROM catalog_productimage pi WHERE pi.product_id = p.id)::int AS photos
"""


def hybrid_search_sql(
    space: EmbeddingSpace,
    filters: SearchFilters,
    *,
    match: TextMatch | None,
    exact: bool = False,
    binary: int = 0,
    scanned: SearchFilters | None = None,
) -> str:
    """The products of the vector window, the word matches (with `match`), the SKU match
    and the pins, each with its ranks (RETRIEVED_COLUMNS), in no particular order.

    `filters` apply to every list; `scanned` (default: all of them) inside the vector
    index scan, the others to its window afterwards. `exact`: the vector window ranks the
    scanned rows exactly (`vector_scan`), with `binary` codes first.
    """
    scanned = filters if scanned is None else scanned
    window = filters if scanned != filters else None
    ctes, _ = vector_ctes(space, scanned, exact=exact, binary=binary, window=window)
    if match is None:
        ctes.append(pin_cte(filters))
        lists = """
            SELECT product_id, vec.rank AS vector_rank, vec.distance, NULL::bigint AS text_rank,
                   0 AS words_matched, false AS sku_match, false AS synonym_match,
                   pin.product_id IS NOT NULL AS pinned, NULL::real AS text_score
            FROM vec FULL JOIN pin USING (product_id)"""
    else:
        ctes += text_ctes(filters, match)
        ctes.append(pin_cte(filters))
        lists = """
            SELECT product_id, vec.rank AS vector_rank, vec.distance, txt.rank AS text_rank,
                   coalesce(txt.words_matched, 0) AS words_matched,
                   sku.product_id IS NOT NULL AS sku_match,
                   coalesce(NOT txt.own, false) AS synonym_match,
                   pin.product_id IS NOT NULL AS pinned, txt.text_score
            FROM vec FULL JOIN txt USING (product_id) FULL JOIN sku USING (product_id)
                 FULL JOIN pin USING (product_id)"""
    return f"""
        WITH {", ".join(ctes)}
        SELECT {RETRIEVED_COLUMNS}
        FROM ({lists}
        ) f JOIN catalog_product p ON p.id = f.product_id
    """


def hybrid_search_params(
    *,
    space: EmbeddingSpace,
    vector: np.ndarray,
    filters: SearchFilters,
    match: TextMatch | None = None,
    pinned: Sequence[int] = (),
    scanned: SearchFilters | None = None,
) -> dict:
    window = settings.SEARCH_MAX_RESULTS
    scanned = filters if scanned is None else scanned
    _, query = cosine_distance(space, "e.vector", vector)
    params = {
        **query,
        "window": window,
        "image_window": image_window(window),
        "pinned": list(pinned),
        **filters.sql("p")[1],
        **vector_filter_sql(scanned)[2],
        **(filters.sql("w", prefix="w")[1] if scanned != filters else {}),
    }
    if match is not None:
        params.update(sku=match.sku.strip(), text_candidates=settings.SEARCH_TEXT_CANDIDATES)
        for i, term in enumerate(match.terms):
            params.update(term_params(i, term))
            params[f"t{i}_own"] = list(term.forms[:1])
    return params


def retrieve(
    *,
    space: EmbeddingSpace,
    vector: np.ndarray,
    filters: SearchFilters,
    match: TextMatch | None = None,
    pinned: Sequence[int] = (),
    scanned: SearchFilters | None = None,
) -> list[RankedProduct]:
    """The vector window (at most SEARCH_MAX_RESULTS products), with `match` the word
    matches (as many more) and the SKU match, and the pins: unfused (score 0), unordered.
    `scanned`: the filters the vector index scan applies (default: `filters`); the others
    filter its window afterwards."""
    scanned = filters if scanned is None else scanned
    params = hybrid_search_params(
        space=space, vector=vector, filters=filters, match=match, pinned=pinned, scanned=scanned
    )
    scan = vector_scan(scanned, image_window=params["image_window"])

    def run(exact: bool, binary: int) -> list:
        return nearest_rows(
            hybrid_search_sql(
                space, filters, match=match, exact=exact, binary=binary, scanned=scanned
            ),
            params,
            ef_search=params["image_window"],
            filtered=bool(scanned),
            max_scan_tuples=scan.max_scan_tuples,
        )

    rows = run(scan.exact, scan.binary)
    short = _vector_hits(rows) < params["window"]
    if scanned and not scan.exact and short and scanned == filters:
        # The filter keeps more than the window (else it would be exact), so the index
        # scan ran out of tuples before it found them: a filter far from the query. (With
        # a window filtered after the scan, short is expected: the word list holds the rest.)
        # It keeps more than the exact bound: many products nearly tied by their codes
        # (half the catalog: recall@10 0.935 with 4 times the window, 0.963 with 8).
        rows = run(True, binary=2 * settings.SEARCH_BINARY_CANDIDATES)
    return [
        RankedProduct(
            product_id=pid,
            score=0.0,
            similarity=None if similarity is None else float(similarity),
            text_match=text_rank is not None,
            sku_match=sku_match,
            synonym_match=synonym_match,
            pinned=pinned_row,
            price=price,
            created=created,
            brand=brand,
            category_id=category_id,
            in_stock=in_stock,
            vector_rank=vector_rank,
            text_rank=text_rank,
            words_matched=words_matched,
            text_score=text_score,
            photos=photos,
        )
        for (
            pid, vector_rank, similarity, text_rank, words_matched, sku_match, synonym_match,
            pinned_row, price, created, brand, category_id, in_stock, text_score, photos,
        ) in rows
    ]  # fmt: skip


def fuse(rows: list[RankedProduct], *, k: int | None = None) -> list[RankedProduct]:
    """Reciprocal rank fusion: score = sum of 1 / (k + rank) over the vector and word
    lists; the exact SKU match first, ties to the lower product id (stable pages)."""
    k = settings.SEARCH_RRF_K if k is None else k
    fused = [
        replace(
            row,
            score=sum(1.0 / (k + rank) for rank in (row.vector_rank, row.text_rank) if rank),
        )
        for row in rows
    ]
    return ranked_order(fused)


def ranked_order(rows: list[RankedProduct]) -> list[RankedProduct]:
    """Relevance order, wherever scores change: the exact SKU match first, then by score,
    ties to the lower product id (stable pages)."""
    return sorted(rows, key=lambda row: (not row.sku_match, -row.score, row.product_id))


def hybrid_search(
    *,
    space: EmbeddingSpace,
    vector: np.ndarray,
    filters: SearchFilters,
    match: TextMatch | None = None,
    pinned: Sequence[int] = (),
) -> list[RankedProduct]:
    """`retrieve`, then `fuse`: the window best first, every row relevant (photo search,
    benches; a text search cuts off what is not a match, search.pipeline)."""
    return fuse(retrieve(space=space, vector=vector, filters=filters, match=match, pinned=pinned))


def _vector_hits(rows: list) -> int:
    return sum(1 for row in rows if row[2] is not None)  # a similarity: in the vector window


@dataclass(frozen=True)
class VectorScan:
    exact: bool  # rank the filtered rows exactly, without HNSW
    max_scan_tuples: int  # else: HNSW tuples the iterative scan reads at most
    binary: int = 0  # exactly, but many: by binary codes, then this many times the window


def vector_scan(filters: SearchFilters, *, image_window: int) -> VectorScan:
    """How to find the nearest images a filter keeps, from the planner's estimate of how
    many products it keeps (EXPLAIN: no row is read; counting them cost as much as ranking
    them at 530k products, bench/search.py).

    Few (at most SEARCH_EXACT_FILTER_PRODUCTS, and no more than SEARCH_EXACT_FILTER_SHARE
    of the catalog unless at most SEARCH_EXACT_FILTER_ALWAYS): rank them exactly, at a cost
    in proportion to them. More: pgvector's iterative scan, which finds `image_window`
    filtered images in about image_window / share tuples when the filter is independent of
    the query; it may read twice that, at most SEARCH_MAX_SCAN_TUPLES. A filter that
    follows the vectors (a category the query is far from) would need many more: the scan
    stops short of the window and hybrid_search ranks the filtered rows exactly instead, so
    a failed scan costs no more than twice what a successful one would.
    """
    default = settings.SEARCH_MAX_SCAN_TUPLES
    if not filters:
        return VectorScan(exact=False, max_scan_tuples=default)
    # Estimated from the products' own columns: the variant test would be taken for a
    # half of the catalog whatever it keeps (bench/variants.py).
    where, params = filters.sql("p", summary=True)
    with read_connection().cursor() as cursor:
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
    # A filter that keeps a large share of the catalog fills the window within a few
    # thousand tuples of the scan, where ranking it exactly reads every product it keeps
    # (a price band of 39% at 100,000 products: 400 ms exactly, 106 ms by the scan, the
    # same first ten; bench/README.md, Variants).
    wide = kept > settings.SEARCH_EXACT_FILTER_SHARE * catalog
    small = kept <= min(settings.SEARCH_EXACT_FILTER_ALWAYS, settings.SEARCH_EXACT_FILTER_PRODUCTS)
    if small or (kept <= settings.SEARCH_EXACT_FILTER_PRODUCTS and not wide):
        many = kept >= settings.SEARCH_BINARY_MIN_PRODUCTS
        binary = settings.SEARCH_BINARY_CANDIDATES if many else 0
        return VectorScan(exact=True, max_scan_tuples=default, binary=binary)
    tuples = 2 * image_window * max(catalog, kept) // kept
    return VectorScan(exact=False, max_scan_tuples=min(default, tuples))
