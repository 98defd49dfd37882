"""Structured logging: one JSON object per line, with the running task's id, name, queue and attempt; no
secret in any record (``mask_secrets_in_records``)."""

from __future__ import annotations

import json
import logging
import logging.handlers
from datetime import UTC, datetime
from typing import Any

# Attributes every LogRecord has; anything else was passed through ``extra=`` and is emitted.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def task_context() -> dict[str, Any]:
    """Fields of the task the current process runs, if any."""
    from celery import current_task

    task = current_task
    if not task or not getattr(task, "request", None) or task.request.id is None:
        return {}
    request = task.request
    return {
        "task_id": request.id,
        "task_name": task.name,
        "queue": (request.delivery_info or {}).get("routing_key"),
        "attempt": (request.retries or 0) + 1,
    }


def mask_secrets_in_records() -> None:
    """Make every log record of this process mask secrets (apps.main.reporting.mask_secrets: URL passwords, secret
    query parameters, this process's keys, tokens and passwords) in its message and its exception's text.

    At the record's creation, not in a handler or formatter: every handler sees the masked record, ours and those
    we do not configure (Django's DEBUG console, Celery's, a test runner's capture). A Django 500 logs the
    request and the exception, and an exception's message can quote a URL with its password. Idempotent."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "masks_secrets", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _mask_record(record)
        return record

    factory.masks_secrets = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def _mask_record(record: logging.LogRecord) -> None:
    from apps.main.reporting import mask_secrets

    try:
        message = record.getMessage()
    except Exception:  # arguments that do not fit the format: logging reports that when the record is emitted
        return
    if (masked := mask_secrets(message)) != message:
        record.msg, record.args = masked, ()
    if record.exc_info and not record.exc_text:
        text = logging.Formatter().formatException(record.exc_info)
        if (masked := mask_secrets(text)) != text:
            record.exc_text = masked  # formatters use it instead of formatting the exception again


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        entry.update(task_context())
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)
        # Fields passed with extra= (a request, a URL) are masked here: only the message and exception at creation.
        from apps.main.reporting import mask_secrets

        return mask_secrets(json.dumps(entry, default=str))


class TaskDurationFilter(logging.Filter):
    """Passes only the task-duration lines written to ``performance.log``."""

    def filter(self, record: logging.LogRecord) -> bool:
        return hasattr(record, "duration_seconds")


class DirectoryFileHandler(logging.handlers.RotatingFileHandler):
    """A rotating file handler that creates its directory (logs/ is not in git) and its file only when
    the first record comes: a command that logs nothing leaves nothing behind."""

    def __init__(self, filename: str, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("delay", True)
        super().__init__(filename, *args, **kwargs)

    def _open(self) -> Any:
        from pathlib import Path

        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()
