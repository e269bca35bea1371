"""Production: every secret from the environment; refuses to start with unsafe values."""

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import env

SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
if not SECRET_KEY:
    raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set in production")
# The key signs sessions and password-reset links: a copied placeholder or a short key
# lets anyone forge them. The rules of Django's own deploy check (security.W009), enforced.
GENERATE_KEY = 'python -c "import secrets; print(secrets.token_urlsafe(50))"'
if "change-me" in SECRET_KEY.lower() or SECRET_KEY.startswith("django-insecure-"):
    raise ImproperlyConfigured(
        f"DJANGO_SECRET_KEY is a placeholder: generate a random one with {GENERATE_KEY}"
    )
if len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5:
    raise ImproperlyConfigured(
        f"DJANGO_SECRET_KEY must be at least 50 characters, at least 5 of them different "
        f"(it has {len(SECRET_KEY)}): generate a random one with {GENERATE_KEY}"
    )
if DEBUG:  # noqa: F405
    raise ImproperlyConfigured("DJANGO_DEBUG must be off in production")
if not ALLOWED_HOSTS or "*" in ALLOWED_HOSTS:  # noqa: F405
    raise ImproperlyConfigured("DJANGO_ALLOWED_HOSTS must list the shop's host names, not '*'")
if not CELERY_BROKER_URL:  # noqa: F405
    raise ImproperlyConfigured(
        "CELERY_BROKER_URL must be set in production (e.g. redis://redis:6379/0): without a "
        "broker, tasks run eagerly in the web process, a fine-tune for hours in a gunicorn thread"
    )

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
# Load balancers and orchestrators probe over plain HTTP: answer them, don't redirect.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=True)
# Browsers' preload lists take only sites that ask for a year or more (hstspreload.org).
if SECURE_HSTS_PRELOAD and SECURE_HSTS_SECONDS < 31536000:
    raise ImproperlyConfigured(
        "DJANGO_SECURE_HSTS_SECONDS must be at least 31536000 (a year) while "
        f"DJANGO_SECURE_HSTS_PRELOAD is on, got {SECURE_HSTS_SECONDS}"
    )
SECURE_CONTENT_TYPE_NOSNIFF = True

# Structured logs: one JSON object per line (LOG_FORMAT=plain for humans), from web,
# workers and beat alike (shop_search/celery.py keeps Celery from replacing this).
LOGGING["formatters"]["json"] = {"()": "shop_search.logs.JsonFormatter"}  # noqa: F405
LOG_FORMAT = env.str("LOG_FORMAT", default="json")
if LOG_FORMAT not in LOGGING["formatters"]:  # noqa: F405
    raise ImproperlyConfigured(f"LOG_FORMAT must be 'json' or 'plain', got {LOG_FORMAT!r}")
LOGGING["handlers"]["console"]["formatter"] = LOG_FORMAT  # noqa: F405
