"""Production settings refuse to start with unsafe values; the embedded default works."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


def run_django_check(**env) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    environment.update(DJANGO_SETTINGS_MODULE="shop_search.settings.production", **env)
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DJANGO_ALLOWED_HOSTS": "shop.example"}, "DJANGO_SECRET_KEY must be set"),
        ({"DJANGO_SECRET_KEY": "s" * 50, "DJANGO_ALLOWED_HOSTS": "*"}, "not '*'"),
        ({"DJANGO_SECRET_KEY": "s" * 50}, "DJANGO_ALLOWED_HOSTS must list"),
        (
            {
                "DJANGO_SECRET_KEY": "s" * 50,
                "DJANGO_ALLOWED_HOSTS": "shop.example",
                "DJANGO_DEBUG": "1",
            },
            "DJANGO_DEBUG must be off",
        ),
    ],
)
def test_production_settings_refuse_unsafe_configuration(env, message):
    result = run_django_check(**env)
    assert result.returncode != 0
    assert message in result.stderr


def test_production_settings_start_when_configured():
    result = run_django_check(DJANGO_SECRET_KEY="s" * 50, DJANGO_ALLOWED_HOSTS="shop.example")
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


@pytest.mark.django_db
def test_embedded_database_is_postgres_with_pgvector():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT current_setting('server_version_num')::int, "
            "(SELECT extversion FROM pg_extension WHERE extname = 'vector')"
        )
        server_version, vector_version = cursor.fetchone()
    assert server_version >= 180000
    assert tuple(int(part) for part in vector_version.split(".")[:2]) >= (0, 8)
