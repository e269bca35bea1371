"""Housekeeping that beat schedules: expired sessions are deleted daily."""

from datetime import timedelta

import pytest
from django.conf import settings
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.utils import timezone

from shop_search.celery import app
from shop_search.tasks import sessions_clear_expired

pytestmark = pytest.mark.django_db


def test_expired_sessions_are_cleared_and_live_ones_kept():
    live, expired = SessionStore(), SessionStore()
    live.create()
    expired.create()
    Session.objects.filter(pk=expired.session_key).update(
        expire_date=timezone.now() - timedelta(seconds=1)
    )
    sessions_clear_expired.delay()  # eager here; on the default queue in production
    assert list(Session.objects.values_list("pk", flat=True)) == [live.session_key]


def test_beat_runs_the_session_cleanup_once_a_day():
    entry = settings.CELERY_BEAT_SCHEDULE["clear-expired-sessions"]
    assert entry["task"] in app.tasks  # a name beat can send, of a task workers know
    assert settings.CELERY_TASK_ROUTES[entry["task"]] == {"queue": "default"}
    schedule = entry["schedule"]
    assert len(schedule.hour) == len(schedule.minute) == 1
    assert len(schedule.day_of_week) == 7
    assert len(schedule.day_of_month) == 31
