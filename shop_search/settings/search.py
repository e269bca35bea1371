"""Search settings: ranking and filters, suggestions, the search log and what is learned
from it (judgments, interleaving, the ranker), insights. Part of the base settings (which
import them all), each overridable from the environment like the rest."""

from django.core.exceptions import ImproperlyConfigured

from .environment import Env

env = Env()

# Search: results are ranked within a bounded window of nearest neighbours, so a request
# never touches more than this many products, however large the catalog.
SEARCH_MAX_RESULTS = env.int("SEARCH_MAX_RESULTS", default=200)
SEARCH_DEFAULT_LIMIT = 20
SEARCH_MAX_LIMIT = 100
# Hybrid ranking (search.ranking): reciprocal rank fusion of the vector and text lists.
SEARCH_RRF_K = env.int("SEARCH_RRF_K", default=60)
# A text query's image-only hits less similar than this are dropped ("asdfgh" finds nothing);
# a space's own `similarity_floor` overrides it. 0.2 suits pretrained CLIP ViT-B-32.
SEARCH_SIMILARITY_FLOOR = env.float("SEARCH_SIMILARITY_FLOOR", default=0.2)
# Image-only hits of a query none of whose words the catalog knows (or corrects to): at
# least this similar. A space calibrated by fine-tuning has its own; empty: the floor above.
SEARCH_UNKNOWN_WORDS_FLOOR = (
    env.float("SEARCH_UNKNOWN_WORDS_FLOOR")
    if env.str("SEARCH_UNKNOWN_WORDS_FLOOR", default="")
    else None
)
# The cut-off (search.pipeline.cut_off): a hit only its photos found is a match when it is
# as similar to the query as this quantile of the query's word matches (0.5: the median);
# a query with no word match keeps the photo hits in the upper SEARCH_VECTOR_GAP share of
# the way from the window's median similarity to its best.
SEARCH_VECTOR_MATCH_QUANTILE = env.float("SEARCH_VECTOR_MATCH_QUANTILE", default=0.5)
SEARCH_VECTOR_GAP = env.float("SEARCH_VECTOR_GAP", default=0.5)
for _name, _value in (
    ("SEARCH_VECTOR_MATCH_QUANTILE", SEARCH_VECTOR_MATCH_QUANTILE),
    ("SEARCH_VECTOR_GAP", SEARCH_VECTOR_GAP),
):
    if not 0.0 < _value <= 1.0:
        raise ImproperlyConfigured(f"{_name} must be above 0 and at most 1, got {_value}")
# Typo correction (search.typos): each process reloads the catalog's words when they
# changed, checking at most this often.
SEARCH_TYPO_REFRESH_SECONDS = env.float("SEARCH_TYPO_REFRESH_SECONDS", default=5.0)
# Suggestions as you type (GET /api/suggest/): how many, and the longest prefix accepted.
SEARCH_SUGGEST_DEFAULT_LIMIT = 8
SEARCH_SUGGEST_MAX_LIMIT = 20
SEARCH_SUGGEST_MAX_LENGTH = 100
# Until a search log provides popular queries, each title gives one ("red t-shirt").
SEARCH_SUGGEST_CATALOG_QUERIES = env.bool("SEARCH_SUGGEST_CATALOG_QUERIES", default=True)
# Anonymous suggestion requests per IP: a shopper typing sends a few a second.
API_SUGGEST_ANON_RATE = env.str("API_SUGGEST_ANON_RATE", default="600/min")
# Text matches ranked per query beyond those in the vector window (bounds broad queries).
SEARCH_TEXT_CANDIDATES = env.int("SEARCH_TEXT_CANDIDATES", default=1000)
# Filtered vector search (search.ranking.vector_scan): a filter keeping at most this many
# products is ranked exactly over its rows (cost in proportion to them, bench/search.py);
# a wider one through HNSW's iterative scan, reading at most SEARCH_MAX_SCAN_TUPLES index
# tuples (fewer for a wide filter) while looking for filtered hits, then exactly if short.
SEARCH_EXACT_FILTER_PRODUCTS = env.int("SEARCH_EXACT_FILTER_PRODUCTS", default=50000)
# ...unless it keeps more than this share of the catalog (the scan fills the window in a
# few thousand tuples), though always at most SEARCH_EXACT_FILTER_ALWAYS products.
SEARCH_EXACT_FILTER_SHARE = env.float("SEARCH_EXACT_FILTER_SHARE", default=0.2)
SEARCH_EXACT_FILTER_ALWAYS = env.int("SEARCH_EXACT_FILTER_ALWAYS", default=5000)
SEARCH_MAX_SCAN_TUPLES = env.int("SEARCH_MAX_SCAN_TUPLES", default=20000)
# A category filter that keeps at least SEARCH_BINARY_MIN_PRODUCTS, ranked exactly: its images
# by their binary codes first, then this many times the image window re-ranked by their
# vectors (search.retrieval.vector_ctes). Fewer are read whole: their exact order, at once.
SEARCH_BINARY_CANDIDATES = env.int("SEARCH_BINARY_CANDIDATES", default=4)
SEARCH_BINARY_MIN_PRODUCTS = env.int("SEARCH_BINARY_MIN_PRODUCTS", default=10000)
# The search log (search.searchlog): products kept per logged search, and days kept.
SEARCH_LOG_TOP = env.int("SEARCH_LOG_TOP", default=50)
SEARCH_LOG_DAYS = env.int("SEARCH_LOG_DAYS", default=90)
# Judgments from the log (search.judgments): a search without a click followed this soon,
# in the same session, by another query's clicked search links the first to those products.
SEARCH_REFORMULATION_SECONDS = env.int("SEARCH_REFORMULATION_SECONDS", default=300)
# Queries searched fewer times are neither evaluated nor trained on.
SEARCH_JUDGMENT_MIN_SEARCHES = env.int("SEARCH_JUDGMENT_MIN_SEARCHES", default=2)
# Debiased attractiveness (the click model's gamma) for grade 1 and grade 2.
SEARCH_JUDGMENT_ATTRACTIVE = env.float("SEARCH_JUDGMENT_ATTRACTIVE", default=0.2)
SEARCH_JUDGMENT_STRONG = env.float("SEARCH_JUDGMENT_STRONG", default=0.5)
# Positions beyond this share one examination probability.
# What one client (address) weighs per (query, product) in the judgments: at most this many
# of its sessions count; each session counts once (search.judgments).
SEARCH_JUDGMENT_CLIENT_CAP = env.int("SEARCH_JUDGMENT_CLIENT_CAP", default=2)
SEARCH_JUDGMENT_MAX_POSITION = env.int("SEARCH_JUDGMENT_MAX_POSITION", default=100)
# Sessions that behave like robots give no judgments (search.judgments): more searches than
# this in one minute; this many clicks sooner than the dwell after their search; one product
# clicked for this many different queries. 0 turns a rule off.
SEARCH_ROBOT_SEARCHES_PER_MINUTE = env.int("SEARCH_ROBOT_SEARCHES_PER_MINUTE", default=30)
SEARCH_ROBOT_MIN_DWELL_SECONDS = env.float("SEARCH_ROBOT_MIN_DWELL_SECONDS", default=1.0)
SEARCH_ROBOT_FAST_CLICKS = env.int("SEARCH_ROBOT_FAST_CLICKS", default=3)
SEARCH_ROBOT_SAME_CLICK_QUERIES = env.int("SEARCH_ROBOT_SAME_CLICK_QUERIES", default=5)
# Held-out queries enter the query-nDCG gate only when their judgments come from at least
# this many distinct clients (addresses), so that a few clients cannot choose the gate.
SEARCH_GATE_MIN_CLIENTS = env.int("SEARCH_GATE_MIN_CLIENTS", default=3)
# The query-nDCG promotion gate: how much held-out nDCG@10 a candidate may lose (0: none).
SEARCH_JUDGMENT_NDCG_TOLERANCE = env.float("SEARCH_JUDGMENT_NDCG_TOLERANCE", default=0.0)
if SEARCH_LOG_DAYS < 1:
    raise ImproperlyConfigured(f"SEARCH_LOG_DAYS must be 1 or more, got {SEARCH_LOG_DAYS}")
# Off: searches are not logged and answer "search_id": null (events then have nothing to name).
SEARCH_LOG_ENABLED = env.bool("SEARCH_LOG_ENABLED", default=True)
# Searches deleted per committed batch by the daily retention task.
SEARCH_LOG_PRUNE_BATCH = env.int("SEARCH_LOG_PRUNE_BATCH", default=5000)
# The shop page's own session cookie for the search log: a random id, until the browser closes.
SEARCH_SESSION_COOKIE = "shop_search_session"
# Anonymous shopper events (POST /api/events/) per IP: a rate of their own, beside searches.
API_EVENTS_ANON_RATE = env.str("API_EVENTS_ANON_RATE", default="300/min")
# Interleaving (search.interleaving): this share of text searches merges the active space's
# ranking with a held candidate's (team draft); 0 turns testing off, and fine-tuning then
# promotes a candidate that passes the offline gates at once. With AUTO_PROMOTE, a candidate
# that passed the offline gates and wins the sign test at p < 0.05 after MIN_SEARCHES
# sessions with clicks goes live (checked by beat every CHECK_INTERVAL seconds).
SEARCH_INTERLEAVE_FRACTION = env.float("SEARCH_INTERLEAVE_FRACTION", default=0.0)
if not 0.0 <= SEARCH_INTERLEAVE_FRACTION <= 1.0:
    raise ImproperlyConfigured(
        f"SEARCH_INTERLEAVE_FRACTION must be between 0 and 1, got {SEARCH_INTERLEAVE_FRACTION}"
    )
SEARCH_INTERLEAVE_AUTO_PROMOTE = env.bool("SEARCH_INTERLEAVE_AUTO_PROMOTE", default=False)
# The learned ranker (search.ranker): re-ranks the first SEARCH_RANKER_WINDOW rows of a text
# search when one is live; SEARCH_RANKER_ENABLED off: fusion's order, nothing loaded. Which
# is live is checked at most every SEARCH_RANKER_REFRESH_SECONDS; products' popularity
# (a feature) recounted every SEARCH_RANKER_POPULARITY_SECONDS over the last _DAYS.
SEARCH_RANKER_ENABLED = env.bool("SEARCH_RANKER_ENABLED", default=True)
SEARCH_RANKER_WINDOW = env.int("SEARCH_RANKER_WINDOW", default=200)
SEARCH_RANKER_REFRESH_SECONDS = env.float("SEARCH_RANKER_REFRESH_SECONDS", default=10.0)
SEARCH_RANKER_POPULARITY_SECONDS = env.float("SEARCH_RANKER_POPULARITY_SECONDS", default=600.0)
SEARCH_RANKER_POPULARITY_DAYS = env.int("SEARCH_RANKER_POPULARITY_DAYS", default=30)
# Training (search.ranker_training): a candidate must beat the live ranker's (or fusion's)
# held-out nDCG@10 by this margin; it trains when the log has at least _MIN_QUERIES judged
# queries to train on; beat trains one every SEARCH_RANKER_TRAIN_INTERVAL seconds.
SEARCH_RANKER_MARGIN = env.float("SEARCH_RANKER_MARGIN", default=0.02)
SEARCH_RANKER_MIN_QUERIES = env.int("SEARCH_RANKER_MIN_QUERIES", default=10)
SEARCH_RANKER_TRAIN_INTERVAL = env.float("SEARCH_RANKER_TRAIN_INTERVAL", default=86400.0)
SEARCH_INTERLEAVE_MIN_SEARCHES = env.int("SEARCH_INTERLEAVE_MIN_SEARCHES", default=200)
SEARCH_INTERLEAVE_CHECK_INTERVAL = env.float("SEARCH_INTERLEAVE_CHECK_INTERVAL", default=600.0)
# Query vectors (and photo searches' vectors) are kept this long in the cache; bounded, so
# that a flood of distinct queries expires instead of accumulating.
SEARCH_QUERY_CACHE_MAX_SECONDS = 86400
SEARCH_QUERY_CACHE_SECONDS = env.int("SEARCH_QUERY_CACHE_SECONDS", default=3600)
if not 1 <= SEARCH_QUERY_CACHE_SECONDS <= SEARCH_QUERY_CACHE_MAX_SECONDS:
    raise ImproperlyConfigured(
        f"SEARCH_QUERY_CACHE_SECONDS must be between 1 and {SEARCH_QUERY_CACHE_MAX_SECONDS} "
        f"(a day), got {SEARCH_QUERY_CACHE_SECONDS}"
    )
# Image-text match: the rank is counted among this many captions nearest the image.
MATCH_TOP_CAPTIONS = env.int("MATCH_TOP_CAPTIONS", default=1000)
# Admin: a product is flagged when its title is not among its photo's nearest captions.
IMAGE_TITLE_TOP_CAPTIONS = env.int("IMAGE_TITLE_TOP_CAPTIONS", default=10)
# Admin › Search insights (search.insights): rows per table on the page and per CSV export;
# the most searched zero-result queries grouped by meaning, and how far (cosine distance,
# complete linkage) a query may be from every query of a group and still join it: with the
# tiny model 0.2 keeps "gift for mum" and "gifts for mom" together and "kitchen knife"
# apart; check it per model.
SEARCH_INSIGHTS_ROWS = env.int("SEARCH_INSIGHTS_ROWS", default=50)
SEARCH_INSIGHTS_EXPORT_ROWS = env.int("SEARCH_INSIGHTS_EXPORT_ROWS", default=10000)
SEARCH_INSIGHTS_CLUSTER_QUERIES = env.int("SEARCH_INSIGHTS_CLUSTER_QUERIES", default=200)
SEARCH_INSIGHTS_CLUSTER_DISTANCE = env.float("SEARCH_INSIGHTS_CLUSTER_DISTANCE", default=0.2)
# ...and at most this fraction of the queries' median distance to each other (search.insights).
SEARCH_INSIGHTS_CLUSTER_RELATIVE = env.float("SEARCH_INSIGHTS_CLUSTER_RELATIVE", default=0.6)

# What `from .search import *` gives the base settings: the settings, not the reader.
__all__ = [name for name in dir() if name.isupper()]
