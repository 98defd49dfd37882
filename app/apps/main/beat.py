"""A DatabaseScheduler that schedules only while it holds a lease in Redis.

django-celery-beat has no lock of its own: two beat processes (a rolling update, a stray
``celery beat`` started by hand) would each send every periodic task. Here each beat takes a
Redis key with a TTL (``SET NX PX``) before scheduling and renews it on every tick; a second beat
waits, logging who holds the lease, and takes over within one TTL after the holder dies.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from typing import Any

from django.conf import settings
from django_celery_beat.schedulers import DatabaseScheduler

from apps.main import redis_connection
from apps.main.redis_keys import BEAT_LAST_TICK_KEY, BEAT_LEASE_KEY

logger = logging.getLogger(__name__)


# Renew only if we still hold it; release only our own lease.
_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
# Take it if free, or if it still names us: a lease that outlived our lost connection (a failover's new primary or a
# restarted Redis kept it) is ours at once, not after waiting out its TTL.
_ACQUIRE = """
local holder = redis.call('get', KEYS[1])
if holder == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
if holder then return 0 end
return redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2]) and 1 or 0
"""
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


def lease_redis_url() -> str | None:
    """The Redis that holds the lease: the broker when it is Redis (directly or through sentinels)."""
    return redis_connection.broker_redis_url(settings.CELERY_BROKER_URL)


class BeatLease:
    def __init__(self, client: Any, ttl_seconds: float, holder: str | None = None) -> None:
        self.client = client
        self.ttl_ms = int(ttl_seconds * 1000)
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.held = False

    def acquire_or_renew(self) -> bool:
        if self.held:
            self.held = bool(self.client.eval(_RENEW, 1, BEAT_LEASE_KEY, self.holder, self.ttl_ms))
            if not self.held:
                logger.error("beat lost its lease (Redis unreachable for a TTL or key removed); pausing")
        else:
            self.held = bool(self.client.eval(_ACQUIRE, 1, BEAT_LEASE_KEY, self.holder, self.ttl_ms))
        return self.held

    def current_holder(self) -> str | None:
        value = self.client.get(BEAT_LEASE_KEY)
        return value.decode() if isinstance(value, bytes) else value

    def release(self) -> None:
        if self.held:
            self.client.eval(_RELEASE, 1, BEAT_LEASE_KEY, self.holder)
            self.held = False


class LeasedDatabaseScheduler(DatabaseScheduler):
    #: Seconds between lease attempts while another beat holds it.
    standby_interval = 2.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._lease: BeatLease | None = None
        self._waiting_logged_for: str | None = None
        url = lease_redis_url()
        if url is None:
            logger.warning("broker is not Redis: beat runs without a lease; never start two beats")
        else:
            client = redis_connection.client(url, socket_timeout=5, socket_connect_timeout=5)
            self._lease = BeatLease(client, settings.BEAT_LEASE_TTL)
        super().__init__(*args, **kwargs)
        # Renew well within the TTL even when no task is due for a long time.
        self.max_interval = min(self.max_interval, settings.BEAT_LEASE_TTL / 3)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if self._lease is not None and not self._holds_lease():
            return self.standby_interval
        if self._lease is not None:
            try:
                self._lease.client.set(BEAT_LAST_TICK_KEY, f"{time.time():.3f}")
            except Exception as exc:  # Redis lost since the renewal (a failover): the sends would fail too
                logger.warning("beat cannot reach Redis (%s); not scheduling", exc)
                return self.standby_interval
        return super().tick(*args, **kwargs)

    def _holds_lease(self) -> bool:
        assert self._lease is not None
        was_held = self._lease.held
        try:
            held = self._lease.acquire_or_renew()
        except Exception as exc:  # Redis down: scheduling without the lease could double-send
            logger.warning("beat cannot reach Redis for its lease (%s); not scheduling", exc)
            self._lease.held = False
            return False
        if held and not was_held:
            logger.info("beat acquired the lease as %s; scheduling periodic tasks", self._lease.holder)
            self._waiting_logged_for = None
            # Another beat may have sent tasks meanwhile: re-read last_run_at from the database.
            self._initial_read = True
            self._heap = None
        elif not held:
            holder = self._lease.current_holder()
            if holder != self._waiting_logged_for:
                logger.warning(
                    "another beat holds the lease (%s); waiting to take over instead of sending "
                    "periodic tasks twice", holder,
                )
                self._waiting_logged_for = holder
        return held

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self._lease is not None:
                try:
                    self._lease.release()  # lets a successor take over at once, not after the TTL
                except Exception as exc:
                    logger.warning("beat could not release its lease: %s", exc)
