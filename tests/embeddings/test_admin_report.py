"""The fine-tune run's page and the spaces list in the admin: every gate has its result,
counts read as counts, options and metric headers in words."""

import re

import pytest
from django.urls import reverse

from tests.builders import finetune_run_reported


def _cells(html: str, table_class: str) -> list[list[str]]:
    table = re.search(rf"<table class='{table_class}'>(.*?)</table>", html, re.S).group(1)
    return [
        [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<t[hd]>(.*?)</t[hd]>", row)]
        for row in re.findall(r"<tr>(.*?)</tr>", table, re.S)
    ]


@pytest.mark.parametrize("stored", [True, False], ids=["gate stored", "older run"])
def test_the_run_page_says_what_every_gate_decided(admin_client, default_space, stored):
    run = finetune_run_reported(source=default_space, catalog_gate=stored)
    page = admin_client.get(reverse("admin:embeddings_finetunerun_change", args=[run.pk]))
    html = page.content.decode()
    gates = _cells(html, "gates")
    assert gates[0] == ["gate", "result", "measured"]
    assert gates[1][:2] == ["catalog recall", "passed"]
    assert "+0.415 over the active space" in gates[1][2]
    assert gates[2][:2] == ["query nDCG", "nothing to measure"]
    assert all(all(cell for cell in row) for row in gates)


def test_the_run_page_shows_counts_options_and_headers_for_people(admin_client, default_space):
    run = finetune_run_reported(source=default_space)
    html = admin_client.get(
        reverse("admin:embeddings_finetunerun_change", args=[run.pk])
    ).content.decode()
    assert "would reach 98 photos there" in html
    assert "98.44" not in html
    assert "reaches &lt; 1 of the catalog" in html
    assert "text→image R@1" in html
    assert "image→text R@10" in html
    assert "t2i_r1" not in html
    assert _cells(html, "options") == [["epochs", "4"], ["batch size", "32"]]
    assert '{"epochs"' not in html
    assert "&quot;epochs&quot;" not in html


def test_the_spaces_list_has_short_headers(admin_client, default_space):
    finetune_run_reported(source=default_space)
    html = admin_client.get(reverse("admin:embeddings_embeddingspace_changelist")).content.decode()
    assert "validation mean recall" not in html.lower()
    assert "0.717" in html
