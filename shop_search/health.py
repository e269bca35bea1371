"""/healthz: can this process serve? Database, broker and an active space (a read: no model
is loaded, so a probe stays cheap; the first search loads it)."""

import logging
import time

from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

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


# Without the database or the model this process cannot answer a search: it is unhealthy.
# A broker outage only delays embedding of new uploads (the sweep catches up), so the web
# process stays in service and reports itself degraded.
CHECKS = {
    "database": (_check_database, True),
    "space": (_check_space, True),
    "broker": (_check_broker, False),
}


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
    return JsonResponse(
        {"status": status, "checks": results}, status=503 if status == "error" else 200
    )
