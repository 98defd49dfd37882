"""Worker-side hooks: a liveness heartbeat, and a consumer that opens claim-checked messages, dead-letters what it
cannot run and gives back, right after a reconnect, the messages a broker connection loss left orphaned."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from celery import bootsteps
from celery.worker.consumer import Consumer
from django.conf import settings

from apps.main import payload_claims

logger = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_SECONDS = 10.0
#: Longest a task event waits in the worker before it is published (batched with the others).
EVENTS_FLUSH_SECONDS = 0.1
#: Events per batch at most (Celery's default is 24: a flush every 8 tasks under load).
EVENTS_BUFFER_LIMIT = 200


def heartbeat_path() -> Path:
    return Path(settings.DATA_DIR) / "worker-heartbeat"


class LivenessHeartbeat(bootsteps.StartStopStep):
    """Touches a file from the consumer's event loop; ``manage.py worker_liveness`` checks its age.

    A liveness probe reading a file costs nothing, unlike ``celery inspect ping`` which sends a
    broadcast through the broker from every pod every few seconds. The file stops being touched
    when the consumer's loop hangs, which is what a liveness probe must catch.
    """

    requires = ("celery.worker.consumer.connection:Connection",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        self.timer_ref = None
        super().__init__(parent, **kwargs)

    def start(self, parent: Any) -> None:
        self._touch()
        self.timer_ref = parent.timer.call_repeatedly(HEARTBEAT_INTERVAL_SECONDS, self._touch)

    def stop(self, parent: Any) -> None:
        if self.timer_ref is not None:
            self.timer_ref.cancel()
            self.timer_ref = None

    def _touch(self) -> None:
        path = heartbeat_path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        except OSError as exc:
            logger.warning("cannot touch liveness heartbeat %s: %s", path, exc)


class RestoreOrphanedMessages(bootsteps.StartStopStep):
    """After a reconnect, put the messages this worker held at the connection loss back on their queues.

    A lost connection leaves every message the worker had reserved, scheduled (countdown/ETA) or was
    running in Redis' ``unacked`` hash: their acks can no longer be sent on the dead channel, Celery
    drops them from memory (and cancels the running ones, marking them RETRY). Kombu would restore them
    only after the visibility timeout. The consumer records their delivery tags when the connection
    breaks; this step, started once the new connection is up, restores exactly those — at once.
    A task that had finished but could not be acknowledged runs again: our tasks are idempotent.
    """

    requires = ("celery.worker.consumer.connection:Connection",)

    def start(self, parent: Any) -> None:
        tags: list[str] = getattr(parent, "orphaned_delivery_tags", [])
        if not tags or parent.connection is None:
            return
        channel = parent.connection.default_channel
        qos = getattr(channel, "qos", None)
        if not hasattr(qos, "restore_by_tag"):  # not the Redis transport: its broker redelivers by itself
            tags.clear()
            return
        restored = 0
        while tags:
            # restore_by_tag is a no-op for a tag that is no longer unacked (acked, or restored already).
            qos.restore_by_tag(tags[-1], leftmost=True)
            tags.pop()
            restored += 1
        logger.warning("restored %d message(s) held when the broker connection was lost", restored)


class DeadLetteringConsumer(Consumer):
    """Celery's consumer, but a message it cannot run goes to the dead-letter store, not to /dev/null,
    the messages it held when the broker connection broke are restored after the reconnect, and a claim-checked
    message is opened (apps.main.payload_claims) before anything looks at it."""

    orphaned_delivery_tags: list[str]
    _events_flush_due = False

    def on_send_event_buffered(self) -> None:
        # Celery flushes buffered task events at the next loop tick: under load that is one PUBLISH
        # (and one JSON body) per task or two. Flushing at most every EVENTS_FLUSH_SECONDS batches them
        # (Flower sees an event at most that much later; the dispatcher still flushes a full buffer).
        if self.hub is None:
            return super().on_send_event_buffered()
        if self.event_dispatcher is not None:  # made anew at each (re)connect: set it on the current one
            self.event_dispatcher.buffer_limit = EVENTS_BUFFER_LIMIT
        if not self._events_flush_due:
            self._events_flush_due = True
            self.hub.call_later(EVENTS_FLUSH_SECONDS, self._flush_batched_events)
        return None

    def _flush_batched_events(self) -> None:
        self._events_flush_due = False
        self._flush_events()

    def on_connection_error_after_connected(self, exc: Exception) -> None:
        from celery.worker.state import active_requests, reserved_requests, scheduled_requests

        held = [*active_requests, *reserved_requests, *scheduled_requests]
        tags = {str(r.message.delivery_tag) for r in held if not r.acknowledged and r.message is not None}
        self.orphaned_delivery_tags = sorted({*getattr(self, "orphaned_delivery_tags", []), *tags})
        # A flush timer armed before the loss may not survive the consumer's restart: arm it anew then.
        self._events_flush_due = False
        # Celery closes the broken connection next; kombu's channel close then tries to restore the
        # unacked messages over it and, when the transport's client is already gone, raises an
        # AttributeError that stops the worker ("Unrecoverable error", seen in the fault suite). Over a
        # dead connection that restore cannot work anyway: RestoreOrphanedMessages does it after the reconnect.
        for channel in self._open_channels():
            channel.do_restore = False
        super().on_connection_error_after_connected(exc)

    def _open_channels(self) -> list[Any]:
        connection = self.connection
        if connection is None:
            return []
        channels = list(getattr(getattr(connection, "transport", None), "channels", None) or [])
        default = getattr(connection, "_default_channel", None)
        return [*channels, default] if default is not None and default not in channels else channels

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Callable[[Any], Any]:
        handle = super().create_task_handler(*args, **kwargs)

        def on_task_received(message: Any) -> Any:
            return self._open_claim(message, handle, first_failure=None)

        return on_task_received

    def _open_claim(self, message: Any, handle: Callable[[Any], Any], *, first_failure: float | None) -> Any:
        """Hand ``message`` on with its claimed body in place (any other message as it is). A claim that cannot be
        honoured dead-letters the message; while the database does not answer, the message waits (unacknowledged,
        it is redelivered should this worker die) and the fetch is tried again, for FETCH_PATIENCE_SECONDS."""
        try:
            payload_claims.open_message(message)
        except payload_claims.ClaimUnavailable as exc:
            first_failure = time.monotonic() if first_failure is None else first_failure
            waited = time.monotonic() - first_failure
            # The timer runs its callbacks in the event loop; without one (a worker on a synchronous transport) the
            # message would be handled from the timer's thread: dead-lettered at once instead.
            if waited >= payload_claims.FETCH_PATIENCE_SECONDS or self.hub is None:
                return self.on_decode_error(message, payload_claims.ClaimError(
                    f"{exc}; gave up after {waited:.0f} s — the stored body is kept: requeue the dead letter"))
            logger.warning("%s; trying again in %.0f s", exc, payload_claims.FETCH_RETRY_SECONDS)
            self.timer.call_after(payload_claims.FETCH_RETRY_SECONDS, self._open_claim, (message, handle),
                                  {"first_failure": first_failure})
            return None
        except payload_claims.ClaimError as exc:
            return self.on_decode_error(message, exc)
        return handle(message)

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        self._poison(message, exc, body=message.body)
        super().on_decode_error(message, exc)

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        self._poison(message, exc, body=body)
        super().on_unknown_task(body, message, exc)

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        self._poison(message, exc, body=body)
        super().on_invalid_task(body, message, exc)

    def on_unknown_message(self, body: Any, message: Any) -> None:
        self._poison(message, ValueError("message is not a Celery task"), body=body)
        super().on_unknown_message(body, message)

    def _poison(self, message: Any, exc: Exception, *, body: Any) -> None:
        # Runs in the worker's main process, inside its event loop: it must never raise.
        try:
            self._record_poison(message, exc, body=body)
        except Exception:
            logger.exception("could not dead-letter a message the worker refused: %s", exc)

    def _record_poison(self, message: Any, exc: Exception, *, body: Any) -> None:
        from apps.main import deadletter
        from apps.main.delivery import PoisonMessage

        headers = getattr(message, "headers", None) or {}
        delivery = getattr(message, "delivery_info", None) or {}
        args: Any = []
        kwargs: Any = {}
        if body is None:  # protocol 2 hands the message over undecoded
            try:
                body = message.decode()
            except Exception:
                body = None
        if isinstance(body, (list, tuple)) and len(body) >= 2:
            args, kwargs = body[0], body[1]
        # The message as it came (repr of a decoded body could itself overflow on deep nesting); of a claim-checked
        # one its reference: the claim, kept for the letter, holds the body.
        claim = payload_claims.claim_of(message)
        raw = payload_claims.reference(claim) if claim else getattr(message, "body", None)
        raw = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        task_id = str(headers.get("id") or getattr(message, "delivery_tag", "") or "unknown")
        poison = isinstance(exc, PoisonMessage)
        deadletter.record(
            task_id=task_id,
            task_name=str(headers.get("task") or "unknown"),
            args=args,
            kwargs=kwargs,
            queue=str(delivery.get("routing_key") or ""),
            # "poison": it crashed its workers or cannot reach the pool; "poison_message": undecodable.
            reason="poison" if poison else "poison_message",
            exception=f"{type(exc).__name__}: {exc}",
            raw_body=raw[:100_000],
            attempts=getattr(exc, "deliveries", 1),
            payload_claim=claim,
        )
        if poison and headers.get("id"):
            # A client polling the result must see the task end, not STARTED or PENDING for ever.
            self.app.backend.mark_as_failure(task_id, exc)
