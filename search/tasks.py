"""Thin Celery tasks of the search app: take ids, call a service (imported in the body, so
the services that queue these tasks can import this module). Housekeeping scheduled by beat
(settings.CELERY_BEAT_SCHEDULE) lives here too."""

import logging

from celery import shared_task
from django.db import InterfaceError, OperationalError

logger = logging.getLogger(__name__)


@shared_task(
    acks_late=False,
    # A lost connection heals; batches already deleted stay deleted, the rest go on retry.
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=30,
    max_retries=5,
)
def search_log_prune() -> int:
    """Daily: delete searches older than SEARCH_LOG_DAYS and their events, in batches."""
    from search.searchlog import search_log_prune as prune

    return prune()


@shared_task(acks_late=False, time_limit=6 * 3600, soft_time_limit=6 * 3600 - 60)
def interleaving_test_prepare(test_id: int) -> str:
    """Fill and index an interleaving test's candidate, then start merging searches; on the
    `train` queue, like activating a space."""
    from embeddings.reindex import space_prepare_fanout
    from search.interleaving import interleaving_test_run, interleaving_test_stop
    from search.models import InterleavingTest

    test = InterleavingTest.objects.select_related("candidate").filter(pk=test_id).first()
    if test is None or test.status != InterleavingTest.Status.PREPARING:
        logger.warning("interleaving test %s is gone or not preparing; nothing to do", test_id)
        return ""
    try:
        space_prepare_fanout(space=test.candidate)
    except Exception as exc:
        interleaving_test_stop(test=test, decision=f"stopped: the candidate was not filled: {exc}")
        raise
    return interleaving_test_run(test=test).status


@shared_task(acks_late=False)
def interleaving_check() -> dict:
    """Beat, every SEARCH_INTERLEAVE_CHECK_INTERVAL: tally the running test, and promote or
    stop it when it is decided (SEARCH_INTERLEAVE_AUTO_PROMOTE)."""
    from search.interleaving import interleaving_check as check

    tally = check()
    return tally.as_dict() if tally else {}


@shared_task(acks_late=False, time_limit=3600, soft_time_limit=3600 - 60)
def ranker_train() -> str:
    """Beat, every SEARCH_RANKER_TRAIN_INTERVAL: train a learned ranker on the log; it goes
    live only through the gates (search.ranker_training). Too little log: nothing, logged."""
    from search.ranker_training import RankerTrainingError
    from search.ranker_training import ranker_train as train

    try:
        return train().metrics["decision"]
    except RankerTrainingError as exc:
        logger.info("no ranker trained: %s", exc)
        return str(exc)
