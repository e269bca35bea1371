"""docs/architecture.md's table of seams agrees with the running code, and every command
and page the README names exists (a command's README arguments parse; a path resolves)."""

import re
import shlex
from pathlib import Path

import pytest
from django.contrib import admin
from django.core.management import get_commands, load_command_class
from django.urls import Resolver404, resolve

from catalog.models import Product, ProductImage
from embeddings import extensions

ROOT = Path(__file__).resolve().parents[2]
ROW = re.compile(
    r"^\s*\| [^|`]*`([^`]+)`[^|]*\| (signal|registry|admin class|router) \|[^|]*\| `([^`]+)`"
)


def seams() -> list[tuple[str, str, str]]:
    text = (ROOT / "docs" / "architecture.md").read_text()
    rows = [m.groups() for line in text.splitlines() if (m := ROW.match(line))]
    assert len(rows) >= 10, "the table of seams is missing or unreadable"
    return rows


def _name(function) -> str:
    return f"{function.__module__}.{function.__qualname__}"


def _receivers(signal) -> set[str]:
    return {_name(ref()) for _, ref, *_ in signal.receivers if ref() is not None}


@pytest.mark.parametrize(("seam", "kind", "listener"), seams())
def test_each_seam_in_the_table_is_in_the_code(seam, kind, listener):
    if kind == "signal":
        from django.db.models import signals as django_signals

        from catalog import signals as catalog_signals
        from embeddings import signals as embeddings_signals

        name = seam.split()[0].rsplit(".", 1)[-1]
        modules = (catalog_signals, embeddings_signals, django_signals)
        signal = next(getattr(m, name) for m in modules if hasattr(m, name))
        assert listener in _receivers(signal)
    elif kind == "registry":
        registry = {
            "pair_source_register": extensions._pair_sources,
            "promotion_gate_register": extensions._promotion_gates,
        }[seam.rsplit(".", 1)[-1]]
        assert listener in {_name(item) for item in registry.values()}
    elif kind == "router":
        from django.db import router

        assert listener in {_name(type(installed)) for installed in router.routers}
    else:
        model = {"catalog.ProductImage": ProductImage, "catalog.Product": Product}[seam]
        assert type(admin.site._registry[model]).__module__ == listener


def test_every_command_the_readme_names_exists_and_its_arguments_parse():
    readme = (ROOT / "README.md").read_text()
    calls = re.findall(r"manage\.py ([a-z_]+)([^`\n]*)", readme)
    assert calls
    commands = get_commands()
    for name, rest in calls:
        assert name in commands, f"README names manage.py {name}, which does not exist"
        # Placeholders and optional parts ([--x]) are the README's notation, not arguments.
        if "[" in rest or "<" in rest or "|" in rest or "FILE" in rest or "NAME" in rest:
            continue
        parser = load_command_class(commands[name], name).create_parser("manage.py", name)
        parser.parse_args(shlex.split(rest))


def test_every_path_the_readme_names_is_served():
    readme = (ROOT / "README.md").read_text()
    paths = set(re.findall(r"`(?:GET |POST )?(/[a-z][^`\s?]*)", readme))
    assert len(paths) > 5
    for path in paths:
        concrete = re.sub(r"<[^>]+>", "1", path)
        try:
            resolve(concrete)
        except Resolver404:
            pytest.fail(f"README names {path}, which no URL serves")
