"""Worker-side hooks: a liveness heartbeat and a consumer that dead-letters undecodable messages."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from celery import bootsteps
from celery.worker.consumer import Consumer
from django.conf import settings

logger = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_SECONDS = 10.0


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


class DeadLetteringConsumer(Consumer):
    """Celery's consumer, but a message it cannot run goes to the dead-letter store, not to /dev/null."""

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
        from apps.main import deadletter

        headers = getattr(message, "headers", None) or {}
        delivery = getattr(message, "delivery_info", None) or {}
        args: Any = []
        kwargs: Any = {}
        if body is None:  # protocol 2 hands the message over undecoded
            try:
                body = message.decode()
            except Exception:
                body = getattr(message, "body", None)
        if isinstance(body, (list, tuple)) and len(body) >= 2:
            args, kwargs = body[0], body[1]
        raw = body if isinstance(body, str) else repr(body)
        deadletter.record(
            task_id=str(headers.get("id") or getattr(message, "delivery_tag", "") or "unknown"),
            task_name=str(headers.get("task") or "unknown"),
            args=args,
            kwargs=kwargs,
            queue=str(delivery.get("routing_key") or ""),
            reason="poison_message",
            exception=f"{type(exc).__name__}: {exc}",
            raw_body=raw[:100_000],
            attempts=1,
        )
