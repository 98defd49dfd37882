"""Django's Redis cache with its client from apps.main.redis_connection, so that a ``sentinel://`` REDIS_URL works.

Django's RedisCache builds its pools with ``ConnectionPool.from_url``, which knows no sentinel, and splits LOCATION
at ``;`` and ``,`` into a primary and read replicas: a sentinel URL's parts would become "servers". Here LOCATION is
one URL, served by one client from the helper — for sentinel:// on a SentinelConnectionPool, which follows a
failover. One client for every call (Django builds one per call): redis-py's client is thread-safe, each command
checks a connection out of the pool, and the pool starts afresh in a forked process.
"""

from __future__ import annotations

from typing import Any

import redis
from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django.core.cache.backends.redis import RedisCacheClient

from apps.main import redis_connection


class RedisClient(RedisCacheClient):
    _shared: redis.Redis | None = None

    def get_client(self, key: Any = None, *, write: bool = False) -> redis.Redis:
        if self._shared is None:
            self._shared = redis_connection.client(self._servers[0], **self._pool_options)
        return self._shared


class RedisCache(DjangoRedisCache):
    def __init__(self, server: str, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._servers = [server]
        self._class = RedisClient
