"""Merchandising rules: pin, hide, boost or bury products for a query and/or a category.

A search looks up the rules that apply to it (`rules_for_search`: enabled, inside their
time window, their query and category matching; one indexed query), and their effects
are applied over the whole ranked window, never to one page:

- the pinned products join the ranking query itself (search.ranking's `pin` list, which
  also applies the shopper's filters), so a pin works whether the query found the product
  or not;
- `rules_apply` then drops hidden products, multiplies (boost) or divides (bury) the fused
  score of products by brand, category or stock and re-orders, and puts pinned products
  at their positions. Paging and facets come after, so every page agrees.

Several rules may apply: hides and boosts add up; for pins, the more specific rule wins a
position (exact query, then more words, then a category, then the older rule) and the
other product takes the next free one. Pins hold in the relevance order only: a shopper
who sorts by price gets price order, pinned products included (search.sorting).
A pin or hide whose product was deleted is skipped here and shown as broken in the admin.
A product hidden by a rule that applies to every search is hidden from similar products
and its own page too (`products_hidden_everywhere`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from django.contrib.postgres.expressions import ArraySubquery
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import OuterRef, Q
from django.db.models.functions import JSONObject
from django.utils import timezone

from catalog.models import Category, Product
from catalog.selectors import CategoryNode, category_ancestor_ids, category_nodes
from search.filters import SearchFilters
from search.models import MerchandisingRule, RuleBoost, RuleProduct
from search.retrieval import RankedProduct, ranked_order
from search.terms import term_key, term_spans, words


@dataclass(frozen=True)
class Boost:
    kind: str  # RuleBoost.Kind
    value: str | int | None  # the brand, or the category id
    factor: float  # the fused score is multiplied by it: above 1 boosts, below 1 buries


@dataclass(frozen=True)
class RuleEffects:
    """What the rules that apply to one search do, merged."""

    rule_ids: tuple[int, ...] = ()
    pins: tuple[tuple[int, int], ...] = ()  # (product id, position from 1), winners first
    hidden: frozenset[int] = frozenset()
    boosts: tuple[Boost, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.pins or self.hidden or self.boosts)

    @property
    def pinned_ids(self) -> list[int]:
        return list(dict.fromkeys(pid for pid, _ in self.pins if pid not in self.hidden))


NO_RULES = RuleEffects()


# --- writes -------------------------------------------------------------------------------


@transaction.atomic
def merchandising_rule_save(*, rule: MerchandisingRule) -> MerchandisingRule:
    """Validate and save a rule, with the normalised query its lookup uses."""
    rule.full_clean()
    rule.query_key = term_key(rule.query)
    rule.query_words = sorted(set(words(rule.query)))
    rule.save()
    return rule


@transaction.atomic
def rule_products_save(*, rule_products: Iterable[RuleProduct]) -> None:
    """Save pins and hides, remembering each product's SKU (shown if it is deleted)."""
    for entry in rule_products:
        if entry.product_id is not None:
            entry.product_sku = entry.product.sku
        entry.save()


def rule_products_problems(entries: Iterable[tuple[str, int | None, int | None]]) -> list[str]:
    """Why (action, product id, position) entries of one rule contradict each other."""
    problems, pinned_at, seen = [], {}, {}
    for action, product_id, position in entries:
        if product_id is not None:
            if product_id in seen:
                problems.append(
                    "A product is both pinned and hidden."
                    if seen[product_id] != action
                    else "A product is listed twice: once is enough."
                )
            seen[product_id] = action
        if action == RuleProduct.Action.PIN and position is not None:
            if position in pinned_at:
                problems.append(f"Two products are pinned at position {position}.")
            pinned_at[position] = product_id
    return list(dict.fromkeys(problems))


@transaction.atomic
def merchandising_rule_create(
    *,
    name: str,
    query: str = "",
    match: str = MerchandisingRule.Match.CONTAINS,
    category: Category | None = None,
    starts_at: datetime | None = None,
    ends_at: datetime | None = None,
    enabled: bool = True,
    pins: Sequence[tuple[Product, int]] = (),
    hides: Sequence[Product] = (),
    boosts: Sequence[dict] = (),
) -> MerchandisingRule:
    """A rule with its pins ((product, position)), hides and boosts (RuleBoost fields)."""
    rule = merchandising_rule_save(
        rule=MerchandisingRule(
            name=name,
            query=query,
            match=match,
            category=category,
            starts_at=starts_at,
            ends_at=ends_at,
            enabled=enabled,
        )
    )
    entries = [
        RuleProduct(rule=rule, action=RuleProduct.Action.PIN, product=product, position=position)
        for product, position in pins
    ] + [RuleProduct(rule=rule, action=RuleProduct.Action.HIDE, product=p) for p in hides]
    problems = rule_products_problems((e.action, e.product_id, e.position) for e in entries)
    if problems:
        raise ValidationError(problems)
    for entry in entries:
        entry.full_clean()
    rule_products_save(rule_products=entries)
    for fields in boosts:
        boost = RuleBoost(rule=rule, **fields)
        boost.full_clean()
        boost.save()
    return rule


@transaction.atomic
def merchandising_rules_set_enabled(*, rule_ids: Iterable[int], enabled: bool) -> int:
    return MerchandisingRule.objects.filter(pk__in=list(rule_ids)).update(enabled=enabled)


# --- reads --------------------------------------------------------------------------------


def filter_category_id(filters: SearchFilters, nodes: dict[int, CategoryNode]) -> int | None:
    """The category the shopper filtered by: the root of `filters.category_ids`."""
    ids = set(filters.category_ids)
    roots = [pk for pk in ids if pk in nodes and nodes[pk].parent_id not in ids]
    return roots[0] if len(roots) == 1 else None


def rules_matching(
    *,
    query: str | None,
    category_id: int | None,
    nodes: dict[int, CategoryNode] | None = None,
    at: datetime | None = None,
    active_only: bool = True,
) -> list[MerchandisingRule]:
    """The rules that apply to a search, most specific first, with their entries loaded.

    `query` None: a photo search, which only rules without a query apply to.
    """
    queryset = MerchandisingRule.objects.all()
    if active_only:
        now = at or timezone.now()
        queryset = queryset.filter(enabled=True).filter(
            Q(starts_at__isnull=True) | Q(starts_at__lte=now),
            Q(ends_at__isnull=True) | Q(ends_at__gt=now),
        )
    matches = Q(query_key="")
    if query is not None and (key := term_key(query)):
        matches |= Q(match=MerchandisingRule.Match.EXACT, query_key=key)
        matches |= Q(
            match=MerchandisingRule.Match.CONTAINS,
            query_words__contained_by=list(term_spans(query)),
        )
    categories = Q(category__isnull=True)
    if category_id is not None:
        nodes = nodes if nodes is not None else category_nodes()
        categories |= Q(category_id__in=category_ancestor_ids(nodes, category_id))
    return sorted(rules_with_entries(queryset.filter(matches, categories)), key=rule_specificity)


def rules_with_entries(queryset) -> list[MerchandisingRule]:
    """The rules with their pins, hides and boosts as lists of dicts, in one query."""
    entries = (
        RuleProduct.objects.filter(rule=OuterRef("pk"))
        .order_by("position", "id")
        .values(json=JSONObject(action="action", product_id="product_id", position="position"))
    )
    boosts = (
        RuleBoost.objects.filter(rule=OuterRef("pk"))
        .order_by("id")
        .values(
            json=JSONObject(
                action="action", kind="kind", brand="brand", category_id="category_id",
                factor="factor",
            )
        )
    )  # fmt: skip
    return list(
        queryset.annotate(entries=ArraySubquery(entries), boost_entries=ArraySubquery(boosts))
    )


def rule_specificity(rule: MerchandisingRule):
    """Sort key: exact queries, then more words, then with a category, then older rules."""
    exact = rule.match == MerchandisingRule.Match.EXACT and bool(rule.query_key)
    return (not exact, -len(rule.query_words), rule.category_id is None, rule.pk)


def rule_effects(rules: Sequence[MerchandisingRule]) -> RuleEffects:
    """The merged effects of `rules` (from rules_with_entries), most specific first."""
    pins, hidden, boosts = [], set(), []
    for rule in rules:
        for entry in rule.entries:
            if entry["product_id"] is None:
                continue  # its product was deleted: the admin shows the rule as broken
            if entry["action"] == RuleProduct.Action.HIDE:
                hidden.add(entry["product_id"])
            elif entry["position"] is not None:
                pins.append((entry["product_id"], entry["position"]))
        for boost in rule.boost_entries:
            kind = boost["kind"]
            value = boost["brand"] if kind == RuleBoost.Kind.BRAND else boost["category_id"]
            factor = float(boost["factor"])
            if boost["action"] == RuleBoost.Action.BURY:
                factor = 1 / factor
            boosts.append(Boost(kind, value, factor))
    return RuleEffects(
        rule_ids=tuple(rule.pk for rule in rules),
        pins=tuple(pins),
        hidden=frozenset(hidden),
        boosts=tuple(boosts),
    )


def rules_for_search(
    *, query: str | None, filters: SearchFilters, at: datetime | None = None
) -> RuleEffects:
    nodes = category_nodes() if filters.category_ids else None
    category_id = filter_category_id(filters, nodes) if nodes else None
    return rule_effects(rules_matching(query=query, category_id=category_id, nodes=nodes, at=at))


def products_hidden_everywhere(*, at: datetime | None = None) -> frozenset[int]:
    """The products hidden by the rules without a query or a category: those apply to every
    search (any query, photo searches, any filter), so shoppers see these products nowhere,
    not among similar products nor on their own page (search.selectors)."""
    return rules_for_search(query=None, filters=SearchFilters(), at=at).hidden


def rules_apply(
    rows: list[RankedProduct], effects: RuleEffects, *, place_pins: bool = True
) -> list[RankedProduct]:
    """The ranked window with hidden products gone, boosts applied and pins placed."""
    if not effects:
        return rows
    rows = [row for row in rows if row.product_id not in effects.hidden]
    if effects.boosts:
        nodes = category_nodes() if any(b.kind == "category" for b in effects.boosts) else {}
        rows = ranked_order(
            [row.rescored(row.score * boost_factor(row, effects.boosts, nodes)) for row in rows]
        )
    if not place_pins:
        return rows
    available = {row.product_id: row for row in rows if row.pinned}
    claimed: dict[int, int] = {}  # position -> product id
    for product_id, position in effects.pins:
        if product_id not in available or product_id in claimed.values():
            continue
        while position in claimed:
            position += 1
        claimed[position] = product_id
    placed = [row for row in rows if row.product_id not in claimed.values()]
    for position, product_id in sorted(claimed.items()):
        placed.insert(min(position - 1, len(placed)), available[product_id])
    return placed


def boost_factor(row: RankedProduct, boosts: Sequence[Boost], nodes) -> float:
    factor = 1.0
    for boost in boosts:
        if boost.kind == RuleBoost.Kind.BRAND:
            applies = row.brand == boost.value
        elif boost.kind == RuleBoost.Kind.CATEGORY:
            applies = row.category_id is not None and boost.value in category_ancestor_ids(
                nodes, row.category_id
            )
        else:
            applies = row.in_stock == (boost.kind == RuleBoost.Kind.IN_STOCK)
        if applies:
            factor *= boost.factor
    return factor


# --- the admin ----------------------------------------------------------------------------


def rule_problems(rule: MerchandisingRule) -> list[str]:
    """What is broken in a saved rule: pins and hides whose product was deleted."""
    return [
        f"{entry.get_action_display()}: product {entry.product_sku or '?'} was deleted"
        for entry in rule.products.all()
        if entry.product_id is None
    ]


def rule_state(rule: MerchandisingRule, at: datetime | None = None) -> str:
    """active, scheduled, ended or disabled."""
    now = at or timezone.now()
    if not rule.enabled:
        return "disabled"
    if rule.starts_at and rule.starts_at > now:
        return "scheduled"
    if rule.ends_at and rule.ends_at <= now:
        return "ended"
    return "active"
