"""Label values with a bounded set of values: a label never carries ids, arguments or free text."""

from __future__ import annotations

import re
import socket
from functools import lru_cache

from apps.main.queues import QUEUES

#: Task name of a message whose task no worker knows (a typo, a stale producer, an attack).
UNREGISTERED = "unregistered"
#: Queue name outside ``QUEUES`` (only a hand-made publish can produce one).
OTHER_QUEUE = "other"
UNKNOWN = "unknown"

_hostname: str | None = None


def host_label(nodename: str) -> str:
    """The ``hostname`` label of a worker node name (``pool@host``): like celery-exporter, the host part."""
    return nodename.rpartition("@")[2] or nodename


def set_hostname(nodename: str) -> None:
    """Adopt the worker's node name: this process labels its series with ``host_label(nodename)``."""
    global _hostname
    _hostname = host_label(nodename)


def hostname() -> str:
    return _hostname or _default_hostname()


@lru_cache(maxsize=1)
def _default_hostname() -> str:
    return socket.gethostname()


def queue_label(queue: object) -> str:
    if not queue:
        return UNKNOWN
    name = str(queue)
    return name if name in QUEUES else OTHER_QUEUE


def task_label(name: object) -> str:
    """A registered task's name, else ``unregistered``: names in messages are not trusted."""
    if not name:
        return UNKNOWN
    name = str(name)
    return name if name in _registered_tasks() else UNREGISTERED


def _registered_tasks() -> frozenset[str]:
    from celery import current_app

    return _registered_snapshot(len(current_app.tasks))


@lru_cache(maxsize=4)
def _registered_snapshot(count: int) -> frozenset[str]:
    # Keyed on the registry's size so a task registered later (autodiscovery) is picked up.
    from celery import current_app

    return frozenset(current_app.tasks.keys())


_EXCEPTION_NAME = re.compile(r"^([A-Za-z_][A-Za-z0-9_]{0,99})\b")


def exception_label(exc: object) -> str:
    """Class name of the exception, as celery-exporter's ``exception`` label: code, not data."""
    if isinstance(exc, BaseException):
        return type(exc).__name__
    match = _EXCEPTION_NAME.match(str(exc or ""))
    return match.group(1) if match else UNKNOWN


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status < 600 else UNKNOWN


HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str | None) -> str:
    method = (method or "").upper()
    return method if method in HTTP_METHODS else "other"
