"""Reads of the catalog for the shop: categories as a tree, facets and their values."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from catalog.models import Category, Facet, FacetValueAlias


@dataclass(frozen=True)
class CategoryNode:
    id: int
    slug: str
    name: str
    parent_id: int | None


def category_nodes() -> dict[int, CategoryNode]:
    """Every category by id: a shop has tens to hundreds, one small query."""
    return {
        pk: CategoryNode(pk, slug, name, parent_id)
        for pk, slug, name, parent_id in Category.objects.values_list(
            "pk", "slug", "name", "parent_id"
        )
    }


def category_subtree_ids(*, category: Category) -> list[int]:
    """The category and all its descendants (sub-categories at any depth)."""
    return category_subtree_ids_of(category_nodes(), [category.pk])


def category_subtree_ids_of(nodes: dict[int, CategoryNode], roots: Iterable[int]) -> list[int]:
    """The categories `roots` and all their descendants, sorted."""
    children: dict[int | None, list[int]] = {}
    for node in nodes.values():
        children.setdefault(node.parent_id, []).append(node.id)
    ids: set[int] = set()
    todo = list(roots)
    while todo:
        pk = todo.pop()
        if pk not in ids:  # a cycle made by hand in the admin must not loop forever
            ids.add(pk)
            todo.extend(children.get(pk, ()))
    return sorted(ids)


def category_ancestor_ids(nodes: dict[int, CategoryNode], pk: int) -> list[int]:
    """`pk` and its ancestors, nearest first."""
    chain: list[int] = []
    while pk in nodes and pk not in chain:
        chain.append(pk)
        pk = nodes[pk].parent_id
    return chain


def facet_key(name: str, value: object = None) -> str:
    """A facet key as the database's generated `facet_keys` hold it: "size", "size=m"."""
    name = str(name).strip().lower()
    return name if value is None else f"{name}={str(value).strip().lower()}"


def facet_value_keys(name: str, values: Iterable[str]) -> tuple[str, ...]:
    """The keys that select `values` of the option or attribute `name`: each value, and
    every other name of it that merchandisers gave (a value's aliases, an alias's value
    and its other aliases): `attr.colour=navy` is also "dark blue"."""
    wanted = {str(value).strip().lower() for value in values}
    aliases = FacetValueAlias.objects.filter(facet__name__iexact=name.strip()).values_list(
        "alias", "value"
    )
    canonical = {value.lower() for alias, value in aliases if alias.lower() in wanted}
    canonical |= wanted
    names = canonical | {alias.lower() for alias, value in aliases if value.lower() in canonical}
    return tuple(sorted(facet_key(name, value) for value in names))


@dataclass(frozen=True)
class FacetConfig:
    names: tuple[str, ...]  # lower case, in order; empty: every option is a facet
    labels: dict[str, str]  # by lower-case name
    aliases: dict[str, dict[str, str]]  # lower-case name -> lower-case alias -> value


def facet_config() -> FacetConfig:
    """Which options and attributes are facets (the admin's Facet rows), with the value
    aliases: one small query each."""
    facets = list(Facet.objects.all())
    aliases: dict[str, dict[str, str]] = {}
    for facet_name, alias, value in FacetValueAlias.objects.values_list(
        "facet__name", "alias", "value"
    ):
        aliases.setdefault(facet_key(facet_name), {})[alias.strip().lower()] = value
    return FacetConfig(
        names=tuple(facet_key(f.name) for f in facets),
        labels={facet_key(f.name): f.label or f.name for f in facets},
        aliases=aliases,
    )
