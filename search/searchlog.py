"""The search log and shopper events: what was searched, what was shown, what was chosen.

Writes only; the judgments, insights and interleaving read these tables. Recording never
fails a search: a log row that cannot be written costs that search its `search_id`, no
result. Every search path (the API's and the shop pages' text, photo and similar-products
searches) logs through `search_logged`, once, after its page is built.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models.sql import InsertQuery
from django.utils import timezone

from catalog.models import Product
from embeddings.models import EmbeddingSpace
from search.features import FEATURES
from search.models import SearchEvent, SearchLog
from search.selectors import SearchPage

logger = logging.getLogger(__name__)

# What a front end may send as its `session` (and what the shop page's cookie holds): an
# opaque token of visible ASCII, so nothing with spaces or markup is ever hashed or echoed.
SESSION_MAX_LENGTH = 128
SESSION_PATTERN = re.compile(rf"[\x21-\x7e]{{1,{SESSION_MAX_LENGTH}}}")
SESSION_HELP = (
    f"1 to {SESSION_MAX_LENGTH} visible ASCII characters (no spaces), e.g. a random id the "
    "shop's front end keeps per visit; stored only as a keyed hash"
)


class EventRefused(ValueError):
    """An event that names no logged search, or a product that search did not show.

    `field` names the input at fault (search_id, type, product_id, position), for the API's
    errors by field."""

    def __init__(self, message: str, field: str = "non_field_errors"):
        super().__init__(message)
        self.field = field


def session_key(raw: str) -> str:
    """An opaque, fixed-length key for the front end's session string: whatever a front end
    sends (even an e-mail address by mistake) is never stored as sent."""
    if not raw:
        return ""
    return hashlib.sha256(f"{settings.SECRET_KEY}:session:{raw}".encode()).hexdigest()[:32]


def client_key(address: str) -> str:
    """A keyed hash of the client's address (HMAC with SECRET_KEY): enough to cap what one
    client weighs in the judgments, never the address, and kept only as long as the log."""
    if not address:
        return ""
    digest = hmac.new(settings.SECRET_KEY.encode(), f"client:{address}".encode(), "sha256")
    return digest.hexdigest()[:32]


def session_is_valid(raw: str) -> bool:
    return SESSION_PATTERN.fullmatch(raw) is not None


def search_filters_logged(data: Mapping) -> dict:
    """The filters a search was asked with, as JSON: the category's slug, prices as strings,
    only those given (validated input of search.api_common.SearchFiltersSerializer)."""
    logged: dict = {}
    category = data.get("category")
    if category is not None:
        logged["category"] = getattr(category, "slug", category)
    if data.get("brand"):
        logged["brand"] = data["brand"]
    for name in ("min_price", "max_price"):
        if data.get(name) is not None:
            logged[name] = str(data[name])
    if data.get("in_stock") is not None:
        logged["in_stock"] = data["in_stock"]
    if data.get("attributes"):
        logged["attributes"] = data["attributes"]
    return logged


def search_log_record(
    *,
    kind: str,
    channel: str,
    space: EmbeddingSpace | None,
    product_ids: Sequence[int],
    result_count: int,
    query: str = "",
    source_product_id: int | None = None,
    filters: dict | None = None,
    sort: str = "",
    offset: int = 0,
    session: str = "",
    client: str = "",
    interleaved_with: EmbeddingSpace | None = None,
    teams: Sequence[int] = (),
    features: Sequence[float] = (),
) -> uuid.UUID | None:
    """Store one search (the first SEARCH_LOG_TOP products shown) and return its search_id;
    None when the row could not be written (the search itself goes on)."""
    row = SearchLog(
        kind=kind,
        channel=channel,
        query=" ".join(query.lower().split())[:500],
        source_product_id=source_product_id,
        filters=filters or {},
        space=space,
        sort=sort,
        offset=offset,
        product_ids=list(product_ids)[: settings.SEARCH_LOG_TOP],
        result_count=result_count,
        session=session_key(session),
        client=client_key(client),
        interleaved_with=interleaved_with,
        teams=list(teams)[: settings.SEARCH_LOG_TOP],
        features=list(features)[: settings.SEARCH_LOG_TOP * len(FEATURES)],
    )
    try:
        if connection.in_atomic_block:
            # The caller's transaction decides when it commits; a savepoint keeps a failed
            # write from spoiling it.
            with transaction.atomic():
                row.save(force_insert=True)
        else:
            _insert_without_waiting_for_flush(row)
    except DatabaseError:
        logger.warning("search log row not written", exc_info=True)
        return None
    return row.id


# Waiting for the commit's WAL flush (an fsync) was most of a logged search's overhead
# (bench/README.md). For a log row, not waiting is right: a database crash can lose the
# last moment's rows (at most 3 x wal_writer_delay), never a result or any other write.
_ASYNC_COMMIT = "SET LOCAL synchronous_commit TO OFF"


def _insert_without_waiting_for_flush(row: SearchLog) -> None:
    """The row's INSERT in a transaction of its own that commits without waiting for the
    disk: one round trip, as Postgres runs the statements of one simple query as one
    transaction (with client-side binding, Django's default for psycopg 3 and psycopg 2)."""
    query = InsertQuery(SearchLog)
    query.insert_values([f for f in SearchLog._meta.local_concrete_fields], [row])
    ((sql, params),) = query.get_compiler(connection=connection).as_sql()
    if connection.settings_dict.get("OPTIONS", {}).get("server_side_binding"):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(_ASYNC_COMMIT)
            cursor.execute(sql, params)
        return
    with connection.cursor() as cursor:
        cursor.execute(f"{_ASYNC_COMMIT}; {sql}", params)


def search_logged(
    page: SearchPage,
    *,
    kind: str,
    channel: str,
    query: str = "",
    source_product_id: int | None = None,
    filters: dict | None = None,
    offset: int = 0,
    session: str = "",
    client: str = "",
) -> SearchPage:
    """The page with its `search_id`: logs the products it shows, in order, once the page is
    built (never on the ranking path), and for an interleaved search which space contributed
    each (search.interleaving); `filters` gain `understood` (search.understanding) when the
    query was; `client` is the searcher's address (shop_search.throttling.client_ip), stored
    as a keyed hash. With SEARCH_LOG_ENABLED off, the page as it is."""
    if not settings.SEARCH_LOG_ENABLED:
        return page
    if page.understood:
        # Beside the shopper's own filters, what the query was understood to filter by, so
        # that what is learned from this search knows why its products were shown.
        filters = {
            **(filters or {}),
            "understood": [
                {"kind": item.kind, "words": item.words, "params": item.params}
                for item in page.understood
            ],
        }
    search_id = search_log_record(
        kind=kind,
        channel=channel,
        space=page.space,
        product_ids=[hit.product.pk for hit in page.results],
        result_count=page.count,
        query=query,
        source_product_id=source_product_id,
        filters=filters,
        sort="" if kind == SearchLog.Kind.SIMILAR else page.sort,
        offset=offset,
        session=session,
        client=client,
        interleaved_with=page.interleaved_with,
        teams=page.teams,
        features=page_features(page),
    )
    return replace(page, search_id=search_id)


def page_features(page: SearchPage) -> list[float]:
    """The features of the products shown, in order, row after row (SearchLog.features);
    NaN for a product the ranked window did not have (a related product from elsewhere);
    none for a page without features (photo searches)."""
    if not page.features:
        return []
    missing = (math.nan,) * len(FEATURES)
    return [
        value
        for hit in page.results[: settings.SEARCH_LOG_TOP]
        for value in page.features.get(hit.product.pk, missing)
    ]


_INSERT_EVENT = """
    INSERT INTO {event} (search_id, type, product_id, position, created)
    SELECT %s, %s, p.id, %s, %s FROM {product} p WHERE p.id = %s
    ON CONFLICT (search_id, type, product_id) DO NOTHING
    RETURNING id
"""


def search_event_record(
    *,
    search_id: uuid.UUID,
    type: str,
    product_id: int,
    session: str,
    position: int | None = None,
) -> tuple[SearchEvent, bool]:
    """Store what a shopper did with a product of a logged search, once: the same event
    sent again (a double click, a retried beacon, the no-JS link after the beacon) returns
    the stored one and False.

    Only the searcher's own evidence is taken: `session` (the API's, or the shop page's
    cookie, as sent; "" for none) must be the search's, and a cart or purchase must follow
    a click on that product in that search. Refused, not stored as discarded: the sender
    learns at once what is wrong, and nothing an attacker sends costs a row."""
    if type not in SearchEvent.Type.values:
        raise EventRefused(
            f"Unknown event type {type!r}: use one of {', '.join(SearchEvent.Type.values)}.",
            "type",
        )
    search = SearchLog.objects.filter(pk=search_id).only("offset", "product_ids", "session").first()
    if search is None:
        raise EventRefused(
            f"Unknown search_id {search_id}: no logged search has it (searches are kept "
            f"{settings.SEARCH_LOG_DAYS} days).",
            "search_id",
        )
    if search.session != session_key(session):
        raise EventRefused(
            f"Search {search_id} was not made in this session: send the `session` the search "
            "was made with (none if it had none).",
            "session",
        )
    shown_at = search.position_of(product_id)
    if shown_at is None:
        raise EventRefused(
            f"Product {product_id} was not among the results of search {search_id}.",
            "product_id",
        )
    if position is not None and position != shown_at:
        raise EventRefused(
            f"Product {product_id} was shown at position {shown_at} in search {search_id}, "
            f"not {position}.",
            "position",
        )
    clicks = SearchEvent.objects.filter(search_id=search.pk, type="click", product_id=product_id)
    if type != SearchEvent.Type.CLICK and not clicks.exists():
        raise EventRefused(
            f"Product {product_id} was not clicked in search {search_id}: a {type} counts "
            "only after a click on the product in its search.",
            "type",
        )
    # One statement: the unique constraint decides between concurrent posts (the loser's
    # insert does nothing), and a product deleted since the search inserts nothing either.
    created = timezone.now()
    sql = _INSERT_EVENT.format(
        event=connection.ops.quote_name(SearchEvent._meta.db_table),
        product=connection.ops.quote_name(Product._meta.db_table),
    )
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql, [search.pk, type, shown_at, created, product_id])
            inserted = cursor.fetchone()
    except IntegrityError:  # the product was deleted between the check and the commit
        inserted = None
    if inserted is not None:
        event = SearchEvent(
            id=inserted[0],
            search_id=search.pk,
            type=type,
            product_id=product_id,
            position=shown_at,
            created=created,
        )
        return event, True
    event = SearchEvent.objects.filter(
        search_id=search.pk, type=type, product_id=product_id
    ).first()
    if event is None:
        raise EventRefused(f"Product {product_id} no longer exists.", "product_id")
    return event, False


def search_log_prune(*, days: int | None = None, batch_size: int | None = None) -> int:
    """Delete the searches older than `days` (SEARCH_LOG_DAYS), their events with them, in
    committed batches of `batch_size` (SEARCH_LOG_PRUNE_BATCH) searches: no long lock, no
    unbounded statement. Returns how many searches were deleted."""
    days = settings.SEARCH_LOG_DAYS if days is None else days
    batch_size = batch_size or settings.SEARCH_LOG_PRUNE_BATCH
    cutoff = timezone.now() - timedelta(days=days)
    deleted = 0
    while True:
        with transaction.atomic():
            ids = list(
                SearchLog.objects.filter(created__lt=cutoff)
                .order_by("created")
                .values_list("pk", flat=True)[:batch_size]
            )
            if not ids:
                return deleted
            # Events explicitly first, in one statement; the cascade would select them first.
            SearchEvent.objects.filter(search_id__in=ids).delete()
            SearchLog.objects.filter(pk__in=ids).delete()
        deleted += len(ids)
        if len(ids) < batch_size:
            return deleted
