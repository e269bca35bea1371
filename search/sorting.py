"""Sort orders shoppers choose: the relevant set is re-ordered, never widened.

The set is the ranked window after the similarity floor, the filters and the rules, so a
cheap product the query did not find never floats up under "price, low to high". Ties
keep the relevance order, so pages are stable.
"""

from __future__ import annotations

from django.db import models

from search.retrieval import RankedProduct


class Sort(models.TextChoices):
    RELEVANCE = "relevance", "Relevance"
    PRICE_ASC = "price_asc", "Price, low to high"
    PRICE_DESC = "price_desc", "Price, high to low"
    NEWEST = "newest", "Newest"


def ranked_sort(rows: list[RankedProduct], sort: str) -> list[RankedProduct]:
    """`rows` (in relevance order) in the shopper's order; Python's sort is stable."""
    if sort == Sort.PRICE_ASC:
        return sorted(rows, key=lambda row: row.price)
    if sort == Sort.PRICE_DESC:
        return sorted(rows, key=lambda row: row.price, reverse=True)
    if sort == Sort.NEWEST:
        return sorted(rows, key=lambda row: row.created, reverse=True)
    return rows
