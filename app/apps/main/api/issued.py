"""Which task ids this system issued: the status route answers 404 for any other id.

The result backend knows a task only once a worker started it; until then every id, also one nobody
ever sent, reads as PENDING. So every publish — by the API, beat, a retry, the dead-letter requeue —
leaves a marker in the cache that outlives the task's result.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from celery.signals import before_task_publish
from django.conf import settings
from django.core.cache import cache

logger = logging.getLogger(__name__)

#: How long a marker outlives CELERY_RESULT_EXPIRES: a task may wait that long in its queue before a
#: worker starts it (and its result row appears); past both, the id reads as unknown or expired.
QUEUED_MARGIN_SECONDS = 3600
#: When results never expire, markers still must: the result row answers once the task started.
NO_EXPIRY_TTL_SECONDS = 7 * 24 * 3600


def marker_key(task_id: str) -> str:
    return f"task-issued:{task_id}"


def marker_ttl() -> int:
    expires: Any = settings.CELERY_RESULT_EXPIRES
    if isinstance(expires, timedelta):
        expires = expires.total_seconds()
    if not expires:
        return NO_EXPIRY_TTL_SECONDS
    return int(expires) + QUEUED_MARGIN_SECONDS


def was_issued(task_id: str) -> bool:
    return cache.get(marker_key(task_id)) is not None


@before_task_publish.connect(dispatch_uid="apps.main.api.issued.remember_issued_task")
def remember_issued_task(headers: dict[str, Any] | None = None, body: Any = None, **_: Any) -> None:
    # Message protocol 2 carries the id in the headers, protocol 1 in the body.
    task_id = (headers or {}).get("id") or (body.get("id") if isinstance(body, dict) else None)
    if not task_id:
        return
    try:
        cache.set(marker_key(task_id), 1, timeout=marker_ttl())
    except Exception as exc:  # the publish goes on: once a worker starts the task, its result row answers
        logger.warning("could not record task %s as issued: %s: %s", task_id, type(exc).__name__, exc)
