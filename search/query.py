"""Query analysis: what a text query matches, before ranking.

One step between what the shopper typed and the ranking SQL:
- Chinese words are segmented (jieba), so that each word's characters must stand
  together in a product's texts, not merely appear somewhere in them;
- words the catalog does not know are corrected against its vocabulary (search.typos):
  "stripped shirt" also matches as "striped shirt";
- whether any word is one the catalog knows (or a correction of one): a query of none
  ("qwerty zxcv") needs a clearly higher similarity to find products by its meaning.

The text tower always sees the query as typed; `match_texts` are the phrasings the text
match accepts (a product matching any of them), which search.ranking takes as a parameter.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import connection

from catalog.text import text_fold, text_segment, word_chunks, words_join
from search.typos import max_edits, speller_current


@dataclass(frozen=True)
class QueryAnalysis:
    query: str  # as typed
    match_texts: tuple[str, ...]  # phrasings the text match accepts: typed, segmented, corrected
    corrected_query: str | None  # the query with its corrections, when there were any
    known_words: tuple[str, ...]  # words (Chinese: jieba's) the catalog's texts contain
    corrections: tuple[tuple[str, str], ...]  # (typed word, vocabulary word)

    @property
    def in_vocabulary(self) -> bool:
        """Some word is one the catalog knows, or was corrected to one."""
        return bool(self.known_words or self.corrections)


def words_known(words: list[str]) -> set[str]:
    """The words that match at least one product's texts: one GIN probe per word."""
    if not words:
        return set()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT w FROM unnest(%s::text[]) w
            WHERE EXISTS (SELECT 1 FROM catalog_product p
                          WHERE p.search_document @@ product_search_query(w, false))
            """,
            [words],
        )
        return {row[0] for row in cursor.fetchall()}


def query_analyse(*, query: str, correct: bool = True) -> QueryAnalysis:
    """The words to match for `query`; with `correct`, unknown words get corrections."""
    chunks = word_chunks(query)
    words = list(dict.fromkeys(word for word, _ in chunks))
    known = words_known(words)
    corrections: dict[str, str] = {}
    if correct:
        speller = None
        for word in words:
            folded = text_fold(word)
            if word in known or not max_edits(folded):
                continue
            speller = speller or speller_current()
            if (fixed := speller.correct(folded)) is not None:
                corrections[word] = fixed
    corrected = (
        words_join([(corrections.get(word, word), chunk) for word, chunk in chunks])
        if corrections
        else None
    )
    texts = [query, text_segment(query)] + ([text_segment(corrected)] if corrected else [])
    return QueryAnalysis(
        query=query,
        match_texts=tuple(dict.fromkeys(t for t in texts if t.strip())),
        corrected_query=corrected,
        known_words=tuple(w for w in words if w in known),
        corrections=tuple(corrections.items()),
    )


def rest_corrected(rest: str, analysis: QueryAnalysis) -> str:
    """`rest` (words of the query, lower case, as search.terms keeps them) corrected."""
    fixes = {text_fold(typed): fixed for typed, fixed in analysis.corrections}
    return " ".join(fixes.get(text_fold(word), word) for word in rest.split())
