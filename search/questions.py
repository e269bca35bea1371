"""What a shopper's question about a product photo asks: the question classifier of /api/ask/.

Types: describe the photo, find products by the text, one attribute's value (colour, pattern,
material, category, audience), yes or no about an attribute value, and "unsupported" (prices,
sizes, counts: what CLIP cannot see; and any language but English and Chinese, never guessed).

Keywords in both languages decide first (search/data/questions/keywords.json); a question they
leave open goes to the type of its nearest prototype questions (prototypes.tsv) on the active
space's text tower, encoded once per space and cached in-process. The catalog's own values
(`ValueLexicon`) say which attribute a yes/no question or a bare noun phrase names.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embeddings.models import EmbeddingSpace
from embeddings.spaces import space_encoder

DATA = Path(__file__).parent / "data" / "questions"
KEYWORDS = json.loads((DATA / "keywords.json").read_text(encoding="utf-8"))

TYPES = ("describe", "find", "attribute", "yes_no", "unsupported")
ATTRIBUTES = ("colour", "pattern", "material", "category", "audience")
# A prototype decides only when it is this much nearer than the nearest of another type:
# an untrained text tower puts every question near every prototype.
PROTOTYPE_MARGIN = 0.05

_HAN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_WORD = re.compile(r"[a-z]+(?:['’-][a-z]+)*")


@dataclass(frozen=True)
class Question:
    type: str  # one of TYPES
    lang: str  # "en", "zh", or "" (a third language: always unsupported)
    attribute: str = ""  # attribute and yes_no: which one (ATTRIBUTES)
    value: str = ""  # yes_no: the catalog value it names, as stored
    text: str = ""  # find: the words to search for
    by: str = "keywords"  # what decided: "keywords", "values", "prototypes", "language"


@dataclass(frozen=True)
class ValueLexicon:
    """The catalog's attribute values by the words that name them, longest first."""

    names: tuple[tuple[str, str, str], ...] = ()  # (surface, attribute, value)

    @classmethod
    def build(
        cls, values: Mapping[str, Iterable[str]], label: Callable[[str, str, str], str]
    ) -> ValueLexicon:
        """From each attribute's values and `label(attribute, value, lang)` (the value as
        shoppers say it), with keywords.json's aliases for the values they know."""
        aliases = {key.lower(): names for key, names in KEYWORDS["value_aliases"].items()}
        found: dict[str, tuple[str, str]] = {}
        for attribute, names in values.items():
            for value in names:
                surfaces = {value, label(attribute, value, "en"), label(attribute, value, "zh")}
                for lang_names in aliases.get(value.lower(), {}).values():
                    surfaces.update(lang_names)
                for surface in surfaces:
                    surface = " ".join(surface.lower().split())
                    if surface:
                        found.setdefault(surface, (attribute, value))
        ordered = sorted(found.items(), key=lambda item: (-len(item[0]), item[0]))
        return cls(tuple((surface, a, v) for surface, (a, v) in ordered))

    def named(self, question: str) -> list[tuple[int, str, str]]:
        """(position, attribute, value) of each value the question names, in order; a longer
        name wins over the shorter ones inside it ("leather shoes" over "leather")."""
        text = " ".join(question.lower().split())
        taken = [False] * len(text)
        hits = []
        for surface, attribute, value in self.names:
            for match in re.finditer(_surface_pattern(surface), text):
                start, end = match.span()
                if not any(taken[start:end]):
                    taken[start:end] = [True] * (end - start)
                    hits.append((start, attribute, value))
        return sorted(hits)

    def english_words(self) -> set[str]:
        return {w for surface, _, _ in self.names if surface.isascii() for w in surface.split()}


def _surface_pattern(surface: str) -> str:
    escaped = re.escape(surface)
    # English names are whole words; Chinese ones have no spaces to bound them.
    return escaped if _HAN.search(surface) else rf"(?<![a-z]){escaped}(?![a-z])"


def question_language(question: str, lexicon: ValueLexicon | None = None) -> str:
    """ "zh", "en", or "" for anything else: letters of another script (kana, hangul,
    Cyrillic, accented Latin) or Latin words that are more another language's than English's
    (English: common words, the keywords, and the names of the lexicon's values)."""
    letters = [ch for ch in question if ch.isalpha()]
    if any(not ch.isascii() and not _HAN.match(ch) for ch in letters):
        return ""
    if _HAN.search(question):
        return "zh"
    words = _WORD.findall(question.lower())
    english = _ENGLISH | (lexicon.english_words() if lexicon else set())
    ours = sum(word in english for word in words)
    theirs = sum(word in _FOREIGN for word in words)
    return "en" if ours and ours > theirs else ""


def _keyword_words() -> set[str]:
    words = set(KEYWORDS["english_words"])
    for section in ("unsupported", "describe", "find"):
        words.update(w for phrase in KEYWORDS[section]["en"] for w in phrase.split())
    for names in KEYWORDS["attribute"].values():
        words.update(w for phrase in names["en"] for w in phrase.split())
    for aliases in KEYWORDS["value_aliases"].values():
        words.update(w for phrase in aliases["en"] for w in phrase.split())
    return words


_ENGLISH = frozenset(_keyword_words())
_FOREIGN = frozenset(KEYWORDS["foreign_words"])


def _says(text: str, lang: str, phrases: Iterable[str]) -> bool:
    if lang == "zh":
        return any(phrase in text for phrase in phrases)
    return any(re.search(rf"(?<![a-z']){re.escape(p)}(?![a-z'])", text) for p in phrases)


def question_classify(
    question: str, *, lexicon: ValueLexicon, space: EmbeddingSpace | None = None
) -> Question:
    """The question's type, language and what it names. Without `space`, questions that no
    keyword or value places are unsupported rather than sent to the prototypes."""
    lang = question_language(question, lexicon)
    if not lang:
        return Question("unsupported", "", by="language")
    text = " ".join(question.lower().replace("’", "'").split())
    words = KEYWORDS
    if _says(text, lang, words["unsupported"][lang]):
        return Question("unsupported", lang)
    if _says(text, lang, words["describe"][lang]):
        return Question("describe", lang)
    if _says(text, lang, words["find"][lang]):
        return Question("find", lang, text=question.strip())
    named = lexicon.named(text)
    asked = [n for n, phrases in words["attribute"].items() if _says(text, lang, phrases[lang])]
    if named and _is_yes_no(text, lang) and not _says(text, lang, words["or"][lang]):
        # "Is this dress striped?": the value that is not the thing itself is the question.
        position, attribute, value = min(named, key=lambda n: (n[1] == "category", n[0]))
        return Question("yes_no", lang, attribute=attribute, value=value)
    if asked:
        # The most specific first: "what is this made of" is material, not category.
        return Question("attribute", lang, attribute=min(asked, key=ATTRIBUTES.index))
    if named and _is_yes_no(text, lang):  # "men or women?": the attribute of the choice
        return Question("attribute", lang, attribute=named[0][1])
    if named and not _is_question(question, text, lang):
        return Question("find", lang, text=question.strip(), by="values")  # "red cotton t-shirt"
    if space is not None:
        return _nearest_prototype(space, question, lang)
    return Question("unsupported", lang)


def _is_yes_no(text: str, lang: str) -> bool:
    if lang == "zh":
        ending = text.rstrip("?？。.!！ ~")[-1:]
        return ending in KEYWORDS["yes_no"]["zh_endings"] or _says(
            text, lang, KEYWORDS["yes_no"]["zh"]
        )
    first = _WORD.findall(text)[:1]
    return bool(first) and first[0] in KEYWORDS["yes_no"]["en"]


def _is_question(question: str, text: str, lang: str) -> bool:
    asks = ("what", "which", "who", "how", "why", "where", "when") if lang == "en" else ("什么",)
    return "?" in question or "？" in question or _is_yes_no(text, lang) or _says(text, lang, asks)


# --- prototypes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Prototype:
    type: str
    attribute: str
    lang: str
    question: str


def questions_read(path: Path) -> list[Prototype]:
    """The lines of a questions file: type<TAB>attribute or -<TAB>lang<TAB>question."""
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 4 or fields[0] not in TYPES:
            raise ValueError(f"{path.name}:{number}: expected type, attribute, lang, question")
        kind, attribute, lang, text = fields
        rows.append(Prototype(kind, "" if attribute == "-" else attribute, lang, text))
    return rows


PROTOTYPES = questions_read(DATA / "prototypes.tsv")
_prototype_vectors: dict[tuple[int, str], np.ndarray] = {}
_prototype_lock = threading.Lock()


def prototype_vectors(space: EmbeddingSpace) -> np.ndarray:
    """The prototypes on the space's text tower, encoded in one batch once per process."""
    key = (space.pk, space.name)
    with _prototype_lock:
        if key not in _prototype_vectors:
            texts = [p.question for p in PROTOTYPES]
            _prototype_vectors[key] = np.asarray(
                space_encoder(space).encode_texts(texts), dtype=np.float32
            )
        return _prototype_vectors[key]


def _nearest_prototype(space: EmbeddingSpace, question: str, lang: str) -> Question:
    vector = np.asarray(space_encoder(space).encode_texts([question])[0], dtype=np.float32)
    similarity = prototype_vectors(space) @ vector
    order = np.argsort(-similarity)
    best = PROTOTYPES[order[0]]
    other = next((i for i in order if PROTOTYPES[i].type != best.type), None)
    if other is not None and similarity[order[0]] - similarity[other] < PROTOTYPE_MARGIN:
        return Question("unsupported", lang, by="prototypes")  # too close to call: no guess
    if best.type == "yes_no":  # a yes/no question that names no catalog value
        return Question("unsupported", lang, by="prototypes")
    return Question(
        best.type,
        lang,
        attribute=best.attribute,
        text=question.strip() if best.type == "find" else "",
        by="prototypes",
    )
