"""/healthz: the verdict for anyone, each check's detail for staff and internal addresses."""

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from shop_search import health

pytestmark = pytest.mark.django_db

OUTSIDER = "203.0.113.9"


def test_anonymous_outsiders_get_the_verdict_only(client, default_space):
    response = client.get(reverse("healthz"), REMOTE_ADDR=OUTSIDER)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}  # no space name, no broker state
    assert default_space.name not in response.content.decode()


def test_the_status_code_tells_outsiders_what_the_detail_would(client, monkeypatch):
    def no_space():
        raise RuntimeError("no model")

    monkeypatch.setitem(health.CHECKS, "space", (no_space, True))
    response = client.get(reverse("healthz"), REMOTE_ADDR=OUTSIDER)
    assert (response.status_code, response.json()) == (503, {"status": "error"})


@pytest.mark.parametrize(
    ("address", "detail"),
    [
        ("127.0.0.1", True),  # the container's own health check
        ("127.8.0.1", True),
        ("::1", True),
        ("10.1.2.3", True),
        ("172.20.0.5", True),  # a Docker network
        ("192.168.1.10", True),
        ("fd00::7", True),
        ("::ffff:10.0.0.8", True),
        (OUTSIDER, False),
        ("172.32.0.1", False),  # just outside 172.16.0.0/12
        ("8.8.8.8", False),
        ("2001:db8::1", False),
    ],
)
def test_internal_addresses_get_each_checks_detail(client, default_space, address, detail):
    body = client.get(reverse("healthz"), REMOTE_ADDR=address).json()
    assert ("checks" in body) is detail, body
    if detail:
        assert body["checks"]["space"]["detail"] == default_space.name
        assert set(body["checks"]) == {"database", "broker", "space", "replicas"}
        assert body["checks"]["replicas"]["detail"] == "none: searches read the primary"


def test_behind_the_proxy_the_client_is_the_address_it_saw(client, settings):
    """The proxy itself is on a private network: its own address must not count."""
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    proxy = {"REMOTE_ADDR": "172.18.0.3"}
    outsider = client.get(reverse("healthz"), HTTP_X_FORWARDED_FOR=OUTSIDER, **proxy).json()
    assert outsider == {"status": "ok"}
    # A client's own X-Forwarded-For entry before the proxy's is not believed either.
    spoofed = f"127.0.0.1, {OUTSIDER}"
    spoofing = client.get(reverse("healthz"), HTTP_X_FORWARDED_FOR=spoofed, **proxy).json()
    assert "checks" not in spoofing
    inside = client.get(reverse("healthz"), HTTP_X_FORWARDED_FOR="10.0.0.7", **proxy).json()
    assert "checks" in inside


def test_signed_in_staff_get_the_detail_from_anywhere(client):
    shopper = User.objects.create_user("shopper", password="x")
    client.force_login(shopper)
    assert "checks" not in client.get(reverse("healthz"), REMOTE_ADDR=OUTSIDER).json()
    client.force_login(User.objects.create_user("ops", password="x", is_staff=True))
    assert "checks" in client.get(reverse("healthz"), REMOTE_ADDR=OUTSIDER).json()
