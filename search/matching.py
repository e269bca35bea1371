"""The matching strategy: which of a query's words a word match must have.

Every word, when some product has them all (under the shopper's filters). When none has,
the words that cannot help go first, then the least selective, one at a time, until
products match, like Typesense's `drop_tokens_threshold` or Meilisearch's
`matchingStrategy: frequency`:

1. words no product contains in any form, even corrected ("wedding" in "red dress for a
   wedding"), and stop words ("a", "for", "的"): they never have to match;
2. then, while no product matches every word left, the word matching the most products
   ("red" before "dress" in "red wool dress" when no red wool dress exists), a word that
   names a category last.

Products that match more of the query's known words rank higher (search.retrieval), so a
red dress still comes before any other dress. Each check is one EXISTS probe on the GIN
index, at most one per word.
"""

from __future__ import annotations

from dataclasses import dataclass

from search.filters import SearchFilters
from search.query import QueryAnalysis, QueryTerm, term_match_sql, term_params
from search.retrieval import TextMatch
from shop_search.db_routers import read_connection


@dataclass(frozen=True)
class MatchPlan:
    match: TextMatch
    ignored_words: tuple[str, ...]  # words of the query that matching left out (not stop words)
    matched_words: tuple[str, ...]  # the words every word match has


def match_plan(
    analysis: QueryAnalysis, filters: SearchFilters, *, understood: bool = False
) -> MatchPlan:
    """The terms to require for `analysis` under `filters`, and the words left out.

    `understood`: some of the query's words were understood as filters (a brand, a
    price), so when no other word is one the catalog knows ("Acme", "anything under 50"),
    every product the filters keep is a match.
    """
    terms = analysis.terms
    known = [i for i, term in enumerate(terms) if term.known and not term.stop]
    if not known and all(term.stop for term in terms):
        known = [i for i, term in enumerate(terms) if term.known]  # "it", "the one"
    required = list(known)
    # One known word without filters matches products by definition: no probe needed.
    while (
        required
        and (filters or len(required) > 1)
        and not terms_match_any(terms, required, filters)
    ):
        required.remove(max(required, key=lambda i: _drop_order(terms[i], i)))
    ignored = [term.word for i, term in enumerate(terms) if i not in required and not term.stop]
    return MatchPlan(
        match=TextMatch(
            terms=terms,
            required=tuple(required),
            counted=tuple(known),
            sku=analysis.query,
            every_product=understood and not known and bool(filters),
        ),
        ignored_words=tuple(ignored),
        matched_words=tuple(terms[i].word for i in required),
    )


def _drop_order(term: QueryTerm, index: int) -> tuple:
    # The highest goes first: not a category's name, then the most products, then the last.
    return (not term.head_category_ids, term.products, index)


def terms_match_any(
    terms: tuple[QueryTerm, ...], required: list[int], filters: SearchFilters
) -> bool:
    """Whether some product under `filters` matches every term in `required`."""
    where, params = filters.sql("p")
    for i in required:
        params.update(term_params(i, terms[i]))
    condition = " AND ".join(term_match_sql(i) for i in required)
    with read_connection().cursor() as cursor:
        cursor.execute(
            f"SELECT EXISTS (SELECT 1 FROM catalog_product p WHERE {condition}{where})", params
        )
        return cursor.fetchone()[0]
