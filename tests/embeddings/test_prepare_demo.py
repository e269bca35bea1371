"""prepare_demo: the first run loads the demo shop and trains its model; later runs do nothing."""

import pytest
from django.core.management import call_command

from catalog.models import Product
from embeddings.models import EmbeddingSpace, ImageEmbedding
from embeddings.spaces import space_active

pytestmark = pytest.mark.django_db


def test_first_run_loads_and_trains_then_later_runs_skip(settings, capsys):
    settings.FINETUNE_VAL_FRACTION = 0.25
    # The flow, not the learning (tests/embeddings/test_finetuning.py measures that): on 40
    # products a validation split of 10 makes the gain noise, so any result is promoted.
    call_command("prepare_demo", products=40, epochs=3, batch_size=32, max_minutes=10, margin=-1)
    active = space_active()
    assert active.name == "shop-tiny-demo"
    assert active.source == EmbeddingSpace.Source.CHECKPOINT
    assert Product.objects.count() == 40
    assert ImageEmbedding.objects.filter(space=active, vector__isnull=False).exists()
    assert "mean_recall" in capsys.readouterr().out

    call_command("prepare_demo", products=40)
    out = capsys.readouterr().out
    assert "not loading the demo catalog" in out
    assert "not training" in out
    assert EmbeddingSpace.objects.count() == 2
