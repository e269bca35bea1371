"""evaluate_search against a brute-force computation from the stored vectors."""

import json
import math

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from embeddings.models import EmbeddingSpace, ImageEmbedding
from embeddings.spaces import space_active, space_encoder
from search.searchlog import search_event_record, search_log_record

pytestmark = pytest.mark.django_db


def shown_and_chosen(query, shown, chosen, *, times=2):
    for _ in range(times):
        search_id = search_log_record(
            kind="text",
            channel="api",
            space=None,
            product_ids=[p.pk for p in shown],
            result_count=len(shown),
            query=query,
        )
        for type, product in chosen:
            search_event_record(search_id=search_id, type=type, product_id=product.pk, session="")


def brute_force(space, query, grades, k=10):
    """nDCG@k and reciprocal rank by plain loops over products and their stored vectors."""
    vector = space_encoder(space).encode_texts([query])[0]
    best = {}
    for product_id, stored in ImageEmbedding.objects.filter(space=space).values_list(
        "image__product_id", "vector"
    ):
        score = float(np.dot(vector, np.asarray(stored, dtype=np.float32)))
        best[product_id] = max(best.get(product_id, -2.0), score)
    ranking = sorted(best, key=lambda pid: (-best[pid], pid))
    dcg = sum((2 ** grades.get(pid, 0) - 1) / math.log2(i + 2) for i, pid in enumerate(ranking[:k]))
    ideal = sorted(grades.values(), reverse=True)[:k]
    idcg = sum((2**g - 1) / math.log2(i + 2) for i, g in enumerate(ideal))
    first = next(i for i, pid in enumerate(ranking) if grades.get(pid, 0) > 0)
    return dcg / idcg, 1 / (first + 1)


def test_evaluate_search_equals_brute_force(catalog_shop, capsys):
    tee, white, dress, blue, shoes, boots = (
        catalog_shop[s] for s in ("TEE-100", "TEE-101", "DRS-200", "DRS-201", "SHO-300", "SHO-301")
    )
    # Bought (grade 3), put in the cart (2), clicked from the top (gamma 1: 2).
    shown_and_chosen("red top", [shoes, tee, white], [("click", tee), ("purchase", tee)])
    shown_and_chosen("summer frock", [dress, blue], [("click", blue), ("add_to_cart", blue)])
    shown_and_chosen("black shoes", [shoes, boots], [("click", shoes)])
    shown_and_chosen("once only", [boots], [("click", boots)], times=1)  # too few searches
    grades = {
        "red top": {tee.pk: 3},
        "summer frock": {blue.pk: 2},
        "black shoes": {shoes.pk: 2},
    }
    space = space_active()

    call_command("evaluate_search", json=True, queries=True)
    result = json.loads(capsys.readouterr().out)
    per_query = {row["query"]: row for row in result["per_query"]}
    assert set(per_query) == set(grades)
    expected = {q: brute_force(space, q, g) for q, g in grades.items()}
    for query, (ndcg, rr) in expected.items():
        assert per_query[query]["ndcg"] == pytest.approx(ndcg, abs=1e-4)
        assert per_query[query]["reciprocal_rank"] == pytest.approx(rr, abs=1e-4)
    summary = result["queries"]
    assert summary["all"]["queries"] == 3
    assert summary["all"]["ndcg@10"] == pytest.approx(np.mean([n for n, _ in expected.values()]))
    assert summary["all"]["mrr"] == pytest.approx(np.mean([r for _, r in expected.values()]))
    # "top" and "frock" are in no product's texts: the shoppers' own words.
    assert {q for q, row in per_query.items() if row["own_words"]} == {"red top", "summer frock"}
    assert summary["own_words"]["queries"] == 2
    assert summary["catalog_words"]["queries"] == 1

    call_command("evaluate_search")
    out = capsys.readouterr().out
    for line in ("nDCG@10", "in shoppers' own words", "in catalog words", "catalog Recall@K"):
        assert line in out


def test_evaluate_search_refuses_an_empty_space(catalog_shop):
    shown_and_chosen("red top", [catalog_shop["TEE-100"]], [("click", catalog_shop["TEE-100"])])
    EmbeddingSpace.objects.create(
        name="empty", architecture="shop-tiny", source="random", embed_dim=256
    )
    with pytest.raises(CommandError, match="has no image vectors"):
        call_command("evaluate_search", space="empty")
    with pytest.raises(CommandError, match="no embedding space named 'ghost'"):
        call_command("evaluate_search", space="ghost")
