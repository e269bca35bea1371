"""The ops tests' own Redis and PostgreSQL, and the production topology on top of them."""

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.ops.topology import PostgresServer, RedisServer, Seeder, Topology


@pytest.fixture(scope="session")
def ops_workdir():
    # Short, under /tmp: Unix socket paths are limited to ~100 characters.
    path = Path(tempfile.mkdtemp(prefix="shop-ops-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def ops_redis(ops_workdir):
    redis = RedisServer(ops_workdir / "redis")
    redis.start()
    yield redis
    redis.stop()


@pytest.fixture(scope="session")
def ops_postgres(ops_workdir, ops_redis):
    postgres = PostgresServer(ops_workdir / "pg")
    try:
        Topology(workdir=ops_workdir, redis=ops_redis, postgres=postgres).manage(
            "migrate", "--no-input", "--verbosity", "0"
        )
        yield postgres
    finally:
        postgres.destroy()


@pytest.fixture(scope="session")
def ops_seeder(ops_workdir, ops_redis, ops_postgres):
    topology = Topology(workdir=ops_workdir, redis=ops_redis, postgres=ops_postgres)
    topology.media = ops_workdir / "media"
    seeder = Seeder(topology.env(), log=ops_workdir / "seeder.log")
    yield seeder
    seeder.stop()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def topology(ops_workdir, ops_redis, ops_postgres, ops_seeder, request):
    """A clean shop: empty catalog, empty broker; every process stopped afterwards."""
    if not ops_redis.ping():  # a test stopped it and failed before starting it again
        ops_redis.start()
    if not ops_postgres.running():
        ops_postgres.start()
    ops_redis.command("FLUSHALL")
    # Sessions a failed test left open (a held row) would block the TRUNCATE.
    ops_postgres.query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    ops_postgres.query("TRUNCATE catalog_product, auth_user CASCADE")
    workdir = ops_workdir / request.node.name[:40]
    workdir.mkdir()
    topology = Topology(workdir=workdir, redis=ops_redis, postgres=ops_postgres)
    topology.media = ops_workdir / "media"  # one shop: files outlive a test like rows do
    topology.seeder = ops_seeder  # Django and the model loaded once, not in every test
    yield topology
    topology.stop_all(graceful=False)  # nothing to keep: the next test starts afresh
    if getattr(request.node, "rep_call", None) and request.node.rep_call.failed:
        for process in topology.processes_started:
            print(f"--- {process.name} ({process.log}) ---\n{process.output()}")
