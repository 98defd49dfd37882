"""The task base class: retries transient errors with backoff, dead-letters what fails for good."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from celery.exceptions import Retry, SoftTimeLimitExceeded, TimeLimitExceeded

from apps.main import deadletter, payload_claims, payload_encryption
from apps.main.queues import is_encrypted, queue_for
from apps.main.retry import PermanentError, RetryPolicy, is_transient, policy_for

logger = logging.getLogger(__name__)


class ReliableTask(Task):
    """Base of every task in ``apps.main.tasks``.

    ``run`` is wrapped so that a transient error (network, database, broker) is retried with
    exponential backoff and jitter up to the task's ``max_retries``; any other error fails at once.
    ``on_failure`` then stores the task in the dead-letter store.
    """

    #: Set False for tasks whose failures are expected to repeat and are watched elsewhere.
    dead_letter = True
    #: The worker refuses over-deep arguments and messages that keep killing it (apps.main.delivery).
    Request = "apps.main.delivery:GuardedRequest"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # An encrypted task's own serializer: apply_async, delay, retries and beat pass the task's options,
        # which win over its route's (apps.main.queues.TASK_ROUTES carries the rest: the hidden argsrepr).
        if is_encrypted(getattr(cls, "name", None)):
            cls.serializer = payload_encryption.SERIALIZER

    @property
    def short_name(self) -> str:
        return self.name.rsplit(".", 1)[-1]

    @property
    def retry_policy(self) -> RetryPolicy:
        return policy_for(self.short_name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except Retry:
            raise
        except Exception as exc:
            if not is_transient(exc):
                raise
            policy = self.retry_policy
            retries_done = self.request.retries or 0
            if retries_done >= policy.max_retries:
                raise
            countdown = policy.delay(retries_done)
            logger.warning(
                "transient error, retry %d/%d in %.1fs: %s: %s",
                retries_done + 1, policy.max_retries, countdown, type(exc).__name__, exc,
            )
            raise self.retry(exc=exc, countdown=countdown, max_retries=policy.max_retries) from exc

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        if not self.dead_letter:
            return
        # On a hard time limit this runs in the worker's main process, where self.request is not
        # this task's: fall back to the route for the queue and an unknown attempt count.
        request = self.request if self.request.id == task_id else None
        delivery = (request.delivery_info or {}) if request else {}
        retries = (request.retries or 0) if request else 0
        # A claim-checked body is kept with the letter (the request's header; in the main process, its request's).
        claim = request.get(payload_claims.HEADER) if request else payload_claims.claim_in_hand()
        if isinstance(exc, (TimeLimitExceeded, SoftTimeLimitExceeded)):
            reason = "time_limit"
        elif is_transient(exc) and not isinstance(exc, PermanentError):
            reason = "retries_exhausted"
        else:
            reason = "permanent_error"
        exception = f"{type(exc).__name__}: {exc}"
        traceback = str(einfo.traceback) if einfo is not None else ""
        if is_encrypted(self.name):
            # Its message may quote the arguments (a webhook URL, an address): the letter shows the type, the
            # traceback (which ends with the message) is sealed — payload_encryption.reveal() opens it.
            traceback = payload_encryption.dumps(traceback or exception)
            exception = f"{type(exc).__name__}: {payload_encryption.HIDDEN}"
        deadletter.record(
            task_id=task_id,
            task_name=self.name,
            args=args,
            kwargs=kwargs,
            queue=delivery.get("routing_key") or queue_for(self.short_name),
            reason=reason,
            exception=exception,
            traceback=traceback,
            attempts=retries + 1,
            payload_claim=claim,
        )
