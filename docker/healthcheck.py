"""Container health check of the web process: GET /healthz as the proxy would send it."""

import os
import sys
import urllib.error
import urllib.request

host = os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost").split(",")[0].lstrip(".")
request = urllib.request.Request(
    "http://127.0.0.1:8000/healthz",
    # The allowed host name, and HTTPS as seen behind the TLS proxy (no redirect).
    headers={"Host": host, "X-Forwarded-Proto": "https"},
)
try:
    with urllib.request.urlopen(request, timeout=10) as response:
        sys.exit(0 if response.status == 200 else 1)
except (OSError, urllib.error.HTTPError) as exc:
    print(f"unhealthy: {exc}", file=sys.stderr)
    sys.exit(1)
