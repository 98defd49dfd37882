"""Guards on a task message before the worker hands it to its pool: no message can stop a worker.

Two kinds of message would otherwise take a worker down again and again, because ``acks_late`` and
``reject_on_worker_lost`` bring them back after every crash:

* arguments nested so deep that the main process overflows the stack pickling them for the pool
  (a ``RecursionError`` there is "Unrecoverable" and stops the worker; the message is restored and
  the next start dies the same way) — refused on receipt, they never reach pickle;
* a message whose execution kills its pool process or the worker itself (OOM kill, ``os._exit``,
  a segfault in a C extension) — every redelivery is counted in the cache (Redis in production,
  so the count survives the worker and moves with the message to other pods) and the delivery after
  ``TASK_MAX_DELIVERIES`` is acknowledged and dead-lettered with reason ``poison`` instead of run.

Only redelivered messages are counted: a message's first delivery costs no round trip.

A task with encrypted payloads (apps.main.payload_encryption) is run only from an encrypted message: a plain
one (forged in Redis, or sent by a producer without the encryption settings) is refused and dead-lettered.
Its task events carry no result nor exception text (either may quote the arguments).

A claim-checked message (apps.main.payload_claims) reaches this request already opened by the consumer: body,
content type and encoding are the published ones, and the claim's id is in the ``payload_claim`` header. The
claim is deleted once the message is acknowledged or rejected without requeue, never before.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery.exceptions import InvalidTaskError
from celery.worker.request import Request
from django.conf import settings

from apps.main import payload_claims
from apps.main.payload_encryption import CONTENT_TYPE, HIDDEN
from apps.main.queues import is_encrypted
from apps.main.redis_keys import REDELIVERIES_KEY

logger = logging.getLogger(__name__)

#: Fields of task events that carry a task's result or exception: hidden for an encrypted task.
_EVENT_VALUES = frozenset({"result", "exception", "traceback"})


class PoisonMessage(InvalidTaskError):
    """A task message the worker refuses to run; the consumer dead-letters it with reason ``poison``."""

    def __init__(self, message: str, *, deliveries: int = 1) -> None:
        super().__init__(message)
        self.deliveries = deliveries


class UnencryptedPayload(InvalidTaskError):
    """A plain message for a task that takes only encrypted ones; dead-lettered with reason ``poison_message``."""


_CONTAINERS = (dict, list, tuple)


def nesting_depth_exceeds(value: Any, limit: int) -> bool:
    """True when containers nest deeper than ``limit``; iterative, so no depth can overflow it.

    Only containers are stacked: for a large body (thousands of records) the walk runs in the worker's main
    process for every message, and stacking each scalar too made it cost twice the body's JSON decoding."""
    if not isinstance(value, _CONTAINERS):
        return False
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth >= limit:
            return True
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, _CONTAINERS):
                stack.append((child, depth + 1))
    return False


def delivery_key(task_id: str, retries: int) -> str:
    # A retry is a new message with the same id: each attempt has its own count.
    return REDELIVERIES_KEY.format(task_id=task_id, retries=retries)


def count_redelivery(task_id: str, retries: int) -> int:
    """Add one to the message's redelivery count and return it (1 on the first redelivery)."""
    from django.core.cache import cache

    key = delivery_key(task_id, retries)
    # Longer than any wait between two deliveries (visibility timeout) times the allowed count.
    ttl = max(24 * 3600, settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("visibility_timeout", 0) * 4)
    try:
        cache.add(key, 0, timeout=ttl)
        return cache.incr(key)
    except redis.exceptions.OutOfMemoryError as exc:
        # A full Redis (maxmemory) refuses the count. Stopping the worker ("Unrecoverable error") would stop
        # the one draining it: the message runs uncounted, and its next redelivery is counted again.
        logger.warning("redelivery of task %s not counted, Redis is full: %s", task_id, exc)
        return 0


class GuardedRequest(Request):
    """Celery's request, refusing on receipt what must not reach the pool (see the module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # An ack queued before a broker connection loss runs on the dead channel, whose transport
        # connection kombu has set to None: AttributeError, not a connection error, and the worker would
        # stop ("Unrecoverable error", seen in the fault suite). Logged like a failed ack instead; the
        # message is restored after the reconnect (worker_steps.RestoreOrphanedMessages).
        self._connection_errors = (*self._connection_errors, AttributeError)
        if is_encrypted(self.task.name) and self._content_type != CONTENT_TYPE:
            raise UnencryptedPayload(
                f"{self.task.name} takes only encrypted messages ({CONTENT_TYPE}), this one is {self._content_type}: "
                "forged, or sent by a producer without the encryption settings — not run"
            )
        limit = settings.TASK_MAX_ARGUMENT_DEPTH
        if nesting_depth_exceeds([self._args, self._kwargs], limit + 1):
            raise PoisonMessage(f"task arguments are nested deeper than {limit} levels (TASK_MAX_ARGUMENT_DEPTH)")
        if self._delivery_info.get("redelivered"):
            redeliveries = count_redelivery(self.id, int(self._request_dict.get("retries") or 0))
            if redeliveries >= settings.TASK_MAX_DELIVERIES:
                raise PoisonMessage(
                    f"delivered {redeliveries + 1} times; the earlier deliveries ended without an "
                    f"acknowledgement (their worker or pool process died) — not run again "
                    f"(TASK_MAX_DELIVERIES={settings.TASK_MAX_DELIVERIES})",
                    deliveries=redeliveries + 1,
                )

    @property
    def payload_claim(self) -> str | None:
        """The id of the payload claim this message's body came from, or None."""
        return self._request_dict.get(payload_claims.HEADER)

    def acknowledge(self) -> None:
        if self.acknowledged:
            return
        super().acknowledge()
        self._release_claim()

    def reject(self, requeue: bool = False) -> None:
        if self.acknowledged:
            return
        super().reject(requeue)
        if not requeue:  # requeued: the message comes back, and needs its body
            self._release_claim()

    def on_timeout(self, soft: bool, timeout: float) -> None:
        # On a hard time limit the task's on_failure runs here, in the main process: it learns the claim from this.
        with payload_claims.in_hand(self.payload_claim):
            super().on_timeout(soft, timeout)

    def _release_claim(self) -> None:
        if claim := self.payload_claim:
            payload_claims.release_after_ack(self._message, claim)

    def send_event(self, type: str, **fields: Any) -> None:
        if is_encrypted(self.task.name):
            fields = {key: HIDDEN if key in _EVENT_VALUES and value is not None else value
                      for key, value in fields.items()}
        super().send_event(type, **fields)
