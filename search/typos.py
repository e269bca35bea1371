"""Typo correction against the catalog's own vocabulary, with rapidfuzz's edit distance.

Rules (Typesense's defaults, on our words): a Latin word of 4+ letters that the catalog
does not know is corrected to a title, brand or category word within one edit (two for
words of 8+ letters; an edit is an insertion, deletion, substitution or a swap of two
neighbours: "shrit" -> "shirt" is one), the nearest first, then the most frequent. Words
with digits (SKUs, sizes, numbers), Chinese and words the catalog knows are never touched.

Each process keeps the correctable words in memory (a list for rapidfuzz: nothing to
build, so reloading after a catalog change costs one query) and reloads them when
`VocabularyVersion` moved, checking at most every SEARCH_TYPO_REFRESH_SECONDS.
bench/typos.py measured rapidfuzz against symspellpy on the vocabulary of 100k products.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from django.conf import settings
from rapidfuzz import process
from rapidfuzz.distance import OSA

from catalog.text import is_latin_word
from search.models import VocabularyWord
from shop_search.db_routers import read_connection

MIN_LENGTH = 4  # shorter words are never corrected
TWO_EDITS_LENGTH = 8  # words this long may be two edits away
CORRECTION_KINDS = (
    VocabularyWord.Kind.TITLE,
    VocabularyWord.Kind.BRAND,
    VocabularyWord.Kind.CATEGORY,
)


def max_edits(word: str) -> int:
    """How many edits away a correction of `word` may be: 0 means never corrected."""
    if len(word) < MIN_LENGTH or not is_latin_word(word):
        return 0
    return 2 if len(word) >= TWO_EDITS_LENGTH else 1


@dataclass(frozen=True)
class Speller:
    words: list[str]  # Latin words of titles, brands and categories, and their stems
    frequency: dict[str, int]
    # A stem stands for the most frequent word it is the stem of: "sneaker" -> "sneakers".
    spelled: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_counts(cls, counts: dict[str, int], stems: dict[str, str] | None = None) -> Speller:
        """`counts`: products per word; `stems`: each word's English stem."""
        frequency = {w: n for w, n in counts.items() if is_latin_word(w)}
        spelled: dict[str, str] = {}
        for word, stem in (stems or {}).items():
            if word not in frequency or not stem or stem in frequency:
                continue
            if stem not in spelled or frequency[word] > frequency[spelled[stem]]:
                spelled[stem] = word
        for stem, word in spelled.items():
            frequency[stem] = frequency[word]
        return cls(sorted(frequency), frequency, spelled)

    def correct(self, word: str) -> str | None:
        """The vocabulary word `word` most likely stands for, or None (none near, or known).

        Stems are candidates too, so "sneeker" is one edit from "sneakers" (via "sneaker").
        """
        edits = max_edits(word)
        if not edits or word in self.frequency:
            return None
        matches = process.extract(
            word, self.words, scorer=OSA.distance, score_cutoff=edits, limit=None
        )
        if not matches:
            return None
        best = min(matches, key=lambda m: (m[1], -self.frequency[m[0]], m[0]))
        return self.spelled.get(best[0], best[0])


_lock = threading.Lock()
_cache: dict = {"key": None, "speller": Speller([], {}), "checked": float("-inf")}


def _vocabulary_key() -> tuple | None:
    # xmin: a version number written by a rolled-back transaction can come back with
    # other words (tests), the transaction id that wrote it cannot.
    with read_connection().cursor() as cursor:
        cursor.execute("SELECT version, xmin::text FROM search_vocabularyversion WHERE id = 1")
        row = cursor.fetchone()
    return tuple(row) if row else None


def speller_current() -> Speller:
    """This process's speller, reloaded when the vocabulary changed since it was loaded."""
    now = time.monotonic()
    if now - _cache["checked"] < settings.SEARCH_TYPO_REFRESH_SECONDS:
        return _cache["speller"]
    key = _vocabulary_key()
    with _lock:
        if key != _cache["key"]:
            counts: dict[str, int] = {}
            stems: dict[str, str] = {}
            with read_connection().cursor() as cursor:
                # The stems by the same Snowball stemmer as the products' documents.
                cursor.execute(
                    "SELECT word, frequency, (ts_lexize('english_stem', word))[1] "
                    "FROM search_vocabularyword WHERE kind = ANY(%s)",
                    [list(CORRECTION_KINDS)],
                )
                for word, frequency, stem in cursor.fetchall():
                    counts[word] = max(frequency, counts.get(word, 0))
                    if stem:
                        stems[word] = stem
            _cache.update(key=key, speller=Speller.from_counts(counts, stems))
        _cache["checked"] = now
        return _cache["speller"]
