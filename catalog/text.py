"""How the shop cuts text into words, the same way everywhere: Django-free.

- Unicode NFKC, lower case, Latin accents folded ("Café" -> "cafe") as the SQL
  of `search_document` (catalog migration 0006), so a word counted here is a lexeme there.
- Latin words split at punctuation ("t-shirt" -> "t", "shirt", and joined "tshirt").
- Chinese (and Japanese, Korean) runs segmented into words by jieba, the segmenter the
  Chinese CLIP toolkits use: "红色条纹连衣裙" -> 红色, 条纹, 连衣裙.

Used by the search app (vocabulary, typo correction, suggestions, query analysis) and by
training's word dropout (embeddings.training.data), so both see the same words; and
`text_printable`, a shopper's text as staff read it (admin pages, CSV exports).
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from functools import lru_cache

# Accented Latin letters and what they fold to; the SQL function shop_search_fold (catalog
# migration 0006) has a frozen copy of this table, and a test checks they agree.
FOLD_FROM = (
    "àáâãäåāăąçćĉċčďđèéêëēĕėęěĝğġģĥħìíîïĩīĭįıĵķĺļľŀłñńņňòóôõöøōŏőŕŗřśŝşšţťŧùúûüũūŭůűųŵýÿŷźżž"
    "ÀÁÂÃÄÅĀĂĄÇĆĈĊČĎĐÈÉÊËĒĔĖĘĚĜĞĠĢĤĦÌÍÎÏĨĪĬĮİĴĶĹĻĽĿŁÑŃŅŇÒÓÔÕÖØŌŎŐŔŖŘŚŜŞŠŢŤŦÙÚÛÜŨŪŬŮŰŲŴÝŸŶŹŻŽ"
)
FOLD_TO = (
    "aaaaaaaaacccccddeeeeeeeeegggghhiiiiiiiiijklllllnnnnooooooooorrrsssstttuuuuuuuuuuwyyyzzz"
    "aaaaaaaaacccccddeeeeeeeeegggghhiiiiiiiiijklllllnnnnooooooooorrrsssstttuuuuuuuuuuwyyyzzz"
)
LIGATURES = {"ß": "ss", "æ": "ae", "œ": "oe", "Æ": "ae", "Œ": "oe"}
_FOLD = str.maketrans({**dict(zip(FOLD_FROM, FOLD_TO, strict=True)), **LIGATURES})

# The same ranges as the SQL (catalog migration 0003): Kana, CJK ideographs, Hangul.
CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
CJK_RE = re.compile(f"[{CJK}]")
CJK_RUN_RE = re.compile(f"[{CJK}]+")
# A Latin word: letters and digits; anything else separates words (as in the SQL).
LATIN_WORD_RE = re.compile(r"[^\W_]+")
# jieba keeps mixed tokens like "T恤" together; such a token counts as a Chinese word.
_HAS_LATIN = re.compile(r"[^\W\d_]", re.ASCII)

_jieba_lock = threading.Lock()


def text_fold(text: str) -> str:
    """NFKC, lower case, Latin accents folded: "Café" -> "cafe", "ｓｔｒｉ" -> "stri"."""
    return unicodedata.normalize("NFKC", text).translate(_FOLD).lower().translate(_FOLD)


# Control characters (C0, DEL, C1) and the bidi embeddings, overrides, isolates and marks:
# in a shopper's text they only ever reorder or colour what staff read (U+202E reverses
# the rest of a line, ESC starts a terminal colour). Whitespace controls become a space.
_BIDI_CONTROLS = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_UNPRINTABLE = str.maketrans(
    {
        **{
            code: " " if chr(code).isspace() else None
            for code in (*range(0x20), *range(0x7F, 0xA0))
        },
        **dict.fromkeys(map(ord, _BIDI_CONTROLS)),
    }
)


def text_printable(text: str) -> str:
    """`text` without control characters or bidi controls (whitespace ones as a space):
    "a\u202edcba" -> "adcba", "\x1b[31mred" -> "[31mred"."""
    return text.translate(_UNPRINTABLE)


def has_cjk(text: str) -> bool:
    return bool(CJK_RE.search(text))


@lru_cache(maxsize=1)
def _jieba():
    with _jieba_lock:
        import jieba

        jieba.setLogLevel(logging.WARNING)  # it logs its dictionary loading at INFO
        jieba.initialize()
        return jieba


def chinese_words(text: str) -> list[str]:
    """jieba's words of a text that contains CJK characters (whitespace dropped)."""
    return [w for w in _jieba().lcut(text) if w.strip()]


def chinese_word_spans(text: str) -> list[tuple[str, int, int]]:
    """jieba's words of `text` with where each lies in it: (word, start, end)."""
    return [(w, start, end) for w, start, end in _jieba().tokenize(text) if w.strip()]


def word_chunks(text: str) -> list[tuple[str, int]]:
    """The words of `text` and the whitespace-separated chunk each came from.

    Latin chunks stay whole ("t-shirt"); a chunk with CJK characters is segmented by
    jieba ("红色条纹T恤" -> 红色, 条纹, T恤). Words of one chunk join without a space.
    """
    words = []
    for chunk_index, chunk in enumerate(text.split()):
        if has_cjk(chunk):
            words.extend((word, chunk_index) for word in chinese_words(chunk))
        else:
            words.append((chunk, chunk_index))
    return words


def words_join(words: list[tuple[str, int]]) -> str:
    """`word_chunks` output (or a subset of it) back to text: a space between chunks only."""
    text, last = "", None
    for word, chunk in words:
        text += word if last is None or chunk == last else " " + word
        last = chunk
    return text


def text_segment(text: str) -> str:
    """`text` with its Chinese words separated by spaces: "红色连衣裙" -> "红色 连衣裙".

    The SQL query function treats each space-separated CJK run as a word whose characters
    must stand together, so segmenting first is what makes Chinese match by words.
    """
    if not has_cjk(text):
        return " ".join(text.split())
    return " ".join(word for word, _ in word_chunks(text))


def text_words(text: str) -> list[str]:
    """The search words of `text`, folded, in order, with repeats: what the vocabulary counts.

    Latin words split at punctuation, with hyphenated ones also joined ("t-shirt" -> t,
    shirt, tshirt, as `search_document` stores them); Chinese words by jieba, lower case
    ("T恤" -> "t恤").
    """
    words: list[str] = []
    # Segmented before folding: jieba's dictionary knows "T恤", not "t恤".
    for word, _ in word_chunks(text):
        chunk = text_fold(word)
        if has_cjk(chunk):
            words.append(chunk)
            continue
        pieces = LATIN_WORD_RE.findall(chunk)
        words.extend(pieces)
        if len(pieces) > 1:
            words.append("".join(pieces))
    return words


def is_latin_word(word: str) -> bool:
    """Letters only, no digits and no CJK: the only words typo correction touches."""
    return word.isalpha() and not has_cjk(word) and bool(_HAS_LATIN.search(word))
