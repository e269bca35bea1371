"""How well a space ranks the shop's real queries: nDCG@10 and MRR against the judgments.

A query is replayed against the space's *vectors*: products ranked by their best photo's
cosine to the query's text vector (the meaning list of search.ranking), ties to the lower
product id. The words list and the rules are the same for every space, so this measures
what a new model changes. Gains are graded relevance (search.judgments): DCG@k = sum over
the first k of (2^grade - 1) / log2(position + 1), divided by the DCG of the judged
products in their best order; the reciprocal rank is 1 / the position of the first product
graded relevant (over the whole ranking).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from embeddings.encoder import ClipEncoder
from embeddings.models import EmbeddingSpace, ImageEmbedding
from embeddings.spaces import space_encoder
from search.judgments import gate_queries, judged_queries, judgments_compute
from search.query import words_known


@dataclass(frozen=True)
class QueryScore:
    query: str
    ndcg: float
    reciprocal_rank: float
    own_words: bool  # a word of the query is in no product's texts ("rucksack")


def product_scores(
    query_vecs: np.ndarray, image_vecs: np.ndarray, image_product: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(products, scores): the distinct products (ascending ids) and each query's best
    cosine over each product's images (queries x products)."""
    order = np.argsort(image_product, kind="stable")
    sorted_products = image_product[order]
    products, starts = np.unique(sorted_products, return_index=True)
    scores = query_vecs @ image_vecs[order].T
    return products, np.maximum.reduceat(scores, starts, axis=1)


def ranking_quality(
    *,
    products: np.ndarray,
    scores: np.ndarray,
    grades: Sequence[Mapping[int, int]],
    k: int = 10,
) -> list[tuple[float, float]]:
    """(nDCG@k, reciprocal rank) per query: row i of `scores` ranks `products` for a query
    whose judged products have `grades[i]` (product id -> 0..3)."""
    results = []
    index = {int(pid): i for i, pid in enumerate(products)}
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    for row, graded in zip(scores, grades, strict=True):
        gain = np.zeros(len(products))
        for pid, grade in graded.items():
            if pid in index:
                gain[index[pid]] = 2.0**grade - 1.0
        ranking = np.lexsort((products, -row))  # best first, ties to the lower id
        ranked_gain = gain[ranking]
        top = ranked_gain[:k]
        ideal = np.sort(gain)[::-1][:k]
        ideal_dcg = float((ideal * discounts[: len(ideal)]).sum())
        dcg = float((top * discounts[: len(top)]).sum())
        relevant = np.flatnonzero(ranked_gain > 0)
        results.append(
            (
                dcg / ideal_dcg if ideal_dcg else 0.0,
                1.0 / (relevant[0] + 1) if len(relevant) else 0.0,
            )
        )
    return results


def queries_own_words(queries: Sequence[str]) -> dict[str, bool]:
    """Whether each query has a word no product's texts contain (one probe per word)."""
    words = sorted({word for query in queries for word in query.split()})
    known = words_known(words)
    return {query: any(word not in known for word in query.split()) for query in queries}


def query_scores(
    *,
    encoder: ClipEncoder,
    image_vecs: np.ndarray,
    image_product: np.ndarray,
    judged: Mapping[str, Mapping[int, int]],
    own_words: Mapping[str, bool],
    k: int = 10,
) -> list[QueryScore]:
    """nDCG@k and reciprocal rank of each judged query (query -> grades) under `encoder`'s
    text tower, against the given image vectors, a chunk of queries at a time."""
    queries = sorted(judged)
    if not queries or len(image_vecs) == 0:
        return []
    query_vecs = encoder.encode_texts(queries)
    rows = max(1, (1 << 24) // len(image_vecs))
    scores: list[QueryScore] = []
    for start in range(0, len(queries), rows):
        chunk = queries[start : start + rows]
        products, matrix = product_scores(
            query_vecs[start : start + rows], image_vecs, image_product
        )
        quality = ranking_quality(
            products=products, scores=matrix, grades=[judged[q] for q in chunk], k=k
        )
        scores += [
            QueryScore(q, ndcg, rr, own_words.get(q, False))
            for q, (ndcg, rr) in zip(chunk, quality, strict=True)
        ]
    return scores


def scores_summary(scores: Sequence[QueryScore]) -> dict:
    """Mean nDCG@10 and MRR, over all queries and by kind (own words, catalog words)."""

    def mean(group: list[QueryScore]) -> dict:
        return {
            "queries": len(group),
            "ndcg@10": float(np.mean([s.ndcg for s in group])) if group else None,
            "mrr": float(np.mean([s.reciprocal_rank for s in group])) if group else None,
        }

    return {
        "all": mean(list(scores)),
        "own_words": mean([s for s in scores if s.own_words]),
        "catalog_words": mean([s for s in scores if not s.own_words]),
    }


def space_image_vectors(space: EmbeddingSpace) -> tuple[np.ndarray, np.ndarray]:
    """(vectors, product ids) of the space's stored image vectors."""
    rows = (
        ImageEmbedding.objects.filter(space=space, vector__isnull=False)
        .order_by("pk")
        .values_list("image__product_id", "vector")
    )
    product_ids, vectors = [], []
    for product_id, vector in rows.iterator(chunk_size=2000):
        product_ids.append(product_id)
        vectors.append(vector.to_numpy() if hasattr(vector, "to_numpy") else vector)
    if not vectors:
        return np.zeros((0, space.embed_dim), np.float32), np.zeros(0, np.int64)
    return np.asarray(vectors, np.float32), np.asarray(product_ids, np.int64)


def encoder_image_vectors(
    encoder: ClipEncoder, catalog_images: Mapping[Hashable, Sequence]
) -> tuple[np.ndarray, np.ndarray]:
    """(vectors, product ids) of decoded catalog images under `encoder` (a candidate that
    has no stored vectors yet)."""
    product_ids = [pk for pk, images in catalog_images.items() for _ in images]
    images = [image for images in catalog_images.values() for image in images]
    if not images:
        return np.zeros((0, 1), np.float32), np.zeros(0, np.int64)
    return encoder.encode_images(images), np.asarray(product_ids, np.int64)


def space_search_evaluate(
    *, space: EmbeddingSpace, held_out_only: bool = False, min_searches: int | None = None
) -> tuple[dict, list[QueryScore]]:
    """nDCG@10 and MRR of the logged queries with enough judgments (only those the
    promotion gate measures, with `held_out_only`), replayed against `space`'s stored image
    vectors."""
    judged = judged_queries(judgments_compute(), min_searches=min_searches)
    if held_out_only:
        judged = gate_queries(judged)
    judged = {q: j.grades() for q, j in judged.items()}
    vectors, owners = space_image_vectors(space)
    if judged and not len(vectors):
        raise ValueError(
            f"space {space.name!r} has no image vectors to rank by: fill it first "
            f"(manage.py reindex_embeddings --space {space.name})"
        )
    scores = query_scores(
        encoder=space_encoder(space),
        image_vecs=vectors,
        image_product=owners,
        judged=judged,
        own_words=queries_own_words(list(judged)),
    )
    return scores_summary(scores), scores
