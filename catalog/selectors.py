"""Reads of the catalog for the shop: categories as a tree."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from catalog.models import Category


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
