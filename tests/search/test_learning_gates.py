"""The shoppers' pairs in fine-tuning (and --no-events without them), and the gate report."""

import pytest
from django.core.management import call_command

from catalog.demo_catalog import COLOURS
from catalog.models import Product
from catalog.services import demo_catalog_load
from embeddings.admin import training_report
from embeddings.catalog_pairs import catalog_is_validation
from embeddings.models import EmbeddingSpace, FinetuneRun
from embeddings.spaces import space_active
from embeddings.vectors import space_fill
from search.evaluation import space_search_evaluate
from search.judgments import query_is_held_out
from search.searchlog import search_event_record, search_log_record

pytestmark = pytest.mark.django_db


@pytest.fixture
def judged_shop(settings):
    """Shoppers who typed "<colour> trainers" or "kicks" and bought one pair of sneakers."""
    settings.FINETUNE_VAL_FRACTION = 0.25
    settings.SEARCH_JUDGMENT_MIN_SEARCHES = 1
    settings.SEARCH_GATE_MIN_CLIENTS = 1  # one search a query, each its own client
    demo_catalog_load(count=64, seed=0, embed=False)
    sneakers = [p for p in Product.objects.order_by("pk") if p.attributes["category"] == "sneakers"]
    bought = next(p for p in sneakers if not catalog_is_validation(p.pk))
    queries = [f"{colour} {word}" for colour in COLOURS for word in ("trainers", "kicks")]
    for query in queries:
        search_id = search_log_record(
            kind="text",
            channel="api",
            space=None,
            product_ids=[p.pk for p in sneakers],
            result_count=len(sneakers),
            query=query,
        )
        for type in ("click", "add_to_cart", "purchase"):
            search_event_record(search_id=search_id, type=type, product_id=bought.pk, session="")
    held_out = [q for q in queries if query_is_held_out(q)]
    assert 0 < len(held_out) < len(queries)
    return bought, queries, held_out


def finetune(name, **options):
    call_command("finetune_clip", epochs=1, batch_size=32, name=name, **options)
    return EmbeddingSpace.objects.get(name=name)


def test_shopper_pairs_are_added_and_no_events_leaves_them_out(judged_shop, capsys):
    bought, queries, held_out = judged_shop
    plain = finetune("plain", no_events=True, margin=1.0)
    learned = finetune("learned", margin=1.0)
    out = capsys.readouterr().out

    assert "extra_pairs" not in plain.metrics
    extra = learned.metrics["extra_pairs"]["shopper queries"]
    # Every query not held out, with each photo of the sneakers bought for it.
    trained = len(queries) - len(held_out)
    assert extra["train_pairs"] == trained * bought.images.count()
    assert extra["trained_queries"] == trained
    assert extra["held_out_queries"] == len(held_out)
    training = learned.metrics["training"]["train_pairs"]
    assert training == plain.metrics["training"]["train_pairs"] + extra["train_pairs"]
    assert f"{extra['train_pairs']} training pairs from shopper queries" in out
    # The query gate measured both runs on the held-out queries, whatever they trained on.
    for space in (plain, learned):
        (gate,) = space.metrics["gates"]
        assert gate["gate"] == "query nDCG"
        assert gate["before"]["all"]["queries"] == len(held_out)
        assert gate["after"]["all"]["queries"] == len(held_out)


def test_the_report_says_which_gate_decided(judged_shop, settings, capsys):
    active = space_active()
    # A candidate that would have to gain a whole 1.0 of nDCG: the query gate must refuse it,
    # though the catalog-recall gate (margin -1) lets anything through.
    settings.SEARCH_JUDGMENT_NDCG_TOLERANCE = -1.0
    kept = finetune("kept", margin=-1.0)
    out = capsys.readouterr().out
    assert "decided by: query nDCG" in out
    assert "kept as a candidate by the query nDCG gate" in out
    assert space_active() == active
    assert kept.status == EmbeddingSpace.Status.CANDIDATE
    run = FinetuneRun.objects.get(space=kept)
    assert run.result["decided_by"] == "query nDCG"
    assert run.result["promoted"] is False
    assert run.result["gates"][0]["passed"] is False
    report = training_report(kept.metrics)
    assert "Decided by: query nDCG" in report
    assert "held-out queries" in report

    # Recall short of the margin: the catalog gate decides, and the query gate's figures
    # are still reported.
    settings.SEARCH_JUDGMENT_NDCG_TOLERANCE = 0.0
    short = finetune("short", margin=1.0)
    out = capsys.readouterr().out
    assert "decided by: catalog recall" in out
    assert "below the margin of 1.000" in short.metrics["decision"]
    assert "query nDCG gate" in short.metrics["decision"]


def test_the_gate_ranks_the_filled_active_space_by_its_stored_vectors(judged_shop):
    # Filled, the active space is not encoded again: the gate's "before" is exactly what
    # evaluate_search replays against its stored vectors (encoding the decoded training
    # photos again would give other vectors, and other figures).
    active = space_active()
    space_fill(space=active)
    replayed, _ = space_search_evaluate(space=active, held_out_only=True)
    learned = finetune("learned", margin=1.0)
    (gate,) = learned.metrics["gates"]
    assert gate["before"] == replayed
