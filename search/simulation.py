"""Simulated shoppers for the demo catalog: traffic for the learning loop to learn from.

Each shopper wants what some product of the catalog is (its category, usually its colour,
sometimes its pattern: demand follows the assortment), types it in words of their own when
they have some (search/data/shopper_words.json: "rucksack" for a backpack) and otherwise in
the catalog's, looks down the page with a position bias (position k is examined with
probability 1 / k), clicks what is relevant (and rarely what is not), sometimes adds it to
the cart and buys it, and, when nothing was worth a click, searches again in the catalog's
words within the same session. A product is relevant when its category, and the colour
and pattern the shopper asked for, are the wanted ones (the demo catalog's attributes).

Everything goes through `ShopperPath`: the search and event services the API uses.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cache
from pathlib import Path

from catalog.demo_catalog import CATEGORIES
from catalog.models import Product
from search.models import SearchEvent, SearchLog
from search.pipeline import product_search_by_text
from search.searchlog import search_event_record, search_logged

SHOPPER_WORDS = Path(__file__).parent / "data" / "shopper_words.json"


@cache
def shopper_words(path: Path = SHOPPER_WORDS) -> dict[str, dict[str, list[str]]]:
    """{"category": {key: [words]}, "pattern": {name: [words]}}: the shoppers' own words."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return {"category": data["category"], "pattern": data["pattern"]}


def _colours(attributes: dict) -> list:
    """A demo product's colours: one, or a list when it is sold in several."""
    colour = attributes.get("colour")
    return colour if isinstance(colour, list) else [colour]


@dataclass(frozen=True)
class Intent:
    category: str  # a demo category key ("backpack")
    colour: str | None
    pattern: str | None

    def relevant(self, attributes: dict) -> bool:
        return (
            attributes.get("category") == self.category
            and (self.colour is None or self.colour in _colours(attributes))
            and (self.pattern is None or attributes.get("pattern") == self.pattern)
        )

    def query(self, *, own_words: bool, rng: random.Random) -> str:
        """The query in the catalog's words, or with `own_words` in the shopper's where
        they have some for the category or the pattern."""
        words = shopper_words()
        category = CATEGORIES[self.category].name
        pattern = self.pattern
        if own_words:
            category = rng.choice(words["category"].get(self.category, [category]))
            pattern = pattern and rng.choice(words["pattern"].get(pattern, [pattern]))
        return " ".join(w for w in (self.colour, pattern, category) if w)

    def has_own_words(self) -> bool:
        words = shopper_words()
        return self.category in words["category"] or (self.pattern in words["pattern"])


@dataclass(frozen=True)
class Shown:
    search_id: object | None  # None: the log row could not be written
    product_ids: list[int]


@dataclass(frozen=True)
class ShopperPath:
    """How a shopper searches and reports what they did: the services behind the API."""

    search: Callable[[str, str, int], Shown]
    event: Callable[[object, str, str, int, int], None]  # search_id, session, type, ...


def _search_direct(query: str, session: str, limit: int) -> Shown:
    # What GET /api/search/ does: the search (interleaved when a test runs), then its log row.
    page = product_search_by_text(query=query, limit=limit, session=session)
    page = search_logged(
        page, kind=SearchLog.Kind.TEXT, channel=SearchLog.Channel.API, query=query, session=session
    )
    return Shown(page.search_id, [hit.product.pk for hit in page.results])


# A shopper reads the page before acting on it: the judgments leave out sessions whose clicks
# come faster than SEARCH_ROBOT_MIN_DWELL_SECONDS, so simulated events carry this dwell.
READING_SECONDS = 5


def _event_direct(search_id, session: str, type: str, product_id: int, position: int) -> None:
    search_event_record(
        search_id=search_id, type=type, product_id=product_id, position=position, session=session
    )
    searched = SearchLog.objects.values_list("created", flat=True).get(pk=search_id)
    SearchEvent.objects.filter(search_id=search_id, type=type, product_id=product_id).update(
        created=searched + timedelta(seconds=READING_SECONDS)
    )


SERVICES = ShopperPath(search=_search_direct, event=_event_direct)


@dataclass
class SimulationReport:
    searches: int = 0
    sessions: int = 0
    own_word_searches: int = 0
    reformulations: int = 0
    events: Counter = field(default_factory=Counter)
    searches_with_click: int = 0

    def as_dict(self) -> dict:
        return {
            "searches": self.searches,
            "sessions": self.sessions,
            "own_word_searches": self.own_word_searches,
            "reformulations": self.reformulations,
            "searches_with_click": self.searches_with_click,
            "events": dict(self.events),
        }


@dataclass(frozen=True)
class ShopperBehaviour:
    own_words: float = 0.7  # says it in their own words when they have some
    colour: float = 0.85  # the intent names a colour
    pattern: float = 0.15  # ... a pattern (when the product has one)
    examine_power: float = 1.0  # position k examined with probability 1 / k**power
    click_relevant: float = 0.9
    click_other: float = 0.01
    cart: float = 0.35  # after a click on a relevant product
    purchase: float = 0.5  # after adding it to the cart
    reformulate: float = 0.9  # searches again in catalog words after a page without a click
    page_size: int = 20
    # Preferences the fused order cannot know (the learned ranker's to learn): a relevant
    # product out of stock is clicked this much as often; of the others, those not among
    # the shop's `favourite_share` favourites `other_appeal` as often. The favourites are
    # the shop's, the same whatever the seed: every day's shoppers share them.
    out_of_stock_appeal: float = 1.0
    favourite_share: float = 0.0
    other_appeal: float = 1.0


def shoppers_simulate(
    *,
    searches: int,
    seed: int = 0,
    behaviour: ShopperBehaviour = ShopperBehaviour(),
    path: ShopperPath = SERVICES,
) -> SimulationReport:
    """Run shoppers until `searches` searches have been made; returns what they did."""
    rng = random.Random(seed)
    rows = list(Product.objects.order_by("pk").values_list("pk", "attributes", "in_stock"))
    rows = [row for row in rows if row[1].get("category") in CATEGORIES]
    if not rows:
        raise ValueError("no demo products to shop for: load the demo catalog first")
    catalog = [(pk, attrs) for pk, attrs, _ in rows]
    attributes = dict(catalog)
    # Drawn in catalog order from a fixed seed, not the traffic's (nor from the ids, which
    # differ from one test database to the next): a run with another seed, the next day's
    # shoppers, likes the same products, as a shop's best sellers stay its best sellers.
    favourites = random.Random("favourites")
    appeal = {
        pk: (1.0 if in_stock else behaviour.out_of_stock_appeal)
        * (1.0 if favourites.random() < behaviour.favourite_share else behaviour.other_appeal)
        for pk, _, in_stock in rows
    }
    report = SimulationReport()
    while report.searches < searches:
        _, wanted = rng.choice(catalog)
        pattern = wanted.get("pattern")
        intent = Intent(
            category=wanted["category"],
            colour=_colours(wanted)[0] if rng.random() < behaviour.colour else None,
            pattern=pattern if pattern != "plain" and rng.random() < behaviour.pattern else None,
        )
        session = f"simulated-{seed}-{report.sessions}"
        report.sessions += 1
        own = intent.has_own_words() and rng.random() < behaviour.own_words
        query = intent.query(own_words=own, rng=rng)
        clicked = _shop_once(
            query, session, intent, attributes, appeal, behaviour, rng, path, report
        )
        report.own_word_searches += own
        if (
            not clicked
            and own
            and report.searches < searches
            and rng.random() < behaviour.reformulate
        ):
            report.reformulations += 1
            catalog_query = intent.query(own_words=False, rng=rng)
            _shop_once(
                catalog_query, session, intent, attributes, appeal, behaviour, rng, path, report
            )
    return report


def _shop_once(query, session, intent, attributes, appeal, behaviour, rng, path, report) -> bool:
    shown = path.search(query, session, behaviour.page_size)
    report.searches += 1
    if shown.search_id is None:
        return False
    clicked = False
    for position, pid in enumerate(shown.product_ids, start=1):
        if rng.random() >= 1.0 / position**behaviour.examine_power:
            continue
        relevant = intent.relevant(attributes.get(pid, {}))
        chance = (
            behaviour.click_relevant * appeal.get(pid, 1.0) if relevant else behaviour.click_other
        )
        if rng.random() >= chance:
            continue
        clicked = True
        path.event(shown.search_id, session, "click", pid, position)
        report.events["click"] += 1
        if relevant and rng.random() < behaviour.cart:
            path.event(shown.search_id, session, "add_to_cart", pid, position)
            report.events["add_to_cart"] += 1
            if rng.random() < behaviour.purchase:
                path.event(shown.search_id, session, "purchase", pid, position)
                report.events["purchase"] += 1
    report.searches_with_click += clicked
    return clicked
