"""prepare_demo: the first run loads the demo shop (words match at once); later runs skip.

Its model trains apart: tests/embeddings/test_demo_training.py."""

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from catalog.models import Product
from embeddings.models import EmbeddingSpace, FinetuneRun
from embeddings.spaces import space_active

pytestmark = pytest.mark.django_db


def test_first_run_loads_the_shop_without_training_then_later_runs_skip(capsys):
    call_command("prepare_demo", products=40, no_migrate=True, admin_password="demo")
    out = capsys.readouterr().out
    assert Product.objects.count() == 40
    assert "Created the demo admin account: admin / demo" in out
    assert "photo search waits" in out
    assert space_active().source == EmbeddingSpace.Source.RANDOM
    assert not FinetuneRun.objects.exists()

    call_command("prepare_demo", products=40, no_migrate=True, admin_password="demo")
    out = capsys.readouterr().out
    assert "not loading the demo catalog" in out
    assert "Created" not in out
    assert get_user_model().objects.filter(username="admin").count() == 1
    assert Product.objects.count() == 40
