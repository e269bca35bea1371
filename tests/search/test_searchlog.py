"""The search log: one row per search, one event per (search, type, product)."""

import uuid

import pytest

from search.models import SearchEvent, SearchLog
from search.searchlog import EventRefused, client_key, search_event_record, search_log_record

SHOPPER = "shopper@example.com"


@pytest.fixture
def logged_search(make_product, default_space):
    shown = [make_product(sku=f"LOG-{n}", title=f"product {n}") for n in range(3)]
    search_id = search_log_record(
        kind=SearchLog.Kind.TEXT,
        channel=SearchLog.Channel.API,
        space=default_space,
        query="  Red   DRESS ",
        product_ids=[p.pk for p in shown],
        result_count=3,
        offset=20,
        session=SHOPPER,
        client="192.0.2.7",
    )
    return SearchLog.objects.get(pk=search_id), shown


def test_a_search_is_logged_normalised_and_without_the_raw_session(logged_search):
    search, shown = logged_search
    assert search.query == "red dress"
    assert search.product_ids == [p.pk for p in shown]
    assert search.position_of(shown[1].pk) == 22  # the second product of the second page
    assert "example" not in search.session
    assert len(search.session) == 32
    # The address too: a keyed hash (HMAC with SECRET_KEY), deleted with the row.
    assert search.client == client_key("192.0.2.7") != client_key("192.0.2.8")
    assert "192" not in search.client
    assert len(search.client) == 32


def test_the_same_event_twice_is_stored_once(logged_search):
    search, shown = logged_search
    first, created = search_event_record(
        search_id=search.pk, type="click", product_id=shown[0].pk, session=SHOPPER
    )
    again, created_again = search_event_record(
        search_id=search.pk, type="click", product_id=shown[0].pk, position=21, session=SHOPPER
    )
    assert (created, created_again) == (True, False)
    assert first.pk == again.pk
    assert again.position == 21
    assert SearchEvent.objects.filter(search=search).count() == 1


def test_events_for_unknown_searches_or_products_not_shown_are_refused(logged_search, make_product):
    search, shown = logged_search
    other = make_product(sku="LOG-OTHER", title="not shown")
    with pytest.raises(EventRefused, match="Unknown search_id"):
        search_event_record(
            search_id=uuid.uuid4(), type="click", product_id=shown[0].pk, session=SHOPPER
        )
    with pytest.raises(EventRefused, match="was not among the results"):
        search_event_record(search_id=search.pk, type="click", product_id=other.pk, session=SHOPPER)
    with pytest.raises(EventRefused, match="shown at position 21"):
        search_event_record(
            search_id=search.pk, type="click", product_id=shown[0].pk, position=3, session=SHOPPER
        )
    assert not SearchEvent.objects.exists()
