"""Throttling of anonymous clients, per IP, counted in Django's cache: the API's (DRF) and
the shop pages' alike, with one notion of who the client is."""

import logging
import math

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


def client_ip(request) -> str:
    """The client's address: REMOTE_ADDR, or with NUM_PROXIES proxies in front, the address
    the outermost of them saw (X-Forwarded-For read from the right, never the client's own
    entries). Throttling and login lockouts (django-axes) count by it."""
    return throttling.BaseThrottle().get_ident(request)


def anonymous_throttle_wait(request) -> int | None:
    """For a Django view: None if the request may go on, else the seconds to wait.

    The API's throttle and counter: a client's page searches and API calls share one
    budget, so neither is a way around the other. Signed-in users are not throttled.
    """
    throttle = AnonRateThrottle()
    if throttle.allow_request(request, None):
        return None
    return max(1, math.ceil(throttle.wait() or 1))
