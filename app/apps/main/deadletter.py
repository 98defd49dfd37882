"""The dead-letter store: tasks that failed for good, kept with everything needed to run them again."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from django.dispatch import Signal
from django.utils import timezone

from apps.main.models import DeadLetter

logger = logging.getLogger(__name__)

#: Sent after a dead letter is stored (kwargs: letter); metrics count it.
dead_lettered = Signal()


def record(
    *,
    task_id: str,
    task_name: str,
    args: Any,
    kwargs: Any,
    queue: str,
    reason: str,
    exception: str,
    traceback: str = "",
    attempts: int = 1,
    raw_body: str = "",
    first_attempt_at: datetime | None = None,
) -> DeadLetter | None:
    """Store a dead letter; on a database failure log the whole record so that nothing is lost."""
    fields = {
        "task_id": task_id,
        "task_name": task_name,
        "args": _jsonable(args, list),
        "kwargs": _jsonable(kwargs, dict),
        "queue": queue,
        "reason": reason,
        "exception": exception,
        "traceback": traceback,
        "attempts": attempts,
        "raw_body": raw_body,
        "first_attempt_at": first_attempt_at,
        "failed_at": timezone.now(),
    }
    try:
        letter = DeadLetter.objects.create(**fields)
    except Exception:
        logger.exception("dead letter could not be stored; its content follows", extra={"dead_letter": fields})
        return None
    logger.error(
        "task dead-lettered: %s[%s] after %d attempt(s): %s",
        task_name, task_id, attempts, exception,
        extra={"dead_letter_id": letter.pk, "reason": reason},
    )
    dead_lettered.send(sender=DeadLetter, letter=letter)
    return letter


def requeue(letter: DeadLetter) -> str:
    """Send the task again, with its arguments, to the queue it failed on; returns the new task id."""
    from portfolio_site.celery import app

    if letter.status != DeadLetter.Status.PENDING:
        raise ValueError(f"dead letter {letter.pk} is {letter.status}, only pending ones can be requeued")
    if letter.task_name not in app.tasks:
        raise ValueError(f"dead letter {letter.pk}: task {letter.task_name!r} is not registered")
    result = app.send_task(letter.task_name, args=letter.args, kwargs=letter.kwargs, queue=letter.queue)
    letter.status = DeadLetter.Status.REQUEUED
    letter.requeued_task_id = result.id
    letter.resolved_at = timezone.now()
    letter.save(update_fields=["status", "requeued_task_id", "resolved_at"])
    return result.id


def discard(letter: DeadLetter) -> None:
    letter.status = DeadLetter.Status.DISCARDED
    letter.resolved_at = timezone.now()
    letter.save(update_fields=["status", "resolved_at"])


def _jsonable(value: Any, kind: type) -> Any:
    """Arguments as JSON can store them (they came as JSON, but a poison message may carry anything)."""
    import json

    if value is None:
        return kind()
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return list(value) if kind is list and isinstance(value, tuple) else value
