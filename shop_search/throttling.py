"""Throttling of anonymous API clients, per IP, counted in Django's cache."""

import logging

from rest_framework import throttling
from rest_framework.settings import api_settings

logger = logging.getLogger(__name__)


class AnonRateThrottle(throttling.AnonRateThrottle):
    """DRF's anonymous throttle, with two changes.

    The rate is read when a request comes, not when DRF is imported, so settings
    overrides apply. And when the cache is unreachable (Redis down) the request goes
    through: during a broker outage search must stay up, throttled or not.
    """

    def get_rate(self) -> str | None:
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    def allow_request(self, request, view) -> bool:
        from redis.exceptions import RedisError

        try:
            return super().allow_request(request, view)
        except (RedisError, OSError) as exc:
            logger.warning("throttle cache unavailable, request not throttled: %s", exc)
            return True
