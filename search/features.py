"""The learned ranker's features: what is known of each product of a text search's window
when the page is built (as the OpenSearch Learning to Rank plugin logs them).

Computed once per search over the whole fused window (`window_features`), attached to its
rows; the ranker scores them (search.ranker) and the log keeps those of the products shown
(search.searchlog: SearchLog.features), so that training sees what the shopper saw.

- retrieval: the fused score, similarity and rank in the meaning list, rank and ts_rank in
  the word list (title words weigh more than description words), how many of the query's
  words it matches and their share, word, synonym and SKU match, above the cut-off or not;
- the product: its popularity (clients who clicked, carted, bought it over
  SEARCH_RANKER_POPULARITY_DAYS, 1/2/3 each, per day listed with SMOOTHING_DAYS added, so a
  new product's first click is not a best seller; 0 until POPULARITY_MIN_CLIENTS clients
  clicked it), price and where it stands among the
  window's prices (0 the cheapest, 1 the dearest), days since it was listed, stock, photos;
- the query: its words, how many filters were understood from it, corrected or not, whether
  the catalog knows a word of it, "cheap".

A value that does not exist (no similarity outside the vector window) is NaN: LightGBM
learns where missing values go.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
from django.conf import settings
from django.utils import timezone

from search.engagement import product_engagement
from search.query import QueryAnalysis
from search.retrieval import RankedProduct
from search.understanding import Understanding

FEATURES = (
    "fused",
    "similarity",
    "vector_rank",
    "text_rank",
    "text_score",
    "words_matched",
    "words_share",
    "text_match",
    "synonym_match",
    "sku_match",
    "relevant",
    "popularity",
    "price",
    "price_position",
    "age_days",
    "in_stock",
    "photos",
    "query_words",
    "query_understood",
    "query_corrected",
    "query_known",
    "query_cheap",
)
# A product's first days weigh as if it had been listed this much longer without a sale.
SMOOTHING_DAYS = 7.0
# A product is popular only once this many clients (addresses, else sessions) clicked it:
# below, one client alone (a forger's 500 clicks count once) would lift a product nobody
# else chose above all those never clicked, the step a ranker learns first.
POPULARITY_MIN_CLIENTS = 3
NAN = math.nan


@dataclass(frozen=True)
class QueryFeatures:
    words: int
    understood: int
    corrected: bool
    known: bool
    cheap: bool
    counted: int  # the words a match is ranked for matching (words_share's denominator)


def query_features(
    analysis: QueryAnalysis, understanding: Understanding, *, counted: int
) -> QueryFeatures:
    return QueryFeatures(
        words=len(analysis.tokens),
        understood=len(understanding.items),
        corrected=bool(analysis.corrections),
        known=analysis.in_vocabulary,
        cheap=understanding.cheap,
        counted=counted,
    )


# --- popularity ---------------------------------------------------------------------------

_popularity: dict = {"checked": -math.inf, "scores": {}}
_popularity_lock = threading.Lock()


def popularity_scores() -> dict[int, float]:
    """Per product: 1 per client that clicked it, 2 that carted, 3 that bought, over
    SEARCH_RANKER_POPULARITY_DAYS (search.judgments.product_engagement: protected like the
    judgments); recounted at most every SEARCH_RANKER_POPULARITY_SECONDS per process."""
    now = time.monotonic()
    if now - _popularity["checked"] < settings.SEARCH_RANKER_POPULARITY_SECONDS:
        return _popularity["scores"]
    with _popularity_lock:
        if now - _popularity["checked"] >= settings.SEARCH_RANKER_POPULARITY_SECONDS:
            since = timezone.now() - timedelta(days=settings.SEARCH_RANKER_POPULARITY_DAYS)
            _popularity["scores"] = {
                product: clicks + 2.0 * carts + 3.0 * purchases
                for product, clicks, carts, purchases in product_engagement(since=since)
                if clicks >= POPULARITY_MIN_CLIENTS
            }
            _popularity["checked"] = now
    return _popularity["scores"]


def popularity_forget() -> None:
    """Recount at the next search (tests, after writing events)."""
    _popularity["checked"] = -math.inf


# --- the window's features ----------------------------------------------------------------


def window_features(rows: list[RankedProduct], query: QueryFeatures) -> list[tuple[float, ...]]:
    """The features (FEATURES, in order) of every row, a tuple each. Built as plain tuples
    and never per row through numpy: at 400 rows that was most of the cost (bench/ranker.py)."""
    if not rows:
        return []
    popularity = popularity_scores()
    now = timezone.now()
    days = settings.SEARCH_RANKER_POPULARITY_DAYS
    prices = sorted({float(row.price) for row in rows if row.price is not None})
    last = max(len(prices) - 1, 1)
    price_position = {price: i / last if len(prices) > 1 else 0.5 for i, price in enumerate(prices)}
    counted = max(query.counted, 1)
    query_part = (
        float(query.words),
        float(query.understood),
        float(query.corrected),
        float(query.known),
        float(query.cheap),
    )
    out = []
    for row in rows:
        if row.created is not None:
            age = (now - row.created).total_seconds() / 86400
            listed = max(min(age, days), 0.0)
        else:
            age, listed = NAN, days
        price = NAN if row.price is None else float(row.price)
        out.append(
            (
                row.score,
                NAN if row.similarity is None else row.similarity,
                NAN if row.vector_rank is None else float(row.vector_rank),
                NAN if row.text_rank is None else float(row.text_rank),
                NAN if row.text_score is None else row.text_score,
                float(row.words_matched),
                row.words_matched / counted,
                float(row.text_match),
                float(row.synonym_match),
                float(row.sku_match),
                float(row.relevant),
                popularity.get(row.product_id, 0.0) / (listed + SMOOTHING_DAYS),
                price,
                price_position.get(price, NAN),
                age,
                float(row.in_stock),
                float(row.photos),
                *query_part,
            )
        )
    return out


def features_attached(rows: list[RankedProduct], query: QueryFeatures) -> list[RankedProduct]:
    """The rows, each a copy with its features. Copied through `__dict__`, not
    `dataclasses.replace` (which runs `__init__` with every field): at 400 rows replace
    took 4 ms of a search, the copy a tenth of that (bench/ranker.py)."""
    attached = []
    for row, values in zip(rows, window_features(rows, query), strict=True):
        copy = object.__new__(RankedProduct)
        copy.__dict__.update(row.__dict__, features=values)
        attached.append(copy)
    return attached


def features_matrix(rows: list[RankedProduct]) -> np.ndarray:
    """The attached features of `rows` as a float32 matrix (NaN rows for rows without)."""
    width = len(FEATURES)
    missing = (math.nan,) * width
    return np.array(
        [row.features if len(row.features) == width else missing for row in rows], np.float32
    ).reshape(len(rows), width)
