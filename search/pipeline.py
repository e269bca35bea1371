"""A text search, stage by stage, in the order they run (`product_search_by_text`):

1. analyse      (search.query)         the words, their forms, corrections, Chinese words
2. understand   (search.understanding) price phrases, "cheap", brands, category names
3. match        (search.matching)      which words a word match must have
4. retrieve     (search.retrieval)     the vector window, word matches, SKU, pins: one SQL
5. fuse         (search.retrieval)     reciprocal rank fusion
6. cut off      (`cut_off`)            what is a match; the rest of the window is related
7. re-rank      (`rerank`)             "cheap" prefers lower prices; then the window's
                                       features (search.features) and the live learned
                                       ranker (search.ranker), when there is one
8. rules        (search.rules)         hide, boost, pin
9. sort         (search.sorting)       the shopper's order, over the matches only
10. related     (search.related)       a thin first page filled, or help for an empty one
11. log         (search.searchlog)     by the caller (API, shop page), once the page is built

Stages 4-7 run per space (`rank`), so an interleaving test can rank the same analysed
query in its candidate space; 8-10 run in `search.selectors.search_page`.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, replace

from django.conf import settings

from catalog.models import Product
from catalog.selectors import category_nodes
from embeddings.models import EmbeddingSpace
from embeddings.spaces import space_active, space_encoder
from search.features import QueryFeatures, features_attached, query_features
from search.filters import SearchFilters
from search.interleaving import hits_alike, interleaved_ranking
from search.matching import MatchPlan, match_plan
from search.models import MerchandisingRule
from search.query import QueryAnalysis, query_analyse, query_is_sku, query_tokens
from search.ranker import LoadedRanker, ranker_live, ranker_rerank
from search.retrieval import RankedProduct, fuse, ranked_order, retrieve
from search.rules import (
    NO_RULES,
    RuleEffects,
    filter_category_id,
    rule_effects,
    rule_specificity,
    rules_for_search,
    rules_matching,
    rules_with_entries,
)
from search.selectors import (
    NO_FILTERS,
    SearchPage,
    query_similarity_floor,
    search_page,
    text_vector,
)
from search.sorting import Sort
from search.understanding import NOTHING_UNDERSTOOD, Understanding, query_understand
from search.variants import query_values

# "cheap": a match's score grows by up to this share the cheaper it is among the matches.
CHEAP_PREFERENCE = 0.5


@dataclass(frozen=True)
class TextQuery:
    """What stages 1-3 made of the shopper's query: the same for every space."""

    query: str
    analysis: QueryAnalysis
    understanding: Understanding
    filters: SearchFilters  # the shopper's filters and the understood ones
    scanned: SearchFilters  # the shopper's own: those the vector index scan applies
    plan: MatchPlan
    meaning: str  # what the text tower sees: the query without its price phrases
    features: QueryFeatures  # the query's part of the learned ranker's features


def text_query_prepare(
    *, query: str, filters: SearchFilters, correct: bool = True, understand: bool = True
) -> TextQuery:
    """Stages 1-3: analyse, understand, match. A SKU is taken as it is."""
    scanned = filters
    understanding = NOTHING_UNDERSTOOD
    understand = understand and not query_is_sku(query)
    tokens = tuple(query_tokens(query))
    if understand:
        understanding, filters = query_understand(query=query, tokens=tokens, filters=filters)
    analysis = query_analyse(query=query, correct=correct, skip=understanding.taken, tokens=tokens)
    if understand:
        understanding, filters = understanding.with_category(analysis, filters)
    # The query as typed, without its price phrases and "cheap" ("的半身裙" of "低于50的半身裙").
    meaning, last = "", 0
    for i in sorted(understanding.unspoken):
        token = analysis.tokens[i]
        meaning += query[last : token.start] + " "
        last = token.end
    meaning = " ".join((meaning + query[last:]).split())
    plan = match_plan(analysis, filters, understood=bool(understanding.taken))
    return TextQuery(
        query=query,
        analysis=analysis,
        understanding=understanding,
        filters=filters,
        scanned=scanned,
        plan=plan,
        meaning=meaning or query,
        features=query_features(analysis, understanding, counted=len(plan.match.counted)),
    )


def search_preload() -> None:
    """Load what a process's first text search loads (the active space's model, with torch;
    the query analysis' patterns and dictionaries), so that no shopper waits for it. It
    searches nothing and logs nothing."""
    prepared = text_query_prepare(query="红色 dress under 50", filters=NO_FILTERS)
    space_encoder(space_active()).encode_texts([prepared.meaning])


# `rank`'s default ranker: the live one (search.ranker.ranker_live).
LIVE = "live"


def rank(
    prepared: TextQuery,
    space: EmbeddingSpace,
    *,
    pinned: tuple[int, ...] = (),
    ranker: LoadedRanker | None | str = LIVE,
) -> list[RankedProduct]:
    """Stages 4-7 in `space`: the fused window, each row marked relevant or related, with
    its features; re-ranked by `ranker` (default: the live one; None: fusion alone)."""
    rows = retrieve(
        space=space,
        vector=text_vector(space, prepared.meaning),
        filters=prepared.filters,
        match=prepared.plan.match,
        pinned=pinned,
        # Understood filters narrow the vector window after the index scan: the scan stays
        # as fast as without them, and the word matches carry their recall.
        scanned=prepared.scanned,
    )
    rows = cut_off(fuse(rows), floor=query_similarity_floor(space, prepared.analysis))
    rows = features_attached(rerank(rows, prepared), prepared.features)
    return ranker_rerank(rows, ranker_live() if ranker == LIVE else ranker)


def cut_off(rows: list[RankedProduct], *, floor: float) -> list[RankedProduct]:
    """Which rows are matches (`relevant`); the others are the related products.

    - A query that is a product's SKU matches that product only.
    - Word matches are matches (pins are placed by the rules whatever they are).
    - A hit only its photos found must be about as similar to the query as the query's
      own word matches are: at least the SEARCH_VECTOR_MATCH_QUANTILE (median) of their
      similarities. Word matches all outside the vector window: none counts.
    - Without word matches: within the top of the window's similarities (the upper
      SEARCH_VECTOR_GAP share of the way from its median to its best).
    - Never under `floor`, the space's calibrated similarity floor for this query.
    """
    if any(row.sku_match for row in rows):
        return [replace(row, relevant=row.sku_match) for row in rows]
    bar = vector_match_bar(rows, floor=floor)
    return [
        replace(
            row,
            relevant=row.text_match or (row.similarity is not None and row.similarity >= bar),
        )
        for row in rows
    ]


def vector_match_bar(rows: list[RankedProduct], *, floor: float) -> float:
    """The similarity a photo-only hit needs to be a match (see `cut_off`)."""
    if any(row.text_match for row in rows):
        words = sorted(
            row.similarity for row in rows if row.text_match and row.similarity is not None
        )
        if not words:
            return float("inf")
        quantile = settings.SEARCH_VECTOR_MATCH_QUANTILE
        return max(floor, words[round(quantile * (len(words) - 1))])
    similarities = [row.similarity for row in rows if row.similarity is not None]
    if not similarities:
        return floor
    best, middle = max(similarities), statistics.median(similarities)
    return max(floor, best - (best - middle) * settings.SEARCH_VECTOR_GAP)


def rerank(rows: list[RankedProduct], prepared: TextQuery) -> list[RankedProduct]:
    """The re-ranking stage's first step: "cheap" moves cheaper matches up (the learned
    ranker follows, in `rank`, and sees the score this gives as its `fused` feature)."""
    if not prepared.understanding.cheap:
        return rows
    prices = sorted(row.price for row in rows if row.relevant and row.price is not None)
    if len(prices) < 2:
        return rows
    position = {price: i / (len(prices) - 1) for i, price in reversed(list(enumerate(prices)))}
    rows = [
        row.rescored(row.score * (1 + CHEAP_PREFERENCE * (1 - position[row.price])))
        if row.relevant and row.price is not None
        else row
        for row in rows
    ]
    return ranked_order(rows)


def product_search_by_text(
    *,
    query: str,
    filters: SearchFilters = NO_FILTERS,
    limit: int,
    offset: int = 0,
    sort: str = Sort.RELEVANCE,
    rules: RuleEffects | None = None,
    correct: bool = True,
    understand: bool = True,
    session: str = "",
    interleave: bool = True,
) -> SearchPage:
    """A text search as a shopper sees it: the stages above, then one page of it.

    `rules`: these merchandising rules instead of the active ones; `correct`: misspelt
    words also match as corrected; `understand`: price phrases, brands and category names
    become filters. While an interleaving test runs, some searches (by `session`, the
    front end's opaque key, and the query) merge the active and the candidate space's
    rankings, unless not `interleave` (previews show the active space alone)."""
    space = space_active()
    prepared = text_query_prepare(
        query=query, filters=filters, correct=correct, understand=understand
    )
    if rules is None:
        rules = rules_for_search(query=query, filters=prepared.filters)
    ranked = rank(prepared, space, pinned=rules.pinned_ids)
    interleaved = interleave and interleaved_ranking(
        space=space,
        ranked=ranked,
        rank=lambda in_space, ranker=LIVE: rank(
            prepared, in_space, pinned=rules.pinned_ids, ranker=ranker
        ),
        rules=rules,
        session=session,
        query=query,
        filters=prepared.filters,
        sort=sort,
    )
    window = interleaved.ranked if interleaved else ranked
    page = search_page(
        space=space,
        ranked=window,
        limit=limit,
        offset=offset,
        # The merged window has the rules applied already.
        rules=NO_RULES if interleaved else rules,
        sort=sort,
        filters=filters,  # what an empty page offers to remove; understood ones are chips
        related=True,
        nearest_categories=prepared.analysis.in_vocabulary,
        variant_filters=prepared.filters,
        looks_like=text_vector(space, prepared.meaning),
        words=query_values([token.text for token in prepared.analysis.tokens])
        + [form for term in prepared.analysis.terms for form in term.forms],
    )
    if interleaved:
        page = replace(
            page,
            interleaved_with=interleaved.candidate,
            teams=interleaved.teams_of([hit.product.pk for hit in page.results]),
            results=hits_alike(page.results, offset=offset),
        )
    synonyms = {t.word: list(t.synonyms) for t in prepared.analysis.terms if t.synonyms}
    shown = {hit.product.pk for hit in page.results}
    return replace(
        page,
        features={row.product_id: row.features for row in window if row.product_id in shown},
        synonyms=synonyms,
        corrected_query=prepared.analysis.corrected_query,
        understood=prepared.understanding.items,
        ignored_words=prepared.plan.ignored_words,
        matched_words=prepared.plan.matched_words,
    )


# --- merchandising rule preview (the admin) -----------------------------------------------


@dataclass(frozen=True)
class RulePreview:
    query: str
    applies: bool  # the rule's query and category match this search
    with_rule: SearchPage
    without_rule: SearchPage
    positions_without: dict[int, int]  # product id -> its position without the rule
    hidden: list[Product]  # what the rule hides from this query


def rule_preview(
    *, rule: MerchandisingRule, query: str, filters: SearchFilters = NO_FILTERS, limit: int = 24
) -> RulePreview:
    """The first page for `query` with the rule, if its query and category match (even if
    it is disabled or outside its time window), and the other active rules that apply,
    beside the page without the rule."""
    nodes = category_nodes() if filters.category_ids else None
    category_id = filter_category_id(filters, nodes) if nodes else None
    matching = rules_matching(query=query, category_id=category_id, nodes=nodes)
    others = [other for other in matching if other.pk != rule.pk]
    applies = any(
        candidate.pk == rule.pk
        for candidate in rules_matching(
            query=query, category_id=category_id, nodes=nodes, active_only=False
        )
    )
    (rule,) = rules_with_entries(MerchandisingRule.objects.filter(pk=rule.pk))
    with_rule = rule_effects(sorted([*others, rule], key=rule_specificity) if applies else others)
    without_rule = rule_effects(others)
    page_with = product_search_by_text(
        query=query, filters=filters, limit=limit, rules=with_rule, interleave=False
    )
    page_without = product_search_by_text(
        query=query, filters=filters, limit=limit, rules=without_rule, interleave=False
    )
    hidden_ids = with_rule.hidden - without_rule.hidden
    return RulePreview(
        query=query,
        applies=applies,
        with_rule=page_with,
        without_rule=page_without,
        positions_without={
            hit.product.pk: position
            for position, hit in enumerate(page_without.results, start=1)
            if not hit.related
        },
        hidden=list(Product.objects.filter(pk__in=hidden_ids).order_by("sku")),
    )
