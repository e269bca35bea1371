"""Settings come from the environment through one reader whose errors name the variable;
production refuses to start with unsafe values; the embedded default works."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection

from shop_search.settings.environment import Env

ROOT = Path(__file__).resolve().parents[2]
KEY = "x8Vq-2rLp_9sKd3mZ7bWc1nYf5tHg0jQa4eUo6iRl8vBx2kNs9wT"  # 52 characters, well mixed
PLACEHOLDER = next(
    line.split("=", 1)[1]
    for line in (ROOT / "docker" / ".env.example").read_text().splitlines()
    if line.startswith("DJANGO_SECRET_KEY=")
)


def run_manage(*args, **env) -> subprocess.CompletedProcess:
    environment = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("DJANGO_") and k != "CELERY_BROKER_URL"
    }
    environment.update(DJANGO_SETTINGS_MODULE="shop_search.settings.production", **env)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def run_django_check(**env) -> subprocess.CompletedProcess:
    return run_manage("check", **env)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DJANGO_ALLOWED_HOSTS": "shop.example"}, "DJANGO_SECRET_KEY must be set"),
        ({"DJANGO_SECRET_KEY": KEY, "DJANGO_ALLOWED_HOSTS": "*"}, "not '*'"),
        ({"DJANGO_SECRET_KEY": KEY}, "DJANGO_ALLOWED_HOSTS must list"),
        (
            {
                "DJANGO_SECRET_KEY": KEY,
                "DJANGO_ALLOWED_HOSTS": "shop.example",
                "DJANGO_DEBUG": "1",
            },
            "DJANGO_DEBUG must be off",
        ),
        (
            {"DJANGO_SECRET_KEY": KEY, "DJANGO_ALLOWED_HOSTS": "shop.example"},
            "CELERY_BROKER_URL must be set in production",
        ),
        ({"DJANGO_SECRET_KEY": PLACEHOLDER}, "DJANGO_SECRET_KEY is a placeholder"),
        ({"DJANGO_SECRET_KEY": "Change-Me" + KEY}, "DJANGO_SECRET_KEY is a placeholder"),
        ({"DJANGO_SECRET_KEY": KEY[:49]}, "DJANGO_SECRET_KEY must be at least 50 characters"),
        ({"DJANGO_SECRET_KEY": "s" * 60}, "at least 5 of them different (it has 60)"),
        (
            {
                "DJANGO_SECRET_KEY": KEY,
                "DJANGO_ALLOWED_HOSTS": "shop.example",
                "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
                "DJANGO_SECURE_HSTS_SECONDS": "3600",
            },
            "DJANGO_SECURE_HSTS_SECONDS must be at least 31536000 (a year) while "
            "DJANGO_SECURE_HSTS_PRELOAD is on, got 3600",
        ),
        ({"API_NUM_PROXIES": "-1"}, "API_NUM_PROXIES must be 0 or more, got -1"),
        (
            {"SEARCH_QUERY_CACHE_SECONDS": "604800"},
            "SEARCH_QUERY_CACHE_SECONDS must be between 1 and 86400 (a day), got 604800",
        ),
        ({"EMBED_BATCH_SIZE": "abc"}, "EMBED_BATCH_SIZE must be an integer, got 'abc'"),
        ({"SEARCH_SIMILARITY_FLOOR": "high"}, "SEARCH_SIMILARITY_FLOOR must be a number"),
    ],
)
def test_production_settings_refuse_unsafe_configuration(env, message):
    result = run_django_check(**env)
    assert result.returncode != 0
    assert message in result.stderr


def test_production_settings_start_when_configured():
    result = run_django_check(
        DJANGO_SECRET_KEY=KEY,
        DJANGO_ALLOWED_HOSTS="shop.example",
        CELERY_BROKER_URL="redis://127.0.0.1:6379/0",  # parsed, never connected to by `check`
    )
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_production_defaults_are_the_safe_ones():
    configured = {
        "DJANGO_SECRET_KEY": KEY,
        "DJANGO_ALLOWED_HOSTS": "shop.example",
        "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
    }
    names = [
        "SECURE_HSTS_SECONDS",
        "SECURE_HSTS_PRELOAD",
        "SEARCH_QUERY_CACHE_SECONDS",
        "AXES_FAILURE_LIMIT",
        "AXES_LOCKOUT_PARAMETERS",
    ]
    script = (
        "from django.conf import settings as s; import json; "
        f"print(json.dumps([getattr(s, n) for n in {names!r}] + "
        "[s.REST_FRAMEWORK['NUM_PROXIES'], s.REST_FRAMEWORK['DEFAULT_AUTHENTICATION_CLASSES'], "
        "len(s.AUTH_PASSWORD_VALIDATORS)]))"
    )
    result = run_manage("shell", "-c", script, **configured)
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout.strip().splitlines()[-1])
    assert values == [
        31536000,
        True,
        3600,
        5,
        [["username", "ip_address"]],
        0,  # API_NUM_PROXIES unset: X-Forwarded-For is not believed (None would believe it)
        [
            "rest_framework.authentication.SessionAuthentication",
            "rest_framework.authentication.TokenAuthentication",
        ],
        4,
    ]


def test_environment_values_are_read_as_they_always_were(monkeypatch):
    monkeypatch.setenv("SECRET", "$not-a-reference")
    monkeypatch.setenv("FLAG", " Yes ")
    monkeypatch.setenv("NOT_A_FLAG", "ok")
    monkeypatch.setenv("RATIO", "1e-3")
    monkeypatch.setenv("HOSTS", "a.example,,b.example")
    env = Env()
    assert env.str("SECRET") == "$not-a-reference"
    assert env.bool("FLAG") is True
    assert env.bool("NOT_A_FLAG") is False
    assert env.float("RATIO") == 0.001
    assert env.list("HOSTS") == ["a.example", "b.example"]
    assert env.int("UNSET_IN_THIS_TEST", default=7) == 7


def test_environment_errors_name_the_variable(monkeypatch):
    monkeypatch.setenv("IMPORT_URL_TIMEOUT", "0.5s")
    with pytest.raises(
        ImproperlyConfigured, match="IMPORT_URL_TIMEOUT must be a number, got '0.5s'"
    ):
        Env().float("IMPORT_URL_TIMEOUT", default=15.0)
    monkeypatch.delenv("UNSET_IN_THIS_TEST", raising=False)
    with pytest.raises(ImproperlyConfigured, match="Set the UNSET_IN_THIS_TEST environment"):
        Env().str("UNSET_IN_THIS_TEST")


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
