"""Test settings: the embedded database, eager Celery, cheap hashing, media in a temp dir."""

import tempfile
from pathlib import Path

from .base import *  # noqa: F403
from .base import env

DEBUG = False
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
MEDIA_ROOT = Path(tempfile.mkdtemp(prefix="shop-search-media-"))
PRIVATE_ROOT = Path(tempfile.mkdtemp(prefix="shop-search-private-"))
# Tasks run eagerly unless a test starts a real worker; that worker uses the in-memory
# broker of its own process.
CELERY_BROKER_URL = "memory://"
CELERY_TASK_ALWAYS_EAGER = True
CELERY_RESULT_BACKEND = "cache+memory://"
CLIP_DEVICE = "cpu"
MODEL_DIR = Path(tempfile.mkdtemp(prefix="shop-search-models-"))
FINETUNE_MIN_PAIRS = 16
LONG_TASKS_IN_THREAD_WHEN_EAGER = False
# Tests search with fixed-seed random models on purpose; the tests of the wait turn it on.
PHOTO_FEATURES_NEED_TRAINED_MODEL = False
# A test reads the vocabulary it has just written.
SEARCH_TYPO_REFRESH_SECONDS = 0
# Each database test creates the default space inside its own transaction instead
# (tests/conftest.py): a space kept in the test database would keep one HNSW index whose
# dead entries, left by every rolled-back test, crowd out live rows in later searches.
EMBEDDINGS_DEFAULT_SPACE_ON_MIGRATE = False
# No throttling, except in the test that checks it (it overrides the rate).
REST_FRAMEWORK = {**REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"anon": None}}  # noqa: F405

# One intra-op thread: the tests share two cores with the embedded Postgres (and with
# anything else running), and oversubscribed torch threads stall each other badly.
import torch  # noqa: E402

torch.set_num_threads(1)

# Several test runs on one machine (helpers, a second terminal) each need their own test
# database: the embedded server is shared, and --reuse-db runs would block on each other.
DATABASES["default"]["TEST"] = {  # noqa: F405
    "NAME": env.str("SHOP_TEST_DATABASE", default="test_shop_search")
}

# Replicas named in the environment stand for the primary here: no test database can be made
# on a read-only server (tests/ops/test_replicas.py starts a real replica of its own).
for _alias, _database in DATABASES.items():  # noqa: F405
    if _alias != "default":
        _database["TEST"] = {"MIRROR": "default"}
