"""The active space is read, never made by a read; `migrate` makes the first one."""

import pytest
from django.core.management import call_command
from django.urls import reverse

from catalog.models import ProductImage
from embeddings.models import EmbeddingSpace
from embeddings.spaces import NoActiveSpace, space_active, space_default_spec
from tests.builders import jpeg_bytes

pytestmark = pytest.mark.django_db


def test_space_active_is_a_read_that_never_creates_a_space():
    EmbeddingSpace.objects.all().delete()
    with pytest.raises(NoActiveSpace, match="manage.py migrate"):
        space_active()
    assert not EmbeddingSpace.objects.exists()


def test_migrate_creates_the_default_space_once(settings):
    settings.EMBEDDINGS_DEFAULT_SPACE_ON_MIGRATE = True
    EmbeddingSpace.objects.all().delete()
    call_command("migrate", verbosity=0)
    call_command("migrate", verbosity=0)  # and leaves it alone the next time
    name, spec = space_default_spec()
    space = EmbeddingSpace.objects.get()
    assert (space.name, space.status, space.architecture) == (name, "active", spec.architecture)
    assert space.embed_dim == 128  # shop-tiny's, read from its config


def test_search_without_an_active_space_says_why(client):
    EmbeddingSpace.objects.all().delete()
    response = client.get(reverse("api-search"), {"q": "red"})
    assert response.status_code == 503
    assert "no embedding space is active" in response.json()["error"]
    page = client.get(reverse("shop-search"), {"q": "red"})
    assert page.status_code == 503
    assert b"no embedding space is active" in page.content


def test_health_and_admin_lists_load_no_model(admin_client, make_product, embed_on_commit):
    """A model whose checkpoint is missing fails to load: pages that load none still work."""
    with embed_on_commit():
        make_product(images=[jpeg_bytes(seed=1)])
    EmbeddingSpace.objects.filter(status="active").update(
        source=EmbeddingSpace.Source.CHECKPOINT, checkpoint="/nonexistent/model.safetensors"
    )
    health = admin_client.get(reverse("healthz"))
    assert health.status_code == 200
    assert health.json()["checks"]["space"]["status"] == "ok"
    listings = {
        "admin:catalog_product_changelist": b"Image vs title",
        "admin:catalog_productimage_changelist": b"embedded",
    }
    for listing, column in listings.items():
        page = admin_client.get(reverse(listing))
        assert page.status_code == 200
        assert column in page.content
    image = ProductImage.objects.get()
    page = admin_client.get(reverse("admin:catalog_productimage_change", args=[image.pk]))
    assert page.status_code == 200
    assert b"embedded" in page.content
