"""Per-token rate limit of the task API: at most N requests per fixed window (API_RATE_LIMIT_WINDOW_SECONDS).

The count lives in Redis, shared by every web process and pod: one INCR per request in a Lua script that
also sets the window's expiry, so a counter can never outlive its window (INCR then EXPIRE as two calls
could leave an immortal key behind a crash in between, and with it a token refused forever). Without
Redis (the development fallback on SQLite) the Django cache counts instead, per process.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from functools import cache

import redis
from django.conf import settings
from django.core.cache import cache as django_cache

from apps.main import redis_connection
from apps.main.redis_keys import API_RATE_LIMIT_KEY

logger = logging.getLogger(__name__)

#: KEYS[1] the window's counter; ARGV[1] its lifetime in ms. Returns the count after this request.
_COUNT_IN_WINDOW = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return count
"""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    #: Whole seconds until the window ends (the ``Retry-After`` of a refusal); 0 when allowed.
    retry_after: int


@cache
def _script(url: str) -> redis.commands.core.Script:
    client = redis_connection.client(url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=30)
    return client.register_script(_COUNT_IN_WINDOW)


def _count(key: str, window: float) -> int:
    if settings.REDIS_URL:
        try:
            return int(_script(settings.REDIS_URL)(keys=[key], args=[int(window * 1000) + 1000]))
        except redis.exceptions.OutOfMemoryError:
            # Redis at maxmemory (the broker's, in the chart): not counted. The publish that follows is refused
            # with "the task broker is full", the reason the caller needs; a status read goes on.
            logger.warning("API rate limit not counted, Redis is full")
            return 0
    django_cache.add(key, 0, timeout=int(window) + 1)
    try:
        return django_cache.incr(key)
    except ValueError:  # expired between add and incr
        django_cache.add(key, 1, timeout=int(window) + 1)
        return 1


def hit(subject: str, limit: int, *, window: float | None = None, now: float | None = None) -> Decision:
    """Count one request of ``subject`` (a token id) against ``limit`` per window."""
    window = float(window or settings.API_RATE_LIMIT_WINDOW_SECONDS)
    now = time.time() if now is None else now
    index = math.floor(now / window)
    count = _count(API_RATE_LIMIT_KEY.format(token=subject, window=index), window)
    if count <= limit:
        return Decision(True, limit, 0)
    return Decision(False, limit, max(1, math.ceil((index + 1) * window - now)))
