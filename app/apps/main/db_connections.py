"""Database connections in worker processes: kept across tasks, checked before each one.

Celery's Django fixup closes every connection before and after each task unless ``DB_REUSE_MAX`` is
set, so a pool child opened a new PostgreSQL connection for every task (TCP, SCRAM login: about 4 ms
of client CPU, half of a short task's time) and ``CONN_MAX_AGE`` had no effect. Settings now set
``CELERY_DB_REUSE_MAX`` so high that the fixup never closes them, and this hook does for every task
what Django does for every web request (``close_old_connections``):

* a connection that saw an error, was left outside autocommit, or is older than ``CONN_MAX_AGE`` is
  closed, so the task opens a fresh one;
* the others are health-checked on their first use in the task (``CONN_HEALTH_CHECKS``: one
  ``SELECT 1``), so a connection the server dropped meanwhile (restart, failover, idle timeout) is
  replaced before the task uses it, never failing the task.
"""

from __future__ import annotations

from typing import Any

from celery import signals
from django.db import close_old_connections


@signals.task_prerun.connect(dispatch_uid="apps.main.db_connections.recycle")
def recycle_connections(task: Any = None, **_: Any) -> None:
    # An eager task runs inside its caller (a web request, a test), maybe inside a transaction: the
    # caller's connection is not ours to close.
    request = getattr(task, "request", None)
    if request is not None and getattr(request, "is_eager", False):
        return
    close_old_connections()
