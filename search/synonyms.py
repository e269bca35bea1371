"""Synonym sets: the words a shopper may use for the same thing widen the text match.

A query's words are matched against the enabled sets (one indexed lookup of the terms the
query may contain, search.terms.term_spans). Each matched span of the query becomes a
group: the product must contain the span or one of its synonyms, and every other word of
the query as before. "blue bag" with "bag -> handbag, backpack" matches products with
"blue" and one of "bag", "handbag", "backpack"; the ranking SQL takes the groups as
parameters (search.ranking.text_match_sql).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Q

from search.models import SynonymSet
from search.terms import has_word, term_key, term_spans

# Synonyms per matched span at most: each is one more term in the text query.
MAX_ALTERNATIVES = 16


@dataclass(frozen=True)
class SynonymExpansion:
    """A query with synonyms: its other words, and per matched span the span and its synonyms."""

    rest: str = ""  # the query's words outside the matched spans
    groups: tuple[tuple[str, ...], ...] = ()  # (span, synonym, synonym, ...) per span

    def __bool__(self) -> bool:
        return bool(self.groups)

    @property
    def applied(self) -> dict[str, list[str]]:
        """What the API shows: {"bag": ["handbag", "backpack"]}."""
        return {span: list(alternatives) for span, *alternatives in self.groups}


NO_SYNONYMS = SynonymExpansion()


# --- writes -------------------------------------------------------------------------------


@transaction.atomic
def synonym_set_save(*, synonym_set: SynonymSet) -> SynonymSet:
    """Validate (terms normalised, at least two of them) and save a synonym set."""
    synonym_set.full_clean()
    synonym_set.save()
    return synonym_set


def synonym_set_create(*, terms: Sequence[str], root: str = "", enabled: bool = True) -> SynonymSet:
    return synonym_set_save(synonym_set=SynonymSet(root=root, terms=list(terms), enabled=enabled))


@transaction.atomic
def synonym_sets_set_enabled(*, synonym_set_ids: Iterable[int], enabled: bool) -> int:
    return SynonymSet.objects.filter(pk__in=list(synonym_set_ids)).update(enabled=enabled)


# --- reads --------------------------------------------------------------------------------


def synonyms_expand(*, query: str) -> SynonymExpansion:
    """The query's synonym groups, from the enabled sets whose terms it contains."""
    spans = term_spans(query)
    if not spans:
        return NO_SYNONYMS
    candidates = list(spans)
    sets = SynonymSet.objects.filter(enabled=True).filter(
        Q(root="", terms__overlap=candidates) | Q(root__in=candidates)
    )
    return synonym_expansion(query=query, sets=sets.values_list("root", "terms"))


def synonym_expansion(*, query: str, sets: Iterable[tuple[str, Sequence[str]]]) -> SynonymExpansion:
    """Which spans of `query` have synonyms in `sets` ((root, terms) pairs), and which.

    Longer spans win over the shorter ones inside them ("t shirt" over "shirt"), then the
    leftmost; spans never overlap.
    """
    alternatives: dict[str, list[str]] = {}
    for root, terms in sets:
        found = {root: terms} if root else {term: [t for t in terms if t != term] for term in terms}
        for term, others in found.items():
            known = alternatives.setdefault(term, [])
            known.extend(t for t in others if t not in known and t != term and has_word(t))
    spans = term_spans(query)
    key = term_key(query)
    taken: list[tuple[int, int]] = []
    groups: list[tuple[int, tuple[str, ...]]] = []
    for term in sorted(alternatives, key=lambda t: (-len(t), t)):
        if not alternatives[term]:
            continue
        for start, end in spans.get(term, ()):
            if any(start < e and s < end for s, e in taken):
                continue
            taken.append((start, end))
            groups.append((start, (term, *alternatives[term][:MAX_ALTERNATIVES])))
    if not groups:
        return NO_SYNONYMS
    rest = key
    for start, end in sorted(taken, reverse=True):
        rest = rest[:start] + " " + rest[end:]
    return SynonymExpansion(
        rest=" ".join(rest.split()), groups=tuple(group for _, group in sorted(groups))
    )
