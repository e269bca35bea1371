"""Services that queue the search app's tasks (search.tasks calls the modules that do the
work, so no module imports its own caller): starting an interleaving test."""

from __future__ import annotations

import logging

from django.db import connection, transaction
from django.utils import timezone

from embeddings.models import EmbeddingSpace
from embeddings.spaces import space_active
from search.interleaving import INTERLEAVING_START_LOCK, InterleavingError
from search.models import InterleavingTest
from search.tasks import interleaving_test_prepare as interleaving_test_prepare_task
from shop_search.celery import queue_long_task

logger = logging.getLogger(__name__)


def interleaving_test_start(
    *, candidate: EmbeddingSpace, prepared: bool = False
) -> InterleavingTest:
    """Start testing `candidate` against the active space, unless a test is unfinished.

    `prepared`: the candidate is filled and indexed already (fine-tuning held it), so
    searches are merged at once; otherwise a task on the `train` queue fills and indexes
    it first (embeddings.vectors.space_prepare), then the test runs.
    """
    with transaction.atomic():
        with connection.cursor() as cursor:  # concurrent starts wait here, then see the test
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [INTERLEAVING_START_LOCK])
        unfinished = (
            InterleavingTest.objects.filter(status__in=InterleavingTest.UNFINISHED)
            .select_related("candidate")
            .first()
        )
        if unfinished is not None:
            raise InterleavingError(
                f"The interleaving test of {unfinished.candidate} is {unfinished.status}: one "
                "test at a time, so stop it or let it finish first."
            )
        candidate = EmbeddingSpace.objects.select_for_update().get(pk=candidate.pk)
        if candidate.status != EmbeddingSpace.Status.CANDIDATE:
            raise InterleavingError(
                f"{candidate} is {candidate.status}: only a candidate space can be tested "
                "against the active one."
            )
        now = timezone.now()
        status = InterleavingTest.Status.RUNNING if prepared else InterleavingTest.Status.PREPARING
        test = InterleavingTest.objects.create(
            candidate=candidate,
            control=space_active(),
            status=status,
            created=now,
            started=now if prepared else None,
        )
        if not prepared:
            queue_long_task(interleaving_test_prepare_task, test.pk)
    logger.info("interleaving test %s: %s", test.pk, test)
    return test


def interleaving_on_candidate_held(sender, *, space: EmbeddingSpace, **kwargs) -> bool:
    """Receiver of embeddings.signals.candidate_held: test the held candidate, if none is
    tested now (True when the test started)."""
    try:
        interleaving_test_start(candidate=space, prepared=True)
    except InterleavingError as exc:
        logger.warning("candidate %s held, no interleaving test: %s", space, exc)
        return False
    return True
