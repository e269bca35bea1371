"""How queries, synonym terms and rule queries are compared: the same words on both sides.

Lower case, split into words at spaces and punctuation ("T-Shirt!" -> "t-shirt": a
hyphen, apostrophe, dot or ampersand inside a word stays). Chinese, Japanese and Korean
have no spaces, so a term containing those characters is found inside a word too
("t恤" in "红色t恤"); other terms match whole words only.
"""

from __future__ import annotations

import re

WORD = re.compile(r"\w+(?:[-'’.&]\w+)*")
CJK_RANGES = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
CJK = re.compile(f"[{CJK_RANGES}]")
NON_CJK_WORD = re.compile(f"[^\\W{CJK_RANGES}]+")  # word characters that are not CJK
# Terms of up to this many words are looked up (longer ones are refused), and pieces of
# up to this many characters inside a Chinese word.
MAX_TERM_WORDS = 4
MAX_CJK_TERM_CHARS = 8


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def term_key(text: str) -> str:
    """The normalised form of a term or query: its words, one space apart."""
    return " ".join(words(text))


def has_word(text: str) -> bool:
    return any(character.isalnum() for character in text)


def term_spans(text: str) -> dict[str, list[tuple[int, int]]]:
    """Every term `text` may contain, with where it lies in `term_key(text)`.

    Runs of up to MAX_TERM_WORDS whole words; inside a word with CJK characters, every
    piece with a CJK character of up to MAX_CJK_TERM_CHARS characters, and its Latin runs.
    """
    key = term_key(text)
    starts = [match.span() for match in re.finditer(r"\S+", key)]
    spans: dict[str, list[tuple[int, int]]] = {}

    def add(start: int, end: int) -> None:
        found = spans.setdefault(key[start:end], [])
        if (start, end) not in found:
            found.append((start, end))

    for i in range(len(starts)):
        for j in range(i, min(i + MAX_TERM_WORDS, len(starts))):
            add(starts[i][0], starts[j][1])
    for start, end in starts:
        word = key[start:end]
        if not CJK.search(word):
            continue
        for match in NON_CJK_WORD.finditer(word):
            add(start + match.start(), start + match.end())
        for i in range(len(word)):
            for j in range(i + 1, min(i + MAX_CJK_TERM_CHARS, len(word)) + 1):
                if CJK.search(word[i:j]):
                    add(start + i, start + j)
    return spans


def term_problem(term: str) -> str | None:
    """Why `term` could never match a query, or None."""
    if not has_word(term):
        return f"“{term}” has no letters or digits."
    if len(words(term)) > MAX_TERM_WORDS:
        return f"“{term}” has more than {MAX_TERM_WORDS} words: no query is matched by it."
    return None
