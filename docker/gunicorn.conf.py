"""gunicorn settings of the web process (docker/compose.yaml, and the ops tests' topology).

Threads rather than many processes: each process holds the active space's text tower, and
a search spends most of its time in Postgres or in torch, both of which release the GIL.
"""

import os

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
graceful_timeout = 30
keepalive = 5
# Recycle workers now and then, so slow leaks (in any library) never accumulate.
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "5000"))
max_requests_jitter = max_requests // 10
accesslog = "-"
errorlog = "-"
# Access log lines with the `session` parameter's value redacted (it is never stored raw).
logger_class = "shop_search.logs.AccessLogger"
# The longest request line read, in bytes (gunicorn's most; its default is 4094): a GET of
# a 500-character query in any script (up to 12 bytes a character, percent-encoded) with
# its filters. nginx's large_client_header_buffers (docker/nginx.conf) lets as much through.
limit_request_line = 8190
loglevel = os.environ.get("LOG_LEVEL", "info").lower()

if os.environ.get("LOG_FORMAT", "json") == "json":
    # gunicorn's own and access logs as JSON lines too, like the application's.
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "shop_search.logs.JsonFormatter"}},
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": "json"},
        },
        "loggers": {
            "gunicorn.error": {
                "handlers": ["console"],
                "level": loglevel.upper(),
                "propagate": False,
            },
            "gunicorn.access": {"handlers": ["console"], "level": "INFO", "propagate": False},
        },
    }
