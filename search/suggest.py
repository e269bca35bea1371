"""Suggestions as you type: popular queries, titles, brands and categories by prefix.

Every word typed must be the start of a word of the suggestion ("red str" -> "Red striped
T-Shirt"); Chinese is segmented by jieba and matched by characters ("红色条" -> 红色 +
条 -> "红色条纹T恤"). Suggestions are ranked by popularity (the products, or searches,
behind them), then those that start with what was typed, then the shorter, then the older.

One bounded statement: the longest typed word picks the vocabulary's most frequent words
it starts (a range of the prefix index), and each of those words its most popular
suggestions (the (word, count DESC) index of SuggestionWord), filtered by the other
typed words. Nothing scans the suggestions; bench/suggest.py measures it on 100k products.

Popular queries: until a search log exists, each title gives a catalog stand-in (its
first and last word, "red t-shirt", counted by products: search.vocabulary). A search log
plugs in by turning those off (SEARCH_SUGGEST_CATALOG_QUERIES = False, then
`manage.py rebuild_vocabulary`) and storing its popular successful queries with
`suggestion_queries_store(counts=...)`, e.g. from a periodic task.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from django.db import connection, transaction

from catalog.text import LATIN_WORD_RE, has_cjk, text_fold, word_chunks
from search.models import Suggestion, SuggestionWord, VocabularyWord
from search.vocabulary import MAX_PHRASE, MAX_WORD, phrase_key, suggestion_words
from shop_search.db_routers import read_connection

# Vocabulary words the longest typed word is taken to be the start of, most frequent first.
CANDIDATE_WORDS = 16
MAX_TYPED_WORDS = 8


@dataclass(frozen=True)
class SuggestionHit:
    text: str
    kind: str  # query, title, brand, category
    count: int  # products (titles, brands, categories) or searches (queries) behind it


def typed_words(prefix: str) -> list[str]:
    """The words of what was typed, folded: Latin ones split at punctuation, Chinese by jieba."""
    words: list[str] = []
    for word, _ in word_chunks(prefix):
        folded = text_fold(word)
        words.extend([folded] if has_cjk(folded) else LATIN_WORD_RE.findall(folded))
    return list(dict.fromkeys(w[:MAX_WORD] for w in words))[:MAX_TYPED_WORDS]


def _like(prefix: str) -> str:
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


def suggestions_for_prefix(*, prefix: str, limit: int) -> list[SuggestionHit]:
    """Completions of `prefix`, the most popular first (see the module's docstring)."""
    words = typed_words(prefix)
    if not words:
        return []
    anchor = max(words, key=len)  # the most selective; every other one filters
    others = [_like(w) for w in words if w != anchor]
    sql = f"""
        WITH candidates AS (
            SELECT word FROM search_vocabularyword
            WHERE word LIKE %(anchor)s AND kind <> '{VocabularyWord.Kind.SKU}'
            GROUP BY word
            ORDER BY max(frequency) DESC, word
            LIMIT %(candidates)s
        ), hits AS (
            SELECT DISTINCT s.id, s.text, s.kind, s.count, s.key
            FROM candidates c
            CROSS JOIN LATERAL (
                SELECT sw.suggestion_id FROM search_suggestionword sw
                JOIN search_suggestion s ON s.id = sw.suggestion_id
                WHERE sw.word = c.word
                  AND NOT EXISTS (
                      SELECT 1 FROM unnest(%(others)s::text[]) o
                      WHERE NOT EXISTS (SELECT 1 FROM unnest(s.words) w WHERE w LIKE o))
                ORDER BY sw.count DESC, sw.first DESC, sw.length, sw.suggestion_id
                LIMIT %(limit)s
            ) top
            JOIN search_suggestion s ON s.id = top.suggestion_id
        )
        SELECT text, kind, count FROM hits
        ORDER BY count DESC, key LIKE %(whole)s DESC, length(text), id
        LIMIT %(limit)s
    """
    params = {
        "anchor": _like(anchor),
        "others": others,
        "candidates": CANDIDATE_WORDS,
        "limit": limit,
        "whole": _like(phrase_key(prefix)),
    }
    with read_connection().cursor() as cursor:
        cursor.execute(sql, params)
        return [SuggestionHit(text, kind, count) for text, kind, count in cursor.fetchall()]


@transaction.atomic
def suggestion_queries_store(*, counts: Mapping[str, int]) -> int:
    """Make these the query suggestions (query -> successful searches); returns how many.

    Where a search log's popular queries plug in. Their words join the vocabulary as
    searchable words only through the catalog: queries are found by the catalog words
    they contain.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM search_suggestionword WHERE suggestion_id IN "
            "(SELECT id FROM search_suggestion WHERE kind = %s)",
            [Suggestion.Kind.QUERY],
        )
    Suggestion.objects.filter(kind=Suggestion.Kind.QUERY).delete()
    merged: dict[str, tuple[str, int]] = {}
    for query, count in counts.items():
        text = " ".join(query.split())[:MAX_PHRASE]
        if text and count > 0:
            key = phrase_key(text)
            shown, total = merged.get(key, (text, 0))
            merged[key] = (shown, total + count)
    created = Suggestion.objects.bulk_create(
        Suggestion(
            kind=Suggestion.Kind.QUERY,
            key=key,
            text=text,
            count=count,
            words=suggestion_words(text),
        )
        for key, (text, count) in merged.items()
    )
    SuggestionWord.objects.bulk_create(
        SuggestionWord(suggestion=s, word=word, count=s.count, first=n == 0, length=len(s.text))
        for s in created
        for n, word in enumerate(s.words)
    )
    return len(created)
