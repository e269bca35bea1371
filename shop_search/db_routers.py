"""Search reads on streaming replicas; every write, and every other read, on the primary.

`DATABASE_REPLICA_URLS` adds the aliases `replica_1`, `replica_2`... (settings). A view
that serves shoppers runs its reads through `search_read(...)`: inside it the router sends
ORM reads, and `read_connection()` the search modules' raw SQL, to one healthy replica.
Outside it, in a transaction on the primary, and after a write inside it, everything goes
to the primary, so whatever a request wrote it reads back. Writes always go to the primary.

A replica is healthy when it answers and has replayed what it received, or lags by at most
`DATABASE_REPLICA_MAX_LAG_SECONDS`; each process checks each replica at most every
`DATABASE_REPLICA_CHECK_SECONDS` and keeps the verdict meanwhile. A replica that fails
under a search is left out at once, and the search runs again on the primary.
"""

import logging
import random
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TypeVar

from django.conf import settings
from django.db import (
    DEFAULT_DB_ALIAS,
    DatabaseError,
    InterfaceError,
    OperationalError,
    connections,
)

logger = logging.getLogger(__name__)

REPLICA_ALIAS_PREFIX = "replica_"
T = TypeVar("T")

# How far a replica is behind, in seconds. An idle primary writes no new transactions, so
# the last replayed one grows old on a replica that is fully caught up: a replica that has
# replayed all the WAL it received lags by 0, whatever the age of that transaction.
LAG_SQL = """
    SELECT CASE
        WHEN NOT pg_is_in_recovery() THEN 0
        WHEN pg_last_wal_replay_lsn() >= pg_last_wal_receive_lsn() THEN 0
        ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp())
    END
"""


@dataclass
class _ReadScope:
    alias: str
    wrote: bool = False


_scope: ContextVar[_ReadScope | None] = ContextVar("search_read_scope", default=None)


def replica_aliases() -> list[str]:
    return [alias for alias in connections.settings if alias.startswith(REPLICA_ALIAS_PREFIX)]


def search_read_alias() -> str:
    """The database a read goes to now: the search's replica inside `search_read`, unless a
    transaction is open on the primary or the scope wrote; else the primary."""
    scope = _scope.get()
    if scope is None or scope.wrote or connections[DEFAULT_DB_ALIAS].in_atomic_block:
        return DEFAULT_DB_ALIAS
    return scope.alias


def read_connection():
    """The connection for a search's raw SQL (what the router does for the ORM)."""
    return connections[search_read_alias()]


class ReplicaRouter:
    """Django's database router (DATABASE_ROUTERS): reads as `search_read_alias` says,
    writes to the primary, migrations on the primary only."""

    def db_for_read(self, model, **hints):
        return search_read_alias()

    def db_for_write(self, model, **hints):
        if (scope := _scope.get()) is not None:
            scope.wrote = True  # read what was written: the rest of the scope on the primary
        return DEFAULT_DB_ALIAS

    def allow_relation(self, obj1, obj2, **hints):
        return True  # every alias holds the same rows

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        return db == DEFAULT_DB_ALIAS


# --- health -------------------------------------------------------------------------------


@dataclass
class _Verdict:
    healthy: bool
    checked: float
    reason: str = ""


_verdicts: dict[str, _Verdict] = {}
_verdicts_lock = threading.Lock()


def _verdict_set(alias: str, healthy: bool, reason: str) -> None:
    with _verdicts_lock:
        before = _verdicts.get(alias)
        _verdicts[alias] = _Verdict(healthy, time.monotonic(), reason)
    if before is None or before.healthy != healthy:
        if healthy:
            logger.info("replica %s in use for searches (%s)", alias, reason)
        else:
            logger.warning("replica %s left out of searches: %s", alias, reason)


def _close_quietly(alias: str) -> None:
    with suppress(DatabaseError):
        connections[alias].close()


def replica_check(alias: str) -> bool:
    """Ask the replica now whether it answers and how far behind it is; remember the verdict."""
    try:
        with connections[alias].cursor() as cursor:
            cursor.execute(LAG_SQL)
            (lag,) = cursor.fetchone()
    except (OperationalError, InterfaceError) as error:
        _close_quietly(alias)
        _verdict_set(alias, False, f"unreachable: {str(error).strip().splitlines()[0]}")
        return False
    limit = settings.DATABASE_REPLICA_MAX_LAG_SECONDS
    if lag is None or float(lag) > limit:
        shown = "unknown" if lag is None else f"{float(lag):.2f} s"
        _verdict_set(alias, False, f"lags {shown}, over {limit} s")
        return False
    _verdict_set(alias, True, f"lags {float(lag):.2f} s")
    return True


def replica_healthy(alias: str) -> bool:
    """The remembered verdict, checked again when older than DATABASE_REPLICA_CHECK_SECONDS."""
    verdict = _verdicts.get(alias)
    if verdict is not None and (
        time.monotonic() - verdict.checked < settings.DATABASE_REPLICA_CHECK_SECONDS
    ):
        return verdict.healthy
    return replica_check(alias)


def replica_failed(alias: str, error: Exception) -> None:
    """A replica broke under a search: left out until its next check finds it healthy."""
    _close_quietly(alias)
    _verdict_set(alias, False, f"failed under a search: {str(error).strip().splitlines()[0]}")


def replica_choose() -> str:
    """A healthy replica, at random among them (spreading the load), or the primary."""
    if connections[DEFAULT_DB_ALIAS].in_atomic_block:
        return DEFAULT_DB_ALIAS  # the transaction's own writes are on the primary only
    aliases = replica_aliases()
    random.shuffle(aliases)
    return next((alias for alias in aliases if replica_healthy(alias)), DEFAULT_DB_ALIAS)


def search_read(run: Callable[..., T], /, *args, **kwargs) -> T:
    """`run(*args, **kwargs)` with its reads on a healthy replica; if the replica fails under
    it, run again on the primary, so that the search still answers.

    `run` must only read (the search log is written after it): running it twice is safe.
    """
    alias = replica_choose()
    token = _scope.set(_ReadScope(alias))
    try:
        return run(*args, **kwargs)
    except (OperationalError, InterfaceError) as error:
        scope = _scope.get()
        if alias == DEFAULT_DB_ALIAS or scope is None or scope.wrote:
            raise  # the primary's own error: nothing to fall back to
        replica_failed(alias, error)
    finally:
        _scope.reset(token)
    return run(*args, **kwargs)
