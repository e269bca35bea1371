"""/healthz: can this process serve? Database, broker, an active space (a read: no model
is loaded, so a probe stays cheap; the first search loads it) and the read replicas. Anyone
gets the verdict; only staff and internal addresses (probes, the proxy's network) get each
check's detail."""

import ipaddress
import logging
import time

from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from shop_search.throttling import client_ip

logger = logging.getLogger(__name__)


def _check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return "ok"


def _check_broker() -> str:
    if settings.CELERY_TASK_ALWAYS_EAGER:
        return "ok (no broker: tasks run in process)"
    from shop_search.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=2)
        conn.default_channel  # noqa: B018 (opens a channel: Redis answers, not just a socket)
    return "ok"


def _check_space() -> str:
    from embeddings.spaces import space_active

    return space_active().name


class ReplicasLeftOut(Exception):
    pass


def _check_replicas() -> str:
    from shop_search.db_routers import replica_aliases, replica_check

    aliases = replica_aliases()
    if not aliases:
        return "none: searches read the primary"
    in_use = {alias: replica_check(alias) for alias in aliases}
    if not any(in_use.values()):
        raise ReplicasLeftOut("every replica is left out: searches read the primary")
    return ", ".join(f"{alias} {'in use' if ok else 'left out'}" for alias, ok in in_use.items())


# Without the database or the model this process cannot answer a search: it is unhealthy.
# A broker outage only delays embedding of new uploads (the sweep catches up), so the web
# process stays in service and reports itself degraded; so do replicas that are all left
# out (the primary answers their searches).
CHECKS = {
    "database": (_check_database, True),
    "space": (_check_space, True),
    "broker": (_check_broker, False),
    "replicas": (_check_replicas, False),
}


# Loopback and the private ranges: container health checks, load balancers, the operators'.
INTERNAL_NETWORKS = [
    ipaddress.ip_network(network)
    for network in (
        "127.0.0.0/8",
        "::1/128",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "fc00::/7",
    )
]


def client_is_internal(request) -> bool:
    """Is the client (as throttling sees it: behind API_NUM_PROXIES proxies, the address the
    outermost saw) on loopback or a private network?"""
    try:
        address = ipaddress.ip_address(client_ip(request))
    except ValueError:
        return False
    address = getattr(address, "ipv4_mapped", None) or address
    return any(address in network for network in INTERNAL_NETWORKS)


def _shows_detail(request) -> bool:
    user = getattr(request, "user", None)
    return bool(user and user.is_active and user.is_staff) or client_is_internal(request)


@never_cache
@require_GET
def healthz(request):
    results, status = {}, "ok"
    for name, (check, essential) in CHECKS.items():
        started = time.monotonic()
        try:
            results[name] = {"status": "ok", "detail": check()}
        except Exception as exc:  # any failure is a report, never a 500
            logger.warning("health check %s failed: %s", name, exc)
            results[name] = {"status": "error", "detail": type(exc).__name__}
            status = "error" if essential else ("degraded" if status == "ok" else status)
        results[name]["ms"] = round((time.monotonic() - started) * 1000, 1)
    # Which space is live and whether the broker answers tell an outsider what to aim at.
    body = {"status": status, "checks": results} if _shows_detail(request) else {"status": status}
    return JsonResponse(body, status=503 if status == "error" else 200)
