"""DATABASE_REPLICA_URLS become database aliases; a replica that does not answer is left out
and the primary serves the search (tests/ops/test_replicas.py runs a real replica)."""

import logging

import pytest
from django.db import connections, router, transaction

from catalog.models import Product
from shop_search.db_routers import read_connection, replica_aliases, search_read
from shop_search.settings.base import replica_databases


def test_replica_urls_become_replica_aliases_that_give_up_connecting_quickly():
    databases = replica_databases(
        [" postgres://shop:p%40ss@db-replica:5433/shop_search ", "", "postgresql://r2/shop"]
    )
    assert list(databases) == ["replica_1", "replica_2"]
    first = databases["replica_1"]
    assert (first["HOST"], first["PORT"], first["NAME"]) == ("db-replica", "5433", "shop_search")
    assert (first["USER"], first["PASSWORD"]) == ("shop", "p@ss")
    assert first["OPTIONS"] == {"connect_timeout": 2}
    assert replica_databases([]) == {}
    with pytest.raises(ValueError, match="DATABASE_REPLICA_URLS must be a postgres:// URL"):
        replica_databases(["mysql://db/shop"])


@pytest.fixture
def unreachable_replica(django_db_blocker, tmp_path, settings):
    """A replica in DATABASES, on a socket where no server listens (an alias of its own:
    each process remembers a verdict per alias)."""
    settings.DATABASE_REPLICA_CHECK_SECONDS = 0
    connections.settings["replica_9"] = {
        **connections["default"].settings_dict,
        "HOST": str(tmp_path),
        "TEST": {"MIRROR": "default"},
    }
    try:
        with django_db_blocker.unblock():  # it only tries to connect: nothing to roll back
            yield "replica_9"
    finally:
        connections["replica_9"].close()
        del connections["replica_9"]
        del connections.settings["replica_9"]


def test_an_unreachable_replica_is_left_out_and_the_primary_answers(unreachable_replica, caplog):
    caplog.set_level(logging.INFO, logger="shop_search.db_routers")
    assert replica_aliases() == ["replica_9"]

    def where_reads_go():
        return read_connection().alias, router.db_for_read(Product)

    assert search_read(where_reads_go) == ("default", "default")
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert "replica replica_9 left out of searches: unreachable" in record.getMessage()

    # Checked again, still down: no second line, the state did not change.
    search_read(where_reads_go)
    assert len(caplog.records) == 1


def test_in_a_transaction_on_the_primary_searches_read_the_primary_and_ask_no_replica(
    unreachable_replica, caplog
):
    with transaction.atomic():
        assert search_read(lambda: read_connection().alias) == "default"
    assert not caplog.records  # the replica was not even checked


def test_writes_and_reads_outside_a_search_go_to_the_primary():
    assert router.db_for_write(Product) == "default"
    assert router.db_for_read(Product) == "default"
    assert read_connection().alias == "default"
