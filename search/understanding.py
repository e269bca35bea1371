"""Understanding, the second stage of a text search: what the query means beyond its words.

- Price phrases, English and Chinese ("under 50", "between 100 and 200", "低于50"): a price
  filter (search.prices finds them; a bare number, a SKU or a size is never a price).
- "cheap", "便宜": lower prices first among the matches (a soft preference, not a filter).
- A brand's name ("Northwind dress", "under armour shorts"): a brand filter. Brands are
  found before prices, so "Under Armour" stays a brand.
- An option value of some product ("red" of Colour, "xl" of Size), or a value of a
  configured facet (an attribute too) or its alias ("dark blue" for Navy):
  that option or attribute as a lenient filter (products the shop never described by it
  stay; search.filters.AttributeFilter), and the variant it names is the one shown.
- A word that is a category's head noun ("dresses", "mugs", "连衣裙", but not "leather" of
  "Leather Shoes"): that category, with its sub-categories, as a filter. When several
  words name categories, the last one does (the head of "dress shoes" is "shoes").

What was understood comes back (`Understood`: each filter with the words it came from), so
the page can show it as a chip the shopper removes (which searches again with
`understand=false` and the other chips as plain filters). The shopper's own filters always
win: an understood filter only fills one the shopper did not set. Its words are taken out
of the text match (price and brand words) or stay in it (a category's name matches its
products anyway, and so do option values).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from decimal import Decimal

from catalog.selectors import (
    category_nodes,
    category_subtree_ids_of,
    facet_config,
    facet_key,
    facet_value_keys,
)
from catalog.text import LATIN_WORD_RE, text_fold
from search.filters import AttributeFilter, SearchFilters
from search.prices import cheap_spans, price_phrases
from search.query import QueryAnalysis, QueryToken
from shop_search.db_routers import read_connection

MAX_BRAND_WORDS = 4  # brand names of up to this many words are looked for


@dataclass(frozen=True)
class Understood:
    kind: str  # "price", "cheap", "brand", "category", "attribute"
    words: str  # the words of the query it came from, as typed
    label: str  # what the shopper sees: "Under 50", "Brand: Acme", "Category: Dresses"
    params: dict[str, str] = field(default_factory=dict)  # as request filters


@dataclass(frozen=True)
class Understanding:
    items: tuple[Understood, ...] = ()
    taken: frozenset[int] = frozenset()  # tokens the text match leaves out
    unspoken: frozenset[int] = frozenset()  # price and "cheap" tokens: the text tower's too
    cheap: bool = False

    def with_category(self, analysis: QueryAnalysis, filters: SearchFilters) -> tuple:
        """(this with the category its words name, the filters with it), see the module."""
        if filters.category_ids:
            return self, filters
        # A word with synonyms was widened on purpose: it narrows to no category.
        named = [t for t in analysis.terms if t.head_category_ids and not t.stop and not t.synonyms]
        if not named:
            return self, filters
        term = named[-1]
        nodes = category_nodes()
        roots = [pk for pk in term.head_category_ids if pk in nodes]
        if not roots:
            return self, filters
        # The most general category it names: "shoes" names Shoes and Leather Shoes.
        top = min(roots, key=lambda pk: (_depth(nodes, pk), pk))
        item = Understood(
            kind="category",
            words=term.word,
            label=f"Category: {nodes[top].name}",
            params={"category": nodes[top].slug},
        )
        ids = tuple(category_subtree_ids_of(nodes, roots))
        return (
            replace(self, items=(*self.items, item)),
            replace(filters, category_ids=ids),
        )


NOTHING_UNDERSTOOD = Understanding()


def _depth(nodes, pk) -> int:
    depth = 0
    while nodes[pk].parent_id in nodes and depth < 32:
        pk, depth = nodes[pk].parent_id, depth + 1
    return depth


def query_understand(
    *, query: str, tokens: tuple[QueryToken, ...], filters: SearchFilters
) -> tuple[Understanding, SearchFilters]:
    """Brands, prices and "cheap" in `query`, and `filters` with what they add."""
    items: list[Understood] = []
    spans: list[tuple[int, int]] = []
    brand = None if filters.brand else brand_named(query, tokens)
    if brand is not None:
        name, start, end = brand
        spans.append((start, end))
        items.append(Understood("brand", query[start:end], f"Brand: {name}", {"brand": name}))
        filters = replace(filters, brand=name)
    own_price = filters.min_price is not None or filters.max_price is not None
    for phrase in price_phrases(query, protected=spans):
        spans.append((phrase.start, phrase.end))
        if own_price:
            continue  # the shopper's own price filter wins
        low = phrase.min_price if phrase.min_price is not None else filters.min_price
        high = phrase.max_price if phrase.max_price is not None else filters.max_price
        if low is not None and high is not None and low > high:
            continue  # contradicts an earlier phrase ("over 50 under 20"): the first holds
        filters = replace(filters, min_price=low, max_price=high)
        params = {
            name: str(value)
            for name, value in (("min_price", phrase.min_price), ("max_price", phrase.max_price))
            if value is not None
        }
        label = price_label(phrase.min_price, phrase.max_price)
        items.append(Understood("price", phrase.text, label, params))
    cheap = cheap_spans(query, protected=spans)
    if cheap:
        spans += cheap
        words = " ".join(query[start:end] for start, end in cheap)
        items.append(Understood("cheap", words, "Lower prices first"))
    for name, label, start, end in facet_values_named(query, tokens, spans, filters):
        words = query[start:end]
        items.append(Understood("attribute", words, f"{label}: {words}", {f"attr.{name}": words}))
        keys = facet_value_keys(name, [words])
        attribute = AttributeFilter(name, keys, (words,), lenient=True)
        filters = replace(filters, attributes=(*filters.attributes, attribute))
    understanding = Understanding(
        items=tuple(items),
        taken=_tokens_within(tokens, spans),
        unspoken=_tokens_within(tokens, spans[1:] if brand is not None else spans),
        cheap=bool(cheap),
    )
    return understanding, filters


def _tokens_within(tokens: tuple[QueryToken, ...], spans: list[tuple[int, int]]) -> frozenset:
    return frozenset(
        i
        for i, token in enumerate(tokens)
        if any(start < token.end and token.start < end for start, end in spans)
    )


def price_label(low: Decimal | None, high: Decimal | None) -> str:
    """ "Under 40", "Over 99.50", "100 to 200": whole amounts without cents."""
    if low is not None and high is not None:
        return f"{_amount(low)} to {_amount(high)}" if low != high else _amount(low)
    if high is not None:
        return f"Under {_amount(high)}"
    return f"Over {_amount(low)}"


def _amount(value: Decimal) -> str:
    return f"{value:,.0f}" if value == value.to_integral_value() else f"{value:,.2f}"


def brand_named(query: str, tokens: tuple[QueryToken, ...]) -> tuple[str, int, int] | None:
    """(brand, start, end) of the longest run of the query's words that is a brand's whole
    name, compared by words ("maple & moss" and "Maple Moss" are "Maple & Moss")."""
    runs: dict[str, tuple[int, int]] = {}
    for i in range(len(tokens)):
        for j in range(i, min(i + MAX_BRAND_WORDS, len(tokens))):
            key = " ".join(LATIN_WORD_RE.findall(text_fold(query[tokens[i].start : tokens[j].end])))
            if key:
                runs.setdefault(key, (tokens[i].start, tokens[j].end))
    if not runs:
        return None
    with read_connection().cursor() as cursor:
        # One probe of the brand-key index per run of words (LATERAL ... LIMIT 1; no ORDER
        # BY, which would walk the brand index instead): with many runs the planner would
        # otherwise read every product's brand.
        cursor.execute(
            """SELECT run, brand FROM unnest(%s::text[]) run
               CROSS JOIN LATERAL (
                   SELECT brand FROM catalog_product
                   WHERE shop_search_brand_key(brand) = run AND brand <> ''
                         AND status = 'active'
                   LIMIT 1
               ) named""",
            [list(runs)],
        )
        found = cursor.fetchall()
    if not found:
        return None
    key, brand = max(found, key=lambda row: (len(row[0]), -runs[row[0]][0]))
    start, end = runs[key]
    return brand, start, end


def facet_values_named(
    query: str, tokens: tuple[QueryToken, ...], taken: list[tuple[int, int]], filters
) -> list[tuple[str, str, int, int]]:
    """(facet name, its label, start, end) of each run of one or two of the query's words
    (outside `taken`) that is an option value of some product ("red" of Colour), or a
    value or alias of a configured facet; the longest run first, each word in one at most,
    a facet named once, never one the shopper filters by."""
    config = facet_config()
    own = {attribute.name for attribute in filters.attributes}
    free = [t for t in tokens if not any(s < t.end and t.start < e for s, e in taken)]
    runs = [(t.start, t.end) for t in free if len(t.text) > 1 or t.text.isdigit()]
    runs += [(a.start, b.end) for a, b in zip(free, free[1:], strict=False)]
    candidates: dict[str, tuple[int, int]] = {}
    for start, end in runs:
        words = " ".join(query[start:end].lower().split())
        candidates.setdefault(facet_key("", words), (start, end))  # "=red": any option
        for name in config.names:
            value = config.aliases.get(name, {}).get(words, words)
            candidates.setdefault(facet_key(name, value), (start, end))
    with read_connection().cursor() as cursor:
        # One probe of the facet-key index per candidate; a bare option value gets the
        # option's name from the first product that has it.
        cursor.execute(
            """SELECT k, named.name FROM unnest(%s::text[]) k
               CROSS JOIN LATERAL (
                   SELECT id, options FROM catalog_product WHERE facet_keys @> ARRAY[k] LIMIT 1
               ) p
               LEFT JOIN LATERAL (
                   SELECT o ->> 'name' AS name FROM jsonb_array_elements(p.options) o
                   WHERE k LIKE '=%%' AND EXISTS (
                       SELECT 1 FROM jsonb_array_elements_text(o -> 'values') v
                       WHERE '=' || lower(trim(v)) = k)
                   LIMIT 1
               ) named ON true""",
            [list(candidates)],
        )
        found = []
        for key, option in cursor.fetchall():
            if key.startswith("="):
                name = facet_key(option) if option else ""
            else:
                name = key.partition("=")[0]
            if name and name not in own:
                found.append((name, config.labels.get(name, option or name), *candidates[key]))
    chosen: list[tuple[str, str, int, int]] = []
    for name, label, start, end in sorted(found, key=lambda f: (f[2] - f[3], f[2])):
        if name in {c[0] for c in chosen} or any(s < end and start < e for _, _, s, e in chosen):
            continue
        chosen.append((name, label, start, end))
    return sorted(chosen, key=lambda c: c[2])
