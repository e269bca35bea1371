"""The search log and shopper events: what was searched, what was shown, what was chosen.

Writes only; the judgments, insights and interleaving read these tables. Recording never
fails a search: a log row that cannot be written costs that search its `search_id`, no
result.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Sequence

from django.conf import settings
from django.db import DatabaseError

from embeddings.models import EmbeddingSpace
from search.models import SearchEvent, SearchLog

logger = logging.getLogger(__name__)


class EventRefused(ValueError):
    """An event that names no logged search, or a product that search did not show."""


def session_key(raw: str) -> str:
    """An opaque, fixed-length key for the front end's session string: whatever a front end
    sends (even an e-mail address by mistake) is never stored as sent."""
    if not raw:
        return ""
    return hashlib.sha256(f"{settings.SECRET_KEY}:session:{raw}".encode()).hexdigest()[:32]


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
    interleaved_with: EmbeddingSpace | None = None,
    teams: Sequence[int] = (),
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
        interleaved_with=interleaved_with,
        teams=list(teams)[: settings.SEARCH_LOG_TOP],
    )
    try:
        row.save(force_insert=True)
    except DatabaseError:
        logger.warning("search log row not written", exc_info=True)
        return None
    return row.id


def search_event_record(
    *, search_id: uuid.UUID, type: str, product_id: int, position: int | None = None
) -> tuple[SearchEvent, bool]:
    """Store what a shopper did with a product of a logged search, once: the same event
    sent again (a double click, a retried beacon) returns the stored one and False."""
    search = SearchLog.objects.filter(pk=search_id).first()
    if search is None:
        raise EventRefused(f"Unknown search_id {search_id}: no logged search has it.")
    shown_at = search.position_of(product_id)
    if shown_at is None:
        raise EventRefused(f"Product {product_id} was not among the results of search {search_id}.")
    if position is not None and position != shown_at:
        raise EventRefused(
            f"Product {product_id} was shown at position {shown_at} in search {search_id}, "
            f"not {position}."
        )
    # The unique constraint decides between concurrent posts; get_or_create re-reads on its
    # IntegrityError, so each sender gets the one stored row.
    return SearchEvent.objects.get_or_create(
        search=search, type=type, product_id=product_id, defaults={"position": shown_at}
    )
